"""Runs inside the import check, under the target's interpreter: `python -I -S -B import_probe.py`.

Reads a JSON task on stdin: {"layer": <python/ dir>, "extra_path": [dirs], "modules": [..],
"submodules_of": [..], "lock_python": ..}: the modules to import, then the packages whose
public submodules to try (unless the lock was made for this Python). Imports each in its own
try and writes one JSON line per event to its stdout: first
`{"python": "3.13", "machine": "x86_64"}`; `{"begin": m}` before each import (so a crash or a
timeout names the module in progress); `{"module": m, "ok": .., "seconds": .., "error": {..},
"loaded": [..]}` after it (`of`: the package when m is one of its submodules; `loaded`: the .py
files under the layer the import loaded, for the start-up probe); finally `{"done": true}`.
Errors are data (type, attributes, frames), so the caller classifies them without parsing
tracebacks. What the imported code prints goes to stderr.

Standard library only, and Python 3.10 syntax: it runs on every supported target runtime.
"""

import importlib
import json
import os
import pkgutil
import platform
import sys
import time
import traceback
from importlib.machinery import EXTENSION_SUFFIXES

#: Submodules nobody imports from a layer (and `__main__` would run a program).
NOT_IMPORTED = {"__main__", "conftest", "setup", "test", "tests", "testing"}


def _inside(path, layer):
    """The path relative to the layer's python/ dir, or None when it is elsewhere."""
    if not isinstance(path, str):
        return None
    path = os.path.abspath(path)
    return os.path.relpath(path, layer) if path.startswith(layer + os.sep) else None


def _frames(exc):
    tb, frames = exc.__traceback__, []
    while tb is not None:
        frames.append(tb)
        tb = tb.tb_next
    return frames


def describe(exc, layer, loaded_before):
    """What went wrong, as data: kind, the missing module, the file at fault (layer-relative
    when it is in the layer) and the exception's last line."""
    error = {"type": type(exc).__module__ + "." + type(exc).__qualname__,
             "last_line": traceback.format_exception_only(type(exc), exc)[-1].strip(),
             "kind": "other", "missing": None, "file": None, "line": None}
    frames = _frames(exc)
    if isinstance(exc, SyntaxError):
        error.update(kind="syntax", file=exc.filename, line=exc.lineno)
    elif isinstance(exc, ModuleNotFoundError):
        error.update(kind="missing", missing=exc.name)
    elif isinstance(exc, ImportError) and (getattr(exc, "name_from", None)
                                           or (exc.name and exc.name in loaded_before())):
        # `from y import X` where y loaded but has no X (3.12+ sets name_from; before, y is
        # in sys.modules, which a module that failed to load never is).
        error.update(kind="missing_name", missing=exc.name)
    elif (isinstance(exc, ImportError) and isinstance(exc.path, str)
          and exc.path.endswith(tuple(EXTENSION_SUFFIXES))):
        error.update(kind="shared_object", file=exc.path)
    elif isinstance(exc, OSError) and frames:
        # ctypes.CDLL(name) failing to dlopen a library the package bundles or needs.
        code = frames[-1].tb_frame.f_code
        if (os.path.basename(os.path.dirname(code.co_filename)) == "ctypes"
                and code.co_name == "__init__"):
            name = frames[-1].tb_frame.f_locals.get("name")
            error.update(kind="shared_object", file=str(name) if name is not None else None)
    for tb in reversed(frames):  # the innermost frame in the layer: whose code raised
        where = _inside(tb.tb_frame.f_code.co_filename, layer)
        if where is not None:
            error["frame"] = where
            if error["file"] is None:
                error.update(file=tb.tb_frame.f_code.co_filename, line=tb.tb_lineno)
            break
    if error["file"] is not None:
        error["file"] = _inside(error["file"], layer) or error["file"]
    return error


def main():
    task = json.loads(sys.stdin.read())
    layer = os.path.abspath(task["layer"])
    # Results go to the original stdout; anything the imports print goes to stderr instead.
    out = os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8")
    os.dup2(2, 1)
    version = "{}.{}".format(*sys.version_info[:2])
    os.environ.setdefault("AWS_EXECUTION_ENV", "AWS_Lambda_python" + version)
    # As in Lambda: the layer's lib/pythonX.Y/site-packages, then python/ itself, then what
    # the runtime provides (boto3 & co.), behind the layer so a locked copy wins.
    site = os.path.join(layer, "lib", "python" + version, "site-packages")
    sys.path[:0] = ([site] if os.path.isdir(site) else []) + [layer] + list(task["extra_path"])
    out.write(json.dumps({"python": version, "machine": platform.machine()}) + "\n")
    seen = set(sys.modules)

    def attempt(name, **extra):
        out.write(json.dumps({"begin": name}) + "\n")
        started = time.perf_counter()
        result = dict(extra, module=name, ok=True)
        # The layer's sources this import loaded (for the start-up probe): reported per
        # import, so a later crash loses none of them. A module that raised is no longer in
        # sys.modules, but its code ran: its frames count.
        result["loaded"] = loaded = []
        try:
            importlib.import_module(name)
        except BaseException as exc:  # noqa: BLE001  (SystemExit too: report it, go on)
            result.update(ok=False, error=describe(exc, layer, lambda: set(sys.modules)))
            for tb in _frames(exc):
                where = _inside(tb.tb_frame.f_code.co_filename, layer)
                if where is not None and where.endswith(".py") and where not in loaded:
                    loaded.append(where.replace(os.sep, "/"))
        result["seconds"] = round(time.perf_counter() - started, 4)
        for key, module in list(sys.modules.items()):
            if key not in seen:
                seen.add(key)
                where = _inside(getattr(module, "__file__", None), layer)
                if where is not None and where.endswith(".py"):
                    loaded.append(where.replace(os.sep, "/"))
        out.write(json.dumps(result) + "\n")

    for name in task["modules"]:
        attempt(name)
    # Then each public submodule of the packages named: a package whose top level imports
    # fine may still fail in the module consumers use (botocore 1.24: botocore.utils needs cgi).
    # Not when the lock was resolved for this very Python: then versions fit it, and the pass
    # costs as much as the check itself (measured on pandas, numpy, pyarrow: 6 s more).
    if task.get("lock_python") == version:
        task["submodules_of"] = ()
    for top in task.get("submodules_of", ()):
        package = sys.modules.get(top)
        for info in pkgutil.iter_modules(getattr(package, "__path__", None) or [], top + "."):
            leaf = info.name.rsplit(".", 1)[1]
            if not leaf.startswith("_") and leaf not in NOT_IMPORTED and info.name not in sys.modules:
                attempt(info.name, of=top)
    out.write(json.dumps({"done": True}) + "\n")
    out.flush()
    # Skip interpreter shutdown: atexit hooks and finalizers of the imported code do not run.
    os._exit(0)


if __name__ == "__main__":
    main()
