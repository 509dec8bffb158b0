"""Bytecode for the target Python, and the interpreter that makes it.

Lambda mounts layers read-only under /opt, so a layer without valid `.pyc` recompiles every module
on every cold start. `unchecked-hash` pycs stay valid after the zip normalises timestamps, and
the embedded source paths are rewritten to /opt/python so builds do not depend on the work dir.
"""

from __future__ import annotations

import contextlib
import functools
import glob
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from . import limits
from .runner import out_of_time, run_bounded, usable_cpus  # noqa: F401  (callers import them here)
from .target import Target

LAYER_PATH = f"{limits.LAYER_MOUNT}/{limits.LAYER_PYTHON_DIR}"
#: From this many sources on, two compiler processes share them where two CPUs are free: the
#: native bench fixture's 147 sources took 0.18 s in one process, 0.115 s in two (2 cores); a
#: second process costs one interpreter start (~15 ms).
PARALLEL_MIN_SOURCES = 32


def _version_of(python: str) -> tuple[int, int] | None:
    """The interpreter's (major, minor), asked once per file as it is on disk (find_interpreter
    runs several times a build; each ask is a process start)."""
    try:
        info = os.stat(python)
    except OSError:
        return None
    return _asked_version(os.path.realpath(python), info.st_ino, info.st_mtime_ns)


