"""Measuring one run: wall time, peak memory of the process tree, the layer it wrote, and the cold
import of that layer from read-only copies with and without its bytecode."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import statistics
import subprocess
import threading
import time
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from layer_builder.limits import MAX_UNZIPPED_BYTES
from packaging.utils import canonicalize_name

#: The CLI's progress lines on a pipe: "[12.3s] Compiling bytecode for the target Python".
_PROGRESS = re.compile(r"^\[(\d+(?:\.\d+)?)s\] (\w+)", re.MULTILINE)
_IMPORT_MARK = "BENCH-IMPORT "
#: Imports each name from the layer dir only (-S -I: no site-packages), timed inside the process.
_IMPORT_PROBE = f"""
import json, sys, time
root = sys.argv[1]
sys.path.insert(0, root)
start = time.perf_counter()
for name in sys.argv[2:]:
    __import__(name)
seconds = time.perf_counter() - start
outside = [n for n in sys.argv[2:] if not (getattr(sys.modules[n], "__file__", "") or "").startswith(root)]
print({_IMPORT_MARK!r} + json.dumps({{"seconds": seconds, "outside": outside}}))
"""


def _children(pid: int) -> list[int]:
    found: list[int] = []
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError), open(f"/proc/{pid}/task/{task}/children") as f:
                found += [int(p) for p in f.read().split()]
    return found


def _pss_kb(pid: int) -> int:
    """Proportional set size: shared pages split between sharers, so a tree's sum is honest."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


class TreeSampler(threading.Thread):
    """Samples the PSS sum of a process and all its descendants every `interval` seconds."""

    def __init__(self, pid: int, interval: float = 0.1) -> None:
        super().__init__(daemon=True)
        self.pid, self.interval = pid, interval
        self.peak_kb = 0
        self._done = threading.Event()  # not _stop: threading.Thread has a method of that name

    def run(self) -> None:
        while not self._done.is_set():
            pids, todo = [], [self.pid]
            while todo:
                pid = todo.pop()
                pids.append(pid)
                todo += _children(pid)
            self.peak_kb = max(self.peak_kb, sum(_pss_kb(p) for p in pids))
            self._done.wait(self.interval)

    def stop(self) -> None:
        self._done.set()
        self.join()


@dataclass
class Measured:
    seconds: float
    returncode: int
    #: ru_maxrss of the process and every descendant it waited for (what /usr/bin/time -v shows):
    #: the largest single process, not a sum.
    max_rss_kb: int
    #: Peak of the sampled PSS sum over the whole tree (10 Hz; short spikes can be missed).
    tree_pss_kb: int


