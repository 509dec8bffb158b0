"""Bytecode for the target Python, and the interpreter that makes it.

Lambda mounts layers read-only under /opt, so a layer without valid `.pyc` recompiles every module
on every cold start. `unchecked-hash` pycs stay valid after the zip normalises timestamps, and
the embedded source paths are rewritten to /opt/python so builds do not depend on the work dir.
"""

from __future__ import annotations

import glob
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Mapping
from pathlib import Path

from . import limits
from .runner import out_of_time, run_bounded  # moved to runner.py; callers still import them here
from .target import Target

LAYER_PATH = f"{limits.LAYER_MOUNT}/{limits.LAYER_PYTHON_DIR}"
#: compileall's worker pool starts a forkserver (~0.7 s here); below this many sources one
#: process is faster (measured: 77 botocore modules 1.8 s alone vs 2.3 s pooled on 2 cores).
PARALLEL_MIN_SOURCES = 200
#: The start-up probe only ranks bytecode near the size limit: never let it take longer than this.
PROBE_TIMEOUT = 300.0


def _version_of(python: str) -> tuple[int, int] | None:
    try:
        out = subprocess.run([python, "-c", "import sys; print(*sys.version_info[:2])"],
                             capture_output=True, text=True, timeout=30, check=False)
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
    candidates = [shutil.which(name, path=environ.get("PATH"))]
    pyenv_root = environ.get("PYENV_ROOT") or os.path.expanduser("~/.pyenv")
    candidates += sorted(glob.glob(f"{pyenv_root}/versions/{target.python_version}*/bin/{name}"),
                         key=_version_key, reverse=True)  # 3.13.10 before 3.13.9
    for candidate in candidates:
        # pyenv shims sit on PATH but fail when the version is not selected: run each one.
        if candidate and _version_of(candidate) == target.version_tuple:
            return candidate
    return None


def compile_tree(python: str, tree: Path, jobs: int = 0, only: list[Path] | None = None,
                 timeout: float | None = None) -> list[str]:
    """Compile every .py under tree (or only the given files); returns files that failed.

    Raises OutOfTimeError when it takes longer than `timeout` seconds (None: no limit).
    """
    if jobs == 0:
        sources = len(only) if only is not None else sum(1 for _ in tree.rglob("*.py"))
        jobs = 0 if sources >= PARALLEL_MIN_SOURCES else 1
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONHASHSEED": "0",
           "SOURCE_DATE_EPOCH": "315532800"}
    cmd = [python, "-I", "-m", "compileall", "-q", "-j", str(jobs),
           "--invalidation-mode", "unchecked-hash", "-s", str(tree), "-p", LAYER_PATH]
    if only is not None and not only:
        return []
    try:
        if only is None:
            done = run_bounded([*cmd, str(tree)], env=env, timeout=timeout)
        else:
            done = run_bounded([*cmd, "-i", "-"], env=env, timeout=timeout,
                               input="".join(f"{p}\n" for p in only))
    except subprocess.TimeoutExpired:
        raise out_of_time("Compiling bytecode") from None
    if done.returncode == 0:
        return []
    # compileall prints "*** Error compiling '<file>'..." for sources the target cannot parse
    # (e.g. Python 2 files shipped as data); those modules are not importable anyway.
    return [line.split("'")[1] for line in done.stdout.splitlines()
            if line.startswith("*** Error compiling") and "'" in line]


_STARTUP_PROBE = """
import importlib, json, sys
tree = sys.argv[1]
sys.path.insert(0, tree)
for name in sys.argv[2:]:
    try:
        importlib.import_module(name)
    except BaseException:
        pass
print(json.dumps(sorted({m.__file__ for m in list(sys.modules.values())
                         if getattr(m, "__file__", None) and m.__file__.startswith(tree)})))
"""


def importable_names(tree: Path) -> list[str]:
    """Public top-level packages and modules of an installed tree: what a function imports."""
    names = []
    for entry in sorted(tree.iterdir()):
        if entry.name.startswith(("_", ".")) or entry.name.endswith((".dist-info", ".libs")):
            continue
        if entry.is_dir() and (entry / "__init__.py").is_file():
            names.append(entry.name)
        elif entry.suffix == ".py":
            names.append(entry.stem)
    return names


def startup_sources(python: str, tree: Path, timeout: float | None = None) -> set[Path] | None:
    """Sources the target interpreter loads when each public top-level name is imported.

    None when the probe fails or needs more than PROBE_TIMEOUT: ranking then falls back to the
    shallowest modules. `timeout` is the build's time left (None: no deadline); running out of
    that raises OutOfTimeError instead, since nothing after the probe could finish either.
    """
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONDONTWRITEBYTECODE": "1"}
    tree = tree.resolve()
    limit = PROBE_TIMEOUT if timeout is None else min(timeout, PROBE_TIMEOUT)
    try:
        done = run_bounded([python, "-S", "-I", "-c", _STARTUP_PROBE, str(tree), *importable_names(tree)],
                           env=env, timeout=limit)
        return {Path(p) for p in json.loads(done.stdout.strip().splitlines()[-1])}
    except subprocess.TimeoutExpired:
        if timeout is not None and timeout <= PROBE_TIMEOUT:
            raise out_of_time("The start-up import probe") from None
        return None
    except (ValueError, IndexError, OSError):
        return None


def _pyc_source(pyc: Path) -> Path:
    """pkg/__pycache__/mod.cpython-313.pyc → pkg/mod.py"""
    return pyc.parent.parent / f"{pyc.name.split('.')[0]}.py"


def fit_budget(tree: Path, budget: int, limit: int,
               find_startup: Callable[[], set[Path] | None]) -> dict[str, int | str]:
    """Keep bytecode within `budget` bytes for the whole tree (`limit` if the tree without
    bytecode leaves no room below the budget), start-up modules first.

    Bytecode makes cold starts several times faster but adds about a fifth to a layer. When all
    of it fits, all of it stays. Otherwise the modules the packages load at import time keep
    theirs first, then the shallowest other modules while room is left.
    """
    tree = tree.resolve()
    sizes = {p: p.stat().st_size for p in tree.rglob("*") if p.is_file()}
    pycs = sorted(p for p in sizes if p.suffix == ".pyc" and p.parent.name == "__pycache__")
    total, pyc_total = sum(sizes.values()), sum(sizes[p] for p in pycs)
    if total <= budget:
        return {"choice": "all", "kept": len(pycs), "dropped": 0, "dropped_bytes": 0}
    if total - pyc_total > budget:
        # Without bytecode the tree already eats the headroom: use what is left below the limit.
        budget = limit
    if total - pyc_total > budget:  # over even without bytecode: the size gate refuses it
        return {"choice": "all", "kept": len(pycs), "dropped": 0, "dropped_bytes": 0}
    room = budget - (total - pyc_total)
    startup = find_startup()
    first = [p for p in pycs if startup is not None and _pyc_source(p) in startup]
    chosen = set(first)
    rest = sorted((p for p in pycs if p not in chosen),
                  key=lambda p: (len(p.relative_to(tree).parts), p.as_posix()))
    kept = dropped = dropped_bytes = 0
    for pyc in [*first, *rest]:
        if sizes[pyc] <= room:
            room -= sizes[pyc]
            kept += 1
        else:
            pyc.unlink()
            dropped += 1
            dropped_bytes += sizes[pyc]
    choice = "start-up modules first" if startup is not None else "shallowest modules first"
    return {"choice": choice, "kept": kept, "dropped": dropped, "dropped_bytes": dropped_bytes}
