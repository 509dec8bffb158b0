"""Runs inside the import check, under the target's interpreter: `python -I -S -B import_probe.py`.

Reads a JSON task on stdin: {"layer": <python/ dir>, "extra_path": [dirs], "modules": [..],
"submodules_of": [..], "lock_python": .., "warm": <dir> or null}: the modules to import, then
the packages whose public submodules to try (unless the lock was made for this Python); with
"warm", a forked child compiles bytecode into that directory beside the imports (`Warmer`). Imports each in its own
try and writes one JSON line per event to its stdout: first
`{"python": "3.13", "machine": "x86_64"}`; `{"begin": m}` before each import (so a crash or a
timeout names the module in progress); `{"module": m, "ok": .., "seconds": .., "error": {..},
"loaded": [..]}` after it (`of`: the package when m is one of its submodules; `loaded`: the .py
files under the layer the import loaded, for the start-up probe); finally `{"done": true}`.
Errors are data (type, attributes, frames), so the caller classifies them without parsing
tracebacks. What the imported code prints goes to stderr.

Each result also says what the import depended on, for the memo of import verdicts
(importmemo.py): `touched` (layer files it loaded, opened or dlopen()ed), `listed` (layer
directories it listed), `absent` (names it looked for that the layer did not provide: not
found, or found outside the layer) and `after` (earlier imports whose modules it used).

Standard library only, and Python 3.10 syntax: it runs on every supported target runtime.
"""

import builtins
import importlib
import importlib.machinery
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
    error = {
        "type": type(exc).__module__ + "." + type(exc).__qualname__,
        "last_line": traceback.format_exception_only(type(exc), exc)[-1].strip(),
        "kind": "other",
        "missing": None,
        "file": None,
        "line": None,
    }
    frames = _frames(exc)
    if isinstance(exc, SyntaxError):
        error.update(kind="syntax", file=exc.filename, line=exc.lineno)
    elif isinstance(exc, ModuleNotFoundError):
        error.update(kind="missing", missing=exc.name)
    elif isinstance(exc, ImportError) and (
        getattr(exc, "name_from", None) or (exc.name and exc.name in loaded_before())
    ):
        # `from y import X` where y loaded but has no X (3.12+ sets name_from; before, y is
        # in sys.modules, which a module that failed to load never is).
        error.update(kind="missing_name", missing=exc.name)
    elif (
        isinstance(exc, ImportError)
        and isinstance(exc.path, str)
        and exc.path.endswith(tuple(EXTENSION_SUFFIXES))
    ):
        error.update(kind="shared_object", file=exc.path)
    elif isinstance(exc, OSError) and frames:
        # ctypes.CDLL(name) failing to dlopen a library the package bundles or needs.
        code = frames[-1].tb_frame.f_code
        if (
            os.path.basename(os.path.dirname(code.co_filename)) == "ctypes"
            and code.co_name == "__init__"
        ):
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