def run_measured(
    cmd: Sequence[str | os.PathLike], *, cwd: Path, env: dict[str, str], log: Path
) -> Measured:
    with open(log, "wb") as out:
        start = time.perf_counter()
        proc = subprocess.Popen(
            [str(c) for c in cmd],
            cwd=cwd,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        sampler = TreeSampler(proc.pid)
        sampler.start()
        # wait4, not wait(): its rusage covers the child and all the descendants it reaped.
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - start
        sampler.stop()
        proc.returncode = os.waitstatus_to_exitcode(status)
    return Measured(seconds, proc.returncode, usage.ru_maxrss, sampler.peak_kb)


def progress_segments(output: str, seconds: float) -> dict[str, float]:
    """Time from each progress line to the next (the last to the exit), keyed by its first word."""
    marks = [(float(t), word.lower()) for t, word in _PROGRESS.findall(output)]
    segments: dict[str, float] = {}
    for (start, word), end in zip(marks, [t for t, _ in marks[1:]] + [seconds], strict=True):
        segments[word] = round(segments.get(word, 0) + max(0.0, end - start), 2)
    return segments



def layer_figures(zip_path: Path, expected: Sequence[str]) -> dict[str, Any]:
    """Sizes of a layer zip and which locked distributions it lacks (by dist-info)."""
    with zipfile.ZipFile(zip_path) as zf:
        infos = [i for i in zf.infolist() if not i.is_dir()]
    present = set()
    for info in infos:
        parts = info.filename.split("/")
        if len(parts) >= 3 and parts[0] == "python" and parts[1].endswith(".dist-info"):
            present.add(canonicalize_name(parts[1].removesuffix(".dist-info").rsplit("-", 1)[0]))
    unzipped = sum(i.file_size for i in infos)
    return {
        "zipped_bytes": zip_path.stat().st_size,
        "unzipped_bytes": unzipped,
        "fits": unzipped <= MAX_UNZIPPED_BYTES,
        "files": len(infos),
        "pyc_files": sum(1 for i in infos if i.filename.endswith(".pyc")),
        "outside_python_dir": sum(1 for i in infos if not i.filename.startswith("python/")),
        "missing": sorted(set(expected) - present),
    }


def _set_writable(tree: Path, writable: bool) -> None:
    for dirpath, dirnames, filenames in os.walk(tree):
        for name in [*dirnames, *filenames]:
            path = os.path.join(dirpath, name)
            if not os.path.islink(path):
                mode = os.lstat(path).st_mode
                os.chmod(path, (mode | 0o200) if writable else (mode & ~0o222))
    mode = tree.stat().st_mode
    tree.chmod((mode | 0o200) if writable else (mode & ~0o222))


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        _set_writable(path, True)  # a read-only copy cannot be removed by a non-root user
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def _pyc_count(tree: Path) -> int:
    return sum(1 for _ in tree.rglob("*.pyc"))


def cold_imports(
    zip_path: Path, python: str, names: Sequence[str], runs: int, scratch: Path
) -> dict[str, Any]:
    """Median in-process import time from read-only copies of the layer, with and without .pyc."""
    with_pyc, without = scratch / "with-pyc", scratch / "without-pyc"
    try:
        with zipfile.ZipFile(zip_path) as zf:
            zf.extractall(with_pyc)
        shutil.copytree(with_pyc, without, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        for tree in (with_pyc, without):
            _set_writable(tree, False)
        # root ignores the read-only mode: -B and PYTHONDONTWRITEBYTECODE keep Python from writing
        # bytecode anyway (-I alone would make it ignore the variable).
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONDONTWRITEBYTECODE": "1"}
        samples: dict[str, list[float]] = {"with_pyc": [], "without_pyc": []}
        errors: dict[str, str] = {}
        pyc_before = _pyc_count(without)
        for _ in range(runs):  # alternate, so load drifts hit both variants alike
            for label, tree in (("with_pyc", with_pyc), ("without_pyc", without)):
                if label in errors:
                    continue
                done = subprocess.run(
                    [python, "-S", "-I", "-B", "-c", _IMPORT_PROBE, str(tree / "python"), *names],
                    env=env,
                    capture_output=True,
                    text=True,
                    timeout=600,
                    check=False,
                )
                line = next(
                    (ln for ln in done.stdout.splitlines() if ln.startswith(_IMPORT_MARK)), None
                )
                if done.returncode != 0 or line is None:
                    tail = (done.stderr or done.stdout).strip().splitlines()
                    errors[label] = tail[-1] if tail else f"exit {done.returncode}"
                    continue
                result = json.loads(line.removeprefix(_IMPORT_MARK))
                if result["outside"]:
                    errors[label] = (
                        f"imported from outside the layer: {', '.join(result['outside'])}"
                    )
                    continue
                samples[label].append(result["seconds"])
        if _pyc_count(without) != pyc_before:
            errors["without_pyc"] = "bytecode was written into the read-only copy: figure invalid"
        figures: dict[str, Any] = {"runs": samples, "errors": errors}
        for label, values in samples.items():
            figures[label] = statistics.median(values) if values and label not in errors else None
        return figures
    finally:
        for tree in (with_pyc, without):
            if tree.exists():
                _remove(tree)


