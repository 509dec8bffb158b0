"""`python -m bench.run`: build speed, layer size and cold start, contenders side by side.

Contenders run in one process, alternating (a b c d … a b c d …), and the median is quoted:

  seed         the seed blog's script (bench/seed_build.sh) on the host Python: `pipenv requirements`,
               `pip install --target`, `cp -R`, `zip -r`; pip's cache is warm (untimed warm-up run)
  cli-cold     `layer-builder build` with an empty --cache-dir: empty dependency cache, empty uv cache
  cli-uvwarm   `layer-builder build` with an empty dependency cache but uv's cache warm: the same
               footing as the floor, so the two compare like for like
  cli-warm     `layer-builder build` with a warm --cache-dir (dependency cache hit)
  cli-rebuild  like cli-warm after an edit of the project's own code, lock unchanged
  floor        `uv pip install --target --require-hashes --no-deps` from a warm uv cache, then `zip -qr`

Per contender: wall time, ratios to the seed and the floor, zipped and unzipped size, peak memory
(ru_maxrss of the process tree, as /usr/bin/time reports it, and the sampled PSS sum of the whole
tree), and the cold-import time of the built layer under the target Python from read-only copies
with and without its .pyc. Writes <out>/latest.md (latest-<fixture>.md for other fixtures) and a
JSON of every raw figure; prints the table.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from layer_builder import lock, project
from layer_builder.bytecode import find_interpreter
from layer_builder.install import find_uv
from layer_builder.limits import MAX_UNZIPPED_BYTES
from layer_builder.target import Target
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "bench"
SEED_SCRIPT = BENCH / "seed_build.sh"
FIXTURES = {
    "heavy": BENCH / "fixtures" / "heavy",
    "mixed": REPO / "tests" / "fixtures" / "projects" / "mixed",
    "emr": REPO / "examples" / "emr-launcher",
}
#: What a function using the layer would import first (the cold-start figure).
IMPORTS = {
    "heavy": ("pandas", "pyarrow", "pydantic", "yaml", "requests"),
    "mixed": ("six", "markupsafe", "mixedpkg"),
    "emr": ("yaml", "emrlauncher"),
}
#: What the JSON keeps of each CLI --report.
REPORT_KEYS = ("timings", "dependency_cache", "bytecode", "slimmed", "warnings",
               "unzipped_bytes", "zipped_bytes", "installer")  # fmt: skip
CONTENDERS = ("seed", "cli-cold", "cli-uvwarm", "cli-warm", "cli-rebuild", "floor")
CLI_CONTENDERS = ("cli-cold", "cli-uvwarm", "cli-warm", "cli-rebuild")
#: Outside the repository: the venv's pip and pipenv name the public index's host in their code.
DEFAULT_VENV = (
    Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "layer-builder-bench" / "seed-venv"
)
DEFAULT_OUT = BENCH / "results"
README = BENCH / "README.md"
#: bench/README.md carries the latest heavy table below this line.
README_MARK = "<!-- latest table: paste results/latest.md below after `make bench` -->\n"
#: Never copied into a run's project: caches and earlier outputs of the fixture.
_FIXTURE_IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", ".venv", "target", "*.zip")
_REFUSED_SIZE = re.compile(r"unzips to ([\d,]+) bytes")
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


# --------------------------------------------------------------------------------------------
# Measuring one process tree


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


# --------------------------------------------------------------------------------------------
# Layers


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


# --------------------------------------------------------------------------------------------
# Set-up: interpreters, the seed's pipenv, environments


def host_python() -> str:
    """The first python3 on PATH outside the project's venv: what the seed's user would run."""
    venv_bin = str(REPO / ".venv" / "bin")
    path = os.pathsep.join(
        p
        for p in os.environ.get("PATH", "").split(os.pathsep)
        if p and os.path.abspath(p) != venv_bin
    )
    found = shutil.which("python3", path=path)
    if not found:
        raise SystemExit("bench: no python3 on PATH for the seed script (pass --host-python).")
    return found


def _python_version(python: str) -> str:
    return subprocess.run(
        [python, "-c", "import platform; print(platform.python_version())"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


def ensure_bench_venv(venv: Path, python: str) -> Path:
    """A venv of the host Python with pipenv: the seed's `pip3 install pipenv`, done once, untimed."""
    venv.mkdir(parents=True, exist_ok=True)
    ready = venv / ".bench-ready"
    with open(venv / ".bench-lock", "w") as guard:
        fcntl.flock(guard, fcntl.LOCK_EX)  # a test and `make bench` may start at once
        if not ready.is_file():
            print(f"bench: installing pipenv into {venv} (once, not timed)", file=sys.stderr)
            subprocess.run([python, "-m", "venv", str(venv)], check=True)
            subprocess.run(
                [
                    str(venv / "bin" / "python"),
                    "-m",
                    "pip",
                    "install",
                    "-q",
                    "--upgrade",
                    "pip",
                    "pipenv",
                ],
                check=True,
            )
            ready.write_text(_python_version(python) + "\n")
    return venv