class Tracker:
    """What the import in progress depends on: audit events, import calls, unfound names.

    Also a meta path finder placed last: it is asked only for names no other finder found.
    """

    def __init__(self, layer):
        self.layer = layer
        self.active = False
        self.files, self.listed, self.absent, self.used = set(), set(), set(), set()
        #: module name -> the import (of the task's list) that loaded it
        self.owner = {}
        #: Shared objects of the layer mapped so far (the dynamic linker loads a library's own
        #: dependencies without any audit event).
        self.mapped = set()

    def begin(self):
        self.files, self.listed, self.absent, self.used = set(), set(), set(), set()
        self.active = True

    def _path(self, value):
        try:
            value = os.fsdecode(os.fspath(value))
        except TypeError:  # a file descriptor
            return None
        if os.path.abspath(value) == self.layer:
            return "."
        where = _inside(value, self.layer)
        return where.replace(os.sep, "/") if where is not None else None

    def audit(self, event, args):
        if not self.active or not args:
            return
        try:
            self._audit(event, args)
        except Exception:  # noqa: BLE001  (a hook that raises would fail the audited call)
            self.files.add("?")  # unknown: such a result is never remembered

    def _audit(self, event, args):
        if event in ("open", "ctypes.dlopen"):
            where = self._path(args[0]) if args[0] is not None else None
            if where is not None:
                self.files.add(where)
        elif event in ("os.listdir", "os.scandir"):
            where = self._path(args[0] if args[0] is not None else ".")
            if where is not None:
                self.listed.add(where)

    def opened(self, path):
        """A layer file used without an audit event (Warmer): as if opened."""
        if self.active:
            where = self._path(path)
            if where is not None:
                self.files.add(where)

    def find_spec(self, name, path=None, target=None):
        if self.active:
            self.absent.add(name)
        return None

    def wrap(self, real_import, real_import_module):
        def _import(name, globals=None, locals=None, fromlist=(), level=0):
            module = real_import(name, globals, locals, fromlist, level)
            if self.active:
                try:
                    base = (
                        importlib._bootstrap._resolve_name(
                            name, (globals or {}).get("__package__") or "", level
                        )
                        if level
                        else name
                    )
                except (ImportError, ValueError, AttributeError):
                    base = name
                self._use(base, fromlist)
            return module

        def _import_module(name, package=None):
            module = real_import_module(name, package)
            if self.active:
                self._use(module.__name__, ())
            return module

        return _import, _import_module

    def _use(self, name, fromlist):
        parts = name.split(".") if name else []
        for i in range(1, len(parts) + 1):
            self.used.add(".".join(parts[:i]))
        for item in fromlist or ():
            if isinstance(item, str) and name + "." + item in sys.modules:
                self.used.add(name + "." + item)

    def _new_mappings(self):
        try:
            with open("/proc/self/maps", encoding="utf-8", errors="replace") as f:
                rows = [line.split(None, 5) for line in f]
        except OSError:
            return {"?"}  # unknown: such a result is never remembered
        paths = {row[5].strip() for row in rows if len(row) == 6 and row[5].startswith("/")}
        found = set()
        for path in paths - self.mapped:
            where = _inside(path, self.layer)
            if where is not None:
                found.add(where.replace(os.sep, "/"))
        self.mapped |= paths
        return found

    def end(self, name, new_modules):
        """This import's dependencies (layer-relative), and who loaded what."""
        self.active = False
        self.files |= self._new_mappings()
        for key, module in new_modules:
            path = getattr(module, "__file__", None)
            where = _inside(path, self.layer) if isinstance(path, str) else None
            portions = [p for p in (getattr(module, "__path__", None) or ()) if isinstance(p, str)]
            if where is not None:
                self.files.add(where.replace(os.sep, "/"))
                self.owner[key] = name
            elif any(_inside(p, self.layer) is not None for p in portions):
                self.owner[key] = name  # a namespace package with a portion in the layer
        # What it used from outside the layer (the standard library, the runtime's boto3):
        # the layer must not start shadowing those names.
        outside = {m.split(".")[0] for m in self.used if m not in self.owner}
        outside |= {k.split(".")[0] for k, _ in new_modules if k not in self.owner}
        after = sorted({self.owner[m] for m in self.used if self.owner.get(m, name) != name})
        return {
            "touched": sorted(self.files),
            "listed": sorted(self.listed),
            "absent": sorted(self.absent | outside),
            "after": after,
        }