@functools.lru_cache(maxsize=32)
def _asked_version(python: str, inode: int, mtime_ns: int) -> tuple[int, int] | None:
    try:
        out = subprocess.run(
            [python, "-c", "import sys; print(*sys.version_info[:2])"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    try:
        major, minor = out.stdout.split()
        return int(major), int(minor)
    except ValueError:
        return None


def _version_key(path: str) -> list[int]:
    return [int(n) for n in re.findall(r"\d+", Path(path).parts[-3])]


def find_interpreter(target: Target, environ: Mapping[str, str] | None = None) -> str | None:
    """An interpreter of the target's minor version: this one, PATH, then pyenv."""
    if sys.version_info[:2] == target.version_tuple:
        return sys.executable
    environ = os.environ if environ is None else environ
    name = f"python{target.python_version}"
    candidates: list[str | None] = [shutil.which(name, path=environ.get("PATH"))]
    pyenv_root = environ.get("PYENV_ROOT") or os.path.expanduser("~/.pyenv")
    pyenv = sorted(
        glob.glob(f"{pyenv_root}/versions/{target.python_version}*/bin/{name}"),
        key=_version_key,
        reverse=True,
    )  # 3.13.10 before 3.13.9
    candidates += pyenv
    for candidate in candidates:
        # pyenv shims sit on PATH but fail when the version is not selected: run each one.
        if candidate and _version_of(candidate) == target.version_tuple:
            return candidate
    return None


#: Run in the target's interpreter: compile each source listed in argv[4] (a path relative to
#: argv[1], a directory or a zip of sources), unchecked-hash (PEP 552: magic, flags 0b01, the
#: source's hash, the marshalled code: what py_compile writes), with the source path it has under
#: /opt/python, and append a record to the file argv[2] (name and data lengths, name, data): the
#: pyc under its __pycache__ name, or the source's name and no data when it does not compile.
#: One file out, not one per pyc (creating a few hundred files cost 0.15-0.2 s on an ext4 /tmp
#: here); every record before a crash is still read, and a source without a record was not
#: reached. It prints "done" at the end.
#: It first caps its own address space at argv[5] bytes: a source whose compile would take more
#: fails with MemoryError (tried twice, the second time after a collection, with nothing of the
#: sources before it held) and is recorded like one that does not compile (so is one that raises
#: anything else: RecursionError from a deeply nested expression), and the next one goes on.
#: (Set here rather than in a preexec_fn, which is unsafe in a process with threads.)
_COMPILER = """
import gc, importlib.util, marshal, os, resource, struct, sys, zipfile
root, out, layer, listing, memory = sys.argv[1:6]
resource.setrlimit(resource.RLIMIT_AS, (int(memory), int(memory)))
if os.path.isdir(root):
    def read(rel):
        with open(os.path.join(root, rel), "rb") as f:
            return f.read()
else:
    read = zipfile.ZipFile(root).read
def pyc(rel):
    source = read(rel)
    code = compile(source, layer + "/" + rel, "exec", dont_inherit=True)
    return (importlib.util.MAGIC_NUMBER + (1).to_bytes(4, "little")
            + importlib.util.source_hash(source) + marshal.dumps(code))
with open(out, "wb", buffering=0) as records:
    for rel in open(listing, encoding="utf-8").read().splitlines():
        name, short = importlib.util.cache_from_source(rel), False
        try:
            data = pyc(rel)
        except MemoryError:
            short = True  # retried below, once the exception (and its frames) are gone
        except Exception:
            name, data = rel, b""
        if short:
            # What an earlier source left may be what was short: try once more after freeing it,
            # so that no source is refused for what another one did.
            gc.collect()
            try:
                data = pyc(rel)
            except Exception:
                name, data = rel, b""
        name = name.encode("utf-8")
        records.write(struct.pack("<II", len(name), len(data)) + name + data)
        data = None
print("done")
"""


@dataclass(frozen=True)
class Compiled:
    #: `pkg/__pycache__/mod.cpython-3X.pyc` → its bytes.
    pycs: dict[str, bytes]
    #: Sources the interpreter refused (a failure to remember); not those it never reached.
    failed: frozenset[str] = frozenset()
    #: A compiler process ended before its last source (crashed, killed): what it did not reach
    #: is neither compiled nor failed, and is tried again next time.
    stopped: bool = False


_RECORD = struct.Struct("<II")


def compilable(size: int) -> bool:
    """Whether a source of `size` bytes is compiled at all (limits.MAX_COMPILE_SOURCE_BYTES)."""
    return size <= limits.MAX_COMPILE_SOURCE_BYTES


def _sizes(root: Path, files: list[str]) -> dict[str, int]:
    """Each source's size in the tree or zip `root` (a missing one: 0, the compiler says)."""
    if root.is_dir():
        sizes = {}
        for f in files:
            try:
                sizes[f] = (root / f).stat().st_size
            except OSError:
                sizes[f] = 0
        return sizes
    with zipfile.ZipFile(root) as zf:
        listed = {info.filename: info.file_size for info in zf.infolist()}
    return {f: listed.get(f, 0) for f in files}


def failure_warnings(failed: list[str], sizes: Mapping[str, int], runtime: str) -> list[str]:
    """What the report says of sources left without bytecode (`sizes`: bytes per source)."""
    cap = limits.MAX_COMPILE_SOURCE_BYTES
    large = [s for s in failed if not compilable(sizes.get(s, 0))]
    others = [s for s in failed if s not in large]
    warnings = []
    if large:
        more = f" ({len(large) - 1} more such files)" if len(large) > 1 else ""
        warnings.append(
            f"{large[0]} is {sizes[large[0]]:,} bytes, past the limit of {cap:,} bytes "
            f"for compiling one source{more}: it ships without bytecode and every cold "
            "start compiles it; keep data out of .py files (load it from a file)."
        )
    if others:
        warnings.append(
            f"{len(others)} source files do not compile for {runtime} (invalid there, "
            f"or needing more than {limits.MAX_COMPILE_MEMORY_BYTES:,} bytes of memory to "
            f"compile) and ship without bytecode, e.g. {others[0]}."
        )
    return warnings


class Cancelled(Exception):
    """compile_sources was told to stop (the build failed meanwhile)."""


def compile_sources(
    python: str,
    root: Path,
    files: list[str],
    *,
    timeout: float | None = None,
    stop: threading.Event | None = None,
    processes: int = 2,
) -> Compiled:
    """Bytecode for `files` (paths relative to root: the layer's python/ dir, or a zip of the
    sources under those names) from `python`.

    Returns the pycs (`pkg/__pycache__/mod.cpython-3X.pyc` → bytes), `unchecked-hash`, so they stay valid
    in a zip that normalises timestamps, and naming /opt/python/<file> as their source. Files the
    target cannot compile (e.g. Python 2 sources shipped as data), sources past
    limits.MAX_COMPILE_SOURCE_BYTES and those needing more than limits.MAX_COMPILE_MEMORY_BYTES
    to compile are left out (and listed as failing). Two processes share a long list on two CPUs
    (at most `processes`). Raises OutOfTimeError after `timeout` seconds (None: no limit),
    Cancelled soon after `stop` is set; either way no compiler process is left.
    """
    sizes = _sizes(root, files)
    oversized = frozenset(f for f in files if not compilable(sizes[f]))
    files = [f for f in files if f not in oversized]
    if not files:
        return Compiled({}, oversized)
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONHASHSEED": "0",
        "SOURCE_DATE_EPOCH": "315532800",
    }
    with tempfile.TemporaryDirectory(prefix="pyc-") as tmp:
        split = len(files) >= PARALLEL_MIN_SOURCES and min(processes, usable_cpus()) > 1
        groups = [files[0::2], files[1::2]] if split else [files]
        procs = []
        try:
            for number, group in enumerate(groups):
                listing = Path(tmp, f"files-{number}.txt")
                listing.write_text("".join(f"{f}\n" for f in group), encoding="utf-8")
                procs.append(
                    subprocess.Popen(
                        [
                            python,
                            "-I",
                            "-S",
                            "-c",
                            _COMPILER,
                            str(root),
                            os.path.join(tmp, f"pycs-{number}"),
                            LAYER_PATH,
                            str(listing),
                            str(limits.MAX_COMPILE_MEMORY_BYTES),
                        ],
                        env=env,
                        text=True,
                        start_new_session=True,
                        stdin=subprocess.DEVNULL,
                        stdout=subprocess.PIPE,
                        # Nobody reads it, and a source's SyntaxWarnings can be 14x its size.
                        stderr=subprocess.DEVNULL,
                    )
                )
            deadline = None if timeout is None else time.monotonic() + timeout
            finished = [_wait(proc, deadline, stop) for proc in procs]
        finally:
            for proc in procs:
                if proc.poll() is None:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
                if proc.stdout is not None:  # not left to an exception's traceback to close
                    proc.stdout.close()
        records: dict[str, bytes] = {}
        for number in range(len(groups)):
            with contextlib.suppress(FileNotFoundError):  # it ended before writing any
                records.update(_records(Path(tmp, f"pycs-{number}").read_bytes()))
        return Compiled(
            {name: data for name, data in records.items() if data},
            frozenset(name for name, data in records.items() if not data) | oversized,
            stopped=not all(finished),
        )


def _wait(proc: subprocess.Popen, deadline: float | None, stop: threading.Event | None) -> bool:
    """Whether the compiler finished its list; reading its output all along, looking at the
    deadline and at `stop` ten times a second."""
    while True:
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        try:
            out, _ = proc.communicate(timeout=0.1 if left is None else min(0.1, left))
        except subprocess.TimeoutExpired:
            if stop is not None and stop.is_set():
                raise Cancelled from None
            if left is not None and left <= 0:
                raise out_of_time("Compiling bytecode") from None
            continue  # communicate() again loses no output
        return proc.returncode == 0 and out.strip() == "done"


def _records(data: bytes) -> dict[str, bytes]:
    """The compiler's records, up to the last complete one."""
    found, at = {}, 0
    while at + _RECORD.size <= len(data):
        name_len, pyc_len = _RECORD.unpack_from(data, at)
        end = at + _RECORD.size + name_len + pyc_len
        if end > len(data):
            break
        name = data[at + _RECORD.size : at + _RECORD.size + name_len].decode("utf-8")
        found[name] = data[at + _RECORD.size + name_len : end]
        at = end
    return found


def pyc_name(source: str, python_version: str) -> str:
    """`pkg/mod.py` → `pkg/__pycache__/mod.cpython-313.pyc` for the target's version."""
    folder, _, name = source.rpartition("/")
    tag = f"cpython-{python_version.replace('.', '')}"
    pyc = f"__pycache__/{name[:-3]}.{tag}.pyc"
    return f"{folder}/{pyc}" if folder else pyc


def pyc_source(pyc: str) -> str:
    """`pkg/__pycache__/mod.cpython-313.pyc` → `pkg/mod.py`"""
    folder, _, name = pyc.rpartition("/")
    parent = folder.rpartition("/")[0] if folder.endswith("__pycache__") else folder
    module = f"{name.split('.')[0]}.py"
    return f"{parent}/{module}" if parent else module


def rank(sources: list[str], startup: set[str]) -> list[str]:
    """Start-up sources first, then the shallowest: the order bytecode is kept in."""
    return sorted(sources, key=lambda s: (s not in startup, s.count("/"), s))