def public_index_url() -> str:
    """pip's default index, asked of pip at run time so no file here names the host."""
    from pip._internal.models.index import PyPI

    return PyPI.simple_url


def clean_environment() -> dict[str, str]:
    """This shell's environment without installer settings: no local mirror leaks into a run."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PIP_", "UV_", "PIPENV_")) and k not in ("VIRTUAL_ENV", "PYTHONPATH")
    }
    env["PIP_CONFIG_FILE"] = os.devnull
    return env


def _tool_version(cmd: Sequence[str]) -> str:
    try:
        done = subprocess.run(list(cmd), capture_output=True, text=True, timeout=60, check=False)
    except OSError:
        return "?"
    return (
        (done.stdout or done.stderr).strip().splitlines()[0]
        if (done.stdout or done.stderr)
        else "?"
    )


def _git_state() -> str:
    head = _tool_version(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"])
    dirty = subprocess.run(
        ["git", "-C", str(REPO), "status", "--porcelain", "builder_function"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.splitlines()
    return f"{head} (+{len(dirty)} uncommitted engine files)" if dirty else head


# --------------------------------------------------------------------------------------------
# The benchmark


@dataclass
class RunRecord:
    contender: str
    rep: int
    warmup: bool
    seconds: float
    returncode: int
    max_rss_kb: int
    tree_pss_kb: int
    layer: dict[str, Any] = field(default_factory=dict)
    report: dict[str, Any] = field(default_factory=dict)
    #: Seconds between the CLI's progress lines, by the first word of each line; the last one
    #: runs to the process's exit. Available for refused builds too, which write no report.
    progress: dict[str, float] = field(default_factory=dict)
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and bool(self.layer) and not self.layer.get("missing")


@dataclass
class Bench:
    fixture: str
    contenders: tuple[str, ...]
    reps: int
    import_runs: int
    work: Path
    venv: Path
    host_python: str
    target: Target = field(default_factory=Target)

    def __post_init__(self) -> None:
        self.source = FIXTURES[self.fixture]
        python = find_interpreter(self.target)
        if python is None:
            raise SystemExit(f"bench: no Python {self.target.python_version} found (PATH, pyenv).")
        self.python = python
        uv = find_uv()
        if uv is None:
            raise SystemExit("bench: uv is not installed in this environment (pip install uv).")
        self.uv = uv
        script = Path(sys.executable).parent / "layer-builder"
        self.cli = [script] if script.is_file() else [sys.executable, "-m", "layer_builder.cli"]
        config = project.load_config(self.source, self.source.name)
        self.layer_name, self.layer_version = config.name, config.version or "0.0.0"
        self.own = [p.name for p in project.detect_code(self.source, config)]
        locked = lock.read_lock(self.source, self.target, lock.IndexPolicy())
        self.expected = [r.name for r in locked.requirements]
        self.requirements = self.work / "floor-requirements.txt"
        self.requirements.write_text("".join(r.line() + "\n" for r in locked.requirements))
        self.uv_warm = self.work / "uv-warm"  # shared by cli-uvwarm, cli-warm and the floor
        self.warm_cache = self.work / "cli-warm-cache"  # dependency cache of cli-warm / cli-rebuild
        self.layers = self.work / "layers"
        for path in (self.uv_warm, self.layers):
            path.mkdir(parents=True, exist_ok=True)
        self.warm_cache.mkdir(parents=True, exist_ok=True)
        (self.warm_cache / "uv").symlink_to(self.uv_warm, target_is_directory=True)
        self.env = clean_environment()
        self.index_url = public_index_url()
        self.records: list[RunRecord] = []

    # ---- one contender run: untimed preparation, then the timed command -------------------

    def _command(
        self, contender: str, run: Path, proj: Path, rep: int
    ) -> tuple[list, Path, dict, Path]:
        env = dict(self.env)
        if contender == "seed":
            env.update(
                PATH=f"{self.venv / 'bin'}{os.pathsep}{env.get('PATH', '')}",
                PIP_INDEX_URL=self.index_url,  # the lock's ${PIP_INDEX_URL}, as its user would set it
                PIP_CACHE_DIR=str(self.work / "pip-cache"),
                WORKON_HOME=str(self.work / "pipenv-venvs"),
                SEED_PIPENV_PREINSTALLED="1",
                SEED_NAME=self.layer_name,
                SEED_VERSION=self.layer_version,
                SEED_PACKAGES=" ".join(self.own),
            )
            out = proj / "target" / f"{self.layer_name}-{self.layer_version}.zip"
            return ["bash", SEED_SCRIPT], proj, env, out
        if contender == "floor":
            script = (
                "set -e\n"
                '"$UV" pip install --no-config --quiet --target target/python --python "$PY" '
                '--python-version "$PYVER" --python-platform "$PLATFORM" --require-hashes --no-deps '
                '--only-binary :all: -r "$REQS"\n'
                'for p in $OWN; do cp -R "$p" target/python; done\n'
                "cd target && zip -qr ../floor.zip .\n"
            )
            env.update(
                UV=self.uv,
                PY=self.python,
                PYVER=self.target.python_version,
                PLATFORM=self.target.uv_platform,
                REQS=str(self.requirements),
                OWN=" ".join(self.own),
                UV_CACHE_DIR=str(self.uv_warm),
            )
            return ["bash", "-c", script], proj, env, proj / "floor.zip"
        if contender in ("cli-warm", "cli-rebuild"):
            cache = self.warm_cache
        else:
            cache = run / "cache"
            cache.mkdir()
            if contender == "cli-uvwarm":
                (cache / "uv").symlink_to(self.uv_warm, target_is_directory=True)
        if contender == "cli-rebuild":
            self._edit_own_code(proj, rep)
        out = run / "layer.zip"
        cmd = [*self.cli, "build", proj, "--output", out, "--cache-dir", cache,
               "--runtime", self.target.runtime, "--arch", self.target.arch,
               "--report", run / "report.json"]  # fmt: skip
        return cmd, run, env, out

    def _edit_own_code(self, proj: Path, rep: int) -> None:
        first = proj / self.own[0]
        path = first / "__init__.py" if first.is_dir() else first
        with open(path, "a", encoding="utf-8") as f:
            f.write(f"\nBENCH_REBUILD = {rep}  # an own-code change with the lock unchanged\n")

    def run_one(self, contender: str, rep: int, warmup: bool = False) -> RunRecord:
        run = self.work / "runs" / f"{'warmup' if warmup else rep}-{contender}"
        proj = run / "project"
        shutil.copytree(self.source, proj, ignore=_FIXTURE_IGNORE)
        try:
            cmd, cwd, env, out = self._command(contender, run, proj, rep)
            log = run / "log.txt"
            measured = run_measured(cmd, cwd=cwd, env=env, log=log)
            record = RunRecord(
                contender,
                rep,
                warmup,
                round(measured.seconds, 3),
                measured.returncode,
                measured.max_rss_kb,
                measured.tree_pss_kb,
            )
            output = log.read_text(encoding="utf-8", errors="replace")
            produced = out.is_file()
            if produced:
                record.layer = layer_figures(out, self.expected)
                os.replace(out, self.layers / f"{contender}.zip")  # kept for the import figures
            if contender.startswith("cli-"):
                record.progress = progress_segments(output, measured.seconds)
            if (run / "report.json").is_file():
                report = json.loads((run / "report.json").read_text())
                record.report = {k: report.get(k) for k in REPORT_KEYS}
            if measured.returncode != 0 or not produced:
                lines = [ln for ln in output.splitlines() if ln.strip()]
                record.error = next(
                    (ln for ln in lines if "layer-builder:" in ln),
                    lines[-1] if lines else f"exit {measured.returncode}",
                )[:600]
                if match := _REFUSED_SIZE.search(output):
                    record.layer.setdefault("unzipped_bytes", int(match[1].replace(",", "")))
                    record.layer.setdefault("fits", False)
            elif record.layer.get("missing"):
                record.error = f"the zip lacks {', '.join(record.layer['missing'])} (exit 0)"
        finally:
            _remove(run)
        self.records.append(record)
        state = "ok" if record.ok else f"FAILED: {record.error}"
        print(
            f"bench: {'warm-up' if warmup else f'rep {rep}'} {contender:<11} "
            f"{record.seconds:8.2f} s  {state}",
            file=sys.stderr,
            flush=True,
        )
        return record

    def warm_up(self) -> None:
        """Untimed: pip's cache for the seed, uv's cache and the dependency cache for the rest."""
        if "seed" in self.contenders:
            self.run_one("seed", 0, warmup=True)
        if {"floor", "cli-uvwarm", "cli-warm", "cli-rebuild"} & set(self.contenders):
            self.run_one("floor", 0, warmup=True)
        if {"cli-warm", "cli-rebuild"} & set(self.contenders):
            self.run_one("cli-warm", 0, warmup=True)

    def run(self) -> None:
        self.warm_up()
        for rep in range(1, self.reps + 1):
            for contender in self.contenders:
                self.run_one(contender, rep)

    def imports(self) -> dict[str, dict[str, Any]]:
        figures = {}
        for contender in self.contenders:
            zip_path = self.layers / f"{contender}.zip"
            if not zip_path.is_file():
                continue
            print(f"bench: cold imports of {contender}'s layer", file=sys.stderr, flush=True)
            figures[contender] = cold_imports(
                zip_path, self.python, IMPORTS[self.fixture], self.import_runs, self.work
            )
        return figures


# --------------------------------------------------------------------------------------------
# Figures and the table


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def _median_by_key(dicts: list[dict[str, float]]) -> dict[str, float]:
    keys = sorted({k for d in dicts for k in d})
    return {k: statistics.median([d[k] for d in dicts if k in d]) for k in keys}


def summarise(
    records: list[RunRecord], contenders: Sequence[str], imports: dict
) -> dict[str, dict]:
    summary: dict[str, dict] = {}
    for contender in contenders:
        runs = [r for r in records if r.contender == contender and not r.warmup]
        good = [r for r in runs if r.ok]
        last = runs[-1] if runs else None
        phases = _median_by_key([r.report.get("timings") or {} for r in runs])
        progress = _median_by_key([r.progress for r in runs])
        summary[contender] = {
            "seconds": [r.seconds for r in runs],
            "median_seconds": _median([r.seconds for r in runs]),
            "succeeded": len(good),
            "runs": len(runs),
            "errors": sorted({r.error for r in runs if r.error}),
            "max_rss_kb": max((r.max_rss_kb for r in runs), default=None),
            "tree_pss_kb": max((r.tree_pss_kb for r in runs), default=None),
            "layer": last.layer if last else {},
            "phases": phases,
            "progress": progress,
            "bytecode": last.report.get("bytecode") if last else None,
            "imports": imports.get(contender, {}),
        }
    return summary


def _mb(size: int | None) -> str:
    return "–" if size is None else f"{size / 1e6:.1f} MB"


def _s(seconds: float | None, digits: int = 2) -> str:
    return "–" if seconds is None else f"{seconds:.{digits}f}"


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a and b else None


def _targets(summary: dict[str, dict]) -> list[tuple[str, str, str]]:
    """(target, figures, verdict) for the issue's targets.

    Figures of refused builds are shown (they stop just before writing the zip) but never count as
    met: a build that produces no layer proves nothing.
    """
    med = {c: s["median_seconds"] for c, s in summary.items()}
    failed = {c for c, s in summary.items() if s["succeeded"] < s["runs"]}
    rows = []

    def refused(label: str) -> bool:  # a label names one contender, or "a/b" for a ratio of two
        return any(c in failed for c in label.split("/"))

    def shown(c: str, text: str) -> str:
        return f"{c} {text}" + (" (no layer)" if refused(c) else "")

    def row(target: str, items: list[tuple[str, Any, str, bool | None]]) -> None:
        """items: (contender, figure, figure text, passes); figure None means not measured."""
        figures = (
            "; ".join(
                shown(c, text) if value is not None else f"{c} n/a" for c, value, text, _ in items
            )
            or "n/a"
        )
        known = [(c, ok) for c, value, _, ok in items if value is not None]
        if not known:
            verdict = "n/a"
        elif not all(ok for _, ok in known):
            verdict = "**not met**" if not any(ok for _, ok in known) else "partly"
        elif any(refused(c) for c, _ in known):
            verdict = "unproven: the builds were refused before writing a zip"
        else:
            verdict = "met"
        rows.append((target, figures, verdict))

    builds = [c for c in ("cli-uvwarm", "cli-cold") if c in summary]
    # A repeat build of an unchanged lock (the dependency cache) is what users run most.
    speed = [(c, _ratio(med.get("seed"), med[c])) for c in [*builds, "cli-warm"] if c in summary]
    row(
        "build ≥ 10× faster than the seed",
        [(c, r, f"{r:.1f}×" if r else "", bool(r and r >= 10)) for c, r in speed],
    )
    floor = [(c, _ratio(med[c], med.get("floor"))) for c in builds]
    row(
        "build within 1.3× of the floor",
        [(c, r, f"{r:.2f}×" if r else "", bool(r and r <= 1.3)) for c, r in floor],
    )
    rebuild = [
        (c, _ratio(med.get("cli-rebuild"), med[c])) for c in builds if "cli-rebuild" in summary
    ]
    row(
        "rebuild after own-code change ≤ 15 % of cold",
        [
            (f"cli-rebuild/{c}", r, f"{100 * r:.1f} %" if r else "", bool(r and r <= 0.15))
            for c, r in rebuild
        ],
    )
    cli = [c for c in CLI_CONTENDERS if c in summary]
    sizes = [(c, summary[c]["layer"].get("unzipped_bytes")) for c in cli]
    row(
        f"fits Lambda (≤ {MAX_UNZIPPED_BYTES:,} B unzipped)",
        [(c, b, f"{b:,} B" if b else "", bool(b and b <= MAX_UNZIPPED_BYTES)) for c, b in sizes],
    )
    imports = [(c, summary[c]["imports"]) for c in cli]
    speedups = [(c, _ratio(i.get("without_pyc"), i.get("with_pyc"))) for c, i in imports]
    row(
        "cold import ≥ 1.5× faster with .pyc",
        [(c, r, f"{r:.2f}×" if r else "", bool(r and r >= 1.5)) for c, r in speedups],
    )
    rss = [(c, summary[c]["max_rss_kb"], summary[c]["tree_pss_kb"]) for c in cli]
    row(
        "builder peak memory ≤ 300 MB",
        [
            (
                c,
                m,
                f"{m / 1024:.0f} MB max-process RSS, {p / 1024:.0f} MB tree PSS" if m else "",
                bool(m and max(m, p) / 1024 <= 300),
            )
            for c, m, p in rss
        ],
    )
    return rows


def _phase_table(title: str, key: str, summary: dict[str, dict], cli: list[str]) -> list[str]:
    phases = sorted({p for c in cli for p in summary[c][key]})
    if not phases:
        return []
    lines = ["", title, "", "| phase | " + " | ".join(cli) + " |", "|---|" + "---:|" * len(cli)]
    lines += [
        f"| {p} | " + " | ".join(_s(summary[c][key].get(p)) for c in cli) + " |" for p in phases
    ]
    lines.append(
        "| (wall, whole process) | "
        + " | ".join(_s(summary[c]["median_seconds"]) for c in cli)
        + " |"
    )
    return lines


def markdown(meta: dict[str, Any], summary: dict[str, dict]) -> str:
    seed, floor = (
        summary.get("seed", {}).get("median_seconds"),
        summary.get("floor", {}).get("median_seconds"),
    )
    lines = [
        (
            f"# Benchmark: {meta['fixture']} fixture ({meta['distributions']} locked distribution{'s' if meta['distributions'] != 1 else ''}), "
            f"{meta['reps']} repetition{'s' if meta['reps'] != 1 else ''}"
        ),
        "",
        (
            f"{meta['date']} · {meta['cpus']} CPUs, load {meta['load_before']} → {meta['load_after']} · "
            f"engine {meta['engine']} · target CPython {meta['target_python']} {meta['arch']} · "
            f"seed on host Python {meta['host_python']} ({meta['pip']}, {meta['pipenv']}) · {meta['uv']} · "
            f"cold import of {', '.join(meta['import_names'])}, median of {meta['import_runs']}"
        ),
        "",
        (
            "| contender | wall (median) | runs | × faster than seed | × floor | zipped | unzipped "
            "| fits | peak RSS (max process) | peak PSS (tree) | import with .pyc | import without .pyc "
            "| .pyc speed-up |"
        ),
        "|---|---:|---|---:|---:|---:|---:|:-:|---:|---:|---:|---:|---:|",
    ]
    for contender, s in summary.items():
        med, layer, imp = s["median_seconds"], s["layer"], s["imports"]
        failed = s["succeeded"] < s["runs"]
        fits = layer.get("fits")
        lines.append(
            " | ".join(
                [
                    f"| {contender}"
                    + (f" ⚠ {s['runs'] - s['succeeded']}/{s['runs']} failed" if failed else ""),
                    f"{_s(med)} s",
                    " / ".join(_s(x, 1) for x in s["seconds"]),
                    _s(_ratio(seed, med), 1) if contender != "seed" else "1.0",
                    _s(_ratio(med, floor), 2),
                    _mb(layer.get("zipped_bytes")),
                    _mb(layer.get("unzipped_bytes")),
                    "–" if fits is None else ("yes" if fits else "**no**"),
                    "–" if s["max_rss_kb"] is None else f"{s['max_rss_kb'] / 1024:.0f} MB",
                    "–" if s["tree_pss_kb"] is None else f"{s['tree_pss_kb'] / 1024:.0f} MB",
                    f"{_s(imp.get('with_pyc'))} s"
                    if imp.get("with_pyc")
                    else ("fails" if imp.get("errors") else "–"),
                    f"{_s(imp.get('without_pyc'))} s"
                    if imp.get("without_pyc")
                    else ("fails" if imp.get("errors") else "–"),
                    _s(_ratio(imp.get("without_pyc"), imp.get("with_pyc")), 2) + "×"
                    if imp.get("with_pyc") and imp.get("without_pyc")
                    else "–",
                ]
            )
            + " |"
        )
    lines += ["", "## Targets (issue 5)", "", "| target | figures | verdict |", "|---|---|---|"]
    lines += [f"| {t} | {f} | {v} |" for t, f, v in _targets(summary)]
    cli = [c for c in CLI_CONTENDERS if c in summary]
    lines += _phase_table(
        "## Where the CLI's time goes: phases from --report (median seconds)",
        "phases",
        summary,
        cli,
    )
    lines += _phase_table(
        "## Where the CLI's time goes: from each progress line to the next "
        "(median seconds; refused builds too)",
        "progress",
        summary,
        cli,
    )
    errors: dict[str, list[str]] = {}
    for contender, s in summary.items():
        for error in s["errors"]:
            errors.setdefault(error, []).append(contender)
        for label, error in s["imports"].get("errors", {}).items():
            errors.setdefault(f"cold import {label.replace('_', ' ')}: {error}", []).append(
                contender
            )
    notes = [f"- {', '.join(who)}: {error}" for error, who in errors.items()]
    notes += [
        f"- {c} bytecode: {json.dumps(summary[c]['bytecode'], sort_keys=True)}"
        for c in cli[:1]
        if summary[c].get("bytecode")
    ]
    if notes:
        lines += ["", "## Notes", "", *notes]
    lines += [
        "",
        (
            "Reproduce: `make bench` (or `.venv/bin/python -m bench.run --fixture "
            f"{meta['fixture']} --reps {meta['reps']}`); bench/README.md says what each contender does."
        ),
    ]
    return "\n".join(lines) + "\n"


def _load() -> str:
    return f"{os.getloadavg()[0]:.1f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.run", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--fixture", choices=sorted(FIXTURES), default="heavy")
    parser.add_argument(
        "--reps", type=int, default=3, help="timed repetitions per contender (default 3)"
    )
    parser.add_argument(
        "--contenders",
        default=",".join(CONTENDERS),
        help=f"comma-separated subset of {','.join(CONTENDERS)}",
    )
    parser.add_argument(
        "--import-runs", type=int, default=3, help="cold-import runs per layer variant"
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where the table and JSON go")
    parser.add_argument(
        "--work",
        type=Path,
        default=None,
        help="make the scratch directory in here (default: $TMPDIR)",
    )
    parser.add_argument(
        "--venv", type=Path, default=DEFAULT_VENV, help="venv with pipenv for the seed"
    )
    parser.add_argument(
        "--host-python",
        default=None,
        help="interpreter the seed runs on (default: python3 on PATH)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory")
    parser.add_argument(
        "--render",
        type=Path,
        default=None,
        metavar="JSON",
        help="only rewrite the table from the raw figures of an earlier run",
    )
    args = parser.parse_args(argv)
    if args.render is not None:
        raw = json.loads(args.render.read_text(encoding="utf-8"))
        return _write_table(raw["meta"], raw["summary"], args.out)
    contenders = tuple(c for c in CONTENDERS if c in args.contenders.split(","))
    unknown = set(args.contenders.split(",")) - set(CONTENDERS)
    if unknown or not contenders or args.reps < 1 or args.import_runs < 1:
        parser.error(
            f"bad --contenders/--reps/--import-runs ({', '.join(sorted(unknown)) or 'empty'})"
        )

    host = args.host_python or host_python()
    venv = ensure_bench_venv(args.venv, host) if "seed" in contenders else args.venv
    if args.work is not None:
        args.work.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="layer-bench-", dir=args.work))
    load_before = _load()
    try:
        bench = Bench(args.fixture, contenders, args.reps, args.import_runs, work, venv, host)
        bench.run()
        imports = bench.imports()
        meta = {
            "fixture": args.fixture,
            "reps": args.reps,
            "contenders": list(contenders),
            "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "cpus": os.cpu_count(),
            "load_before": load_before,
            "load_after": _load(),
            "engine": _git_state(),
            "target_python": _python_version(bench.python),
            "arch": bench.target.arch,
            "host_python": _python_version(host),
            "pip": _tool_version([str(venv / "bin" / "pip3"), "--version"]).split(" from ")[0]
            if "seed" in contenders
            else "–",
            "pipenv": _tool_version([str(venv / "bin" / "pipenv"), "--version"]).replace(
                ", version", ""
            )
            if "seed" in contenders
            else "–",
            "uv": _tool_version([bench.uv, "--version"]),
            "import_names": list(IMPORTS[args.fixture]),
            "import_runs": args.import_runs,
            "distributions": len(bench.expected),
        }
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    summary = summarise(bench.records, contenders, imports)
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    raw = {
        "meta": meta,
        "summary": summary,
        "records": [asdict(r) for r in bench.records],
        "targets": [{"target": t, "figures": f, "verdict": v} for t, f, v in _targets(summary)],
    }
    (args.out / f"{args.fixture}-{stamp}.json").write_text(
        json.dumps(raw, indent=2) + "\n", encoding="utf-8"
    )
    return _write_table(meta, summary, args.out)


def _write_table(meta: dict[str, Any], summary: dict[str, dict], out: Path) -> int:
    table = markdown(meta, summary)
    out.mkdir(parents=True, exist_ok=True)
    stem = "latest" if meta["fixture"] == "heavy" else f"latest-{meta['fixture']}"
    (out / f"{stem}.md").write_text(table, encoding="utf-8")
    if meta["fixture"] == "heavy" and out.resolve() == DEFAULT_OUT.resolve():
        _update_readme(table)
    print(table)
    return 0


def _update_readme(table: str) -> None:
    """Replace the table copied into bench/README.md, one heading level down."""
    text = README.read_text(encoding="utf-8")
    if README_MARK not in text:
        return
    shifted = "\n".join("##" + ln if ln.startswith("#") else ln for ln in table.splitlines())
    README.write_text(text.split(README_MARK)[0] + README_MARK + "\n" + shifted + "\n",
                      encoding="utf-8")


if __name__ == "__main__":
    sys.exit(main())