class Warmer:
    """Bytecode compiled beside the imports by a child (pyc_warmer.py, read in the child only).

    The importer tells the child which layer modules it begins, and reads the child's bytecode
    where the layer ships none: a read of a missing `__pycache__` file of the layer falls back
    to the child's copy. Nothing else changes: `__cached__` still names the layer's
    `__pycache__`, the failed read of it is still audited, the source counts as opened.
    """

    def __init__(self, layer, prefix, modules, opened):
        self.layer, self.prefix, self.opened = layer, prefix, opened
        self.suffix = "." + sys.implementation.cache_tag + ".pyc"
        read, self.pipe = os.pipe()
        try:
            middle = os.fork()
        except OSError:
            os.close(read)
            os.close(self.pipe)
            raise
        if middle == 0:
            try:  # forked twice: the child is not the probe's (it waits, signals nobody)
                if os.fork() == 0:
                    self._child(read, modules)
            finally:
                os._exit(0)
        os.waitpid(middle, 0)
        os.close(read)
        os.set_blocking(self.pipe, False)
        self.loader = sys.modules["_frozen_importlib_external"].FileLoader
        self.original = self.loader.get_data
        warmer = self

        def get_data(loader, path):
            try:
                return warmer.original(loader, path)
            except OSError:
                data = warmer.warm_data(path)
                if data is None:
                    raise
                return data

        get_data.warmer = self  # how a test tells the importer reads through a Warmer
        self.loader.get_data = get_data

    def _child(self, read, modules):
        """The child's life: compile, then stay until the importer closes the pipe (a child
        gone early would make the importer's hints fail with EPIPE)."""
        try:
            devnull = os.open(os.devnull, os.O_RDWR)
            for fd in (0, 1, 2):
                os.dup2(devnull, fd)
            os.closerange(3, read)
            os.closerange(read + 1, 1 << 16)
            # The standard library, never the layer's modules of the same names.
            layer = self.layer
            sys.path[:] = [p for p in sys.path if p != layer and not p.startswith(layer + os.sep)]
            path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "pyc_warmer.py")
            namespace = {"__name__": "_layer_probe_pyc_warmer"}
            with open(path, "rb") as f:
                exec(compile(f.read(), path, "exec"), namespace)
            namespace["serve"](layer, self.prefix, read, modules, self.warm_path)
        except BaseException:  # noqa: BLE001  (nothing to report to: the importer goes on)
            pass
        os.set_blocking(read, True)
        while os.read(read, 1 << 16):
            pass

    @staticmethod
    def warm_path(prefix, source):
        """Where the child puts the bytecode of `source` (an absolute path)."""
        head, tail = os.path.split(source)
        return prefix + head + os.sep + tail[:-3] + "." + sys.implementation.cache_tag + ".pyc"

    def warm_data(self, path):
        """The child's bytecode for a missing layer .pyc at `path`, or None. The source it
        stands for is reported to the child (the importer begins it) and counted as opened."""
        if not isinstance(path, str) or not path.startswith(self.layer + os.sep):
            return None
        folder, name = os.path.split(path)
        if os.path.basename(folder) != "__pycache__" or not name.endswith(self.suffix):
            return None
        source = os.path.join(os.path.dirname(folder), name[: -len(self.suffix)] + ".py")
        try:
            os.write(self.pipe, os.fsencode(source) + b"\n")
        except OSError:  # a full pipe, or the child is gone: only a hint is lost
            pass
        try:
            with open(self.warm_path(self.prefix, source), "rb") as f:
                data = f.read()
        except OSError:
            return None  # not compiled yet: the importer compiles it, as it would have
        self.opened(source)  # loaded from here, the source is never opened
        return data

    def stop(self):
        self.loader.get_data = self.original
        os.close(self.pipe)  # the child reads the end and leaves; the reaper sweeps it anyway


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
    tracker = Tracker(layer)
    # Every path entry listed now, before any import is tracked: which top-level names the layer
    # has is checked from `absent`, not from a listing that changes with any dist-info name.
    importlib.machinery.PathFinder.find_spec("__layer_probe_primer__")
    tracker._new_mappings()  # what the interpreter mapped before any import of the layer
    warmer = None
    if task.get("warm"):
        try:
            warmer = Warmer(layer, os.path.abspath(task["warm"]), task["modules"], tracker.opened)
        except OSError:  # no pipe or process to spare: the imports go on without it
            pass
    sys.meta_path.append(tracker)
    sys.addaudithook(tracker.audit)
    builtins.__import__, importlib.import_module = tracker.wrap(
        builtins.__import__, importlib.import_module
    )
    seen = set(sys.modules)

    def attempt(name, **extra):
        out.write(json.dumps({"begin": name}) + "\n")
        started = time.perf_counter()
        result = dict(extra, module=name, ok=True)
        # The layer's sources this import loaded (for the start-up probe): reported per
        # import, so a later crash loses none of them. A module that raised is no longer in
        # sys.modules, but its code ran: its frames count.
        result["loaded"] = loaded = []
        tracker.begin()
        try:
            importlib.import_module(name)
        except BaseException as exc:  # noqa: BLE001  (SystemExit too: report it, go on)
            result.update(ok=False, error=describe(exc, layer, lambda: set(sys.modules)))
            for tb in _frames(exc):
                where = _inside(tb.tb_frame.f_code.co_filename, layer)
                if where is not None and where.endswith(".py") and where not in loaded:
                    loaded.append(where.replace(os.sep, "/"))
        result["seconds"] = round(time.perf_counter() - started, 4)
        new_modules = []
        for key, module in list(sys.modules.items()):
            if key not in seen:
                seen.add(key)
                new_modules.append((key, module))
                where = _inside(getattr(module, "__file__", None), layer)
                if where is not None and where.endswith(".py"):
                    loaded.append(where.replace(os.sep, "/"))
        result.update(tracker.end(name, new_modules))
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
            if (
                not leaf.startswith("_")
                and leaf not in NOT_IMPORTED
                and info.name not in sys.modules
            ):
                attempt(info.name, of=top)
    if warmer is not None:
        warmer.stop()
    out.write(json.dumps({"done": True}) + "\n")
    out.flush()
    # Skip interpreter shutdown: atexit hooks and finalizers of the imported code do not run.
    os._exit(0)


if __name__ == "__main__":
    main()
