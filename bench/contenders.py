"""The contenders, side by side in one run, and what each one's run needs.

  seed       the seed blog's script (bench/seed_build.sh) on the host Python: `pipenv requirements`,
             `pip install --target`, `cp -R`, `zip -r`; pip's cache is warm (untimed warm-up run)
  cli-cold   `layer-builder build` with an empty --cache-dir: every wheel is downloaded
  cli-same   the same lock again, on a warm --cache-dir
  cli-bump   one small pin bumped (the fixture's BUMPS entry), on a cache warm for the old lock
  floor      the wheels' download time plus writing the zip (bench/floor.py): no slimming,
             checks or bytecode

Warm caches are hard-linked copies of one filled by an untimed build, made before each timed run,
so every timed run starts from the same state.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import plette
from layer_builder import fetch, lock, project
from layer_builder.bytecode import find_interpreter
from layer_builder.install import find_uv
from layer_builder.target import Target

from .measures import _remove, cold_imports, layer_figures, progress_segments, run_measured

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "bench"
SEED_SCRIPT = BENCH / "seed_build.sh"
FIXTURES = {
    "heavy": BENCH / "fixtures" / "heavy",
    "native": BENCH / "fixtures" / "native",
    "mixed": REPO / "tests" / "fixtures" / "projects" / "mixed",
    "emr": REPO / "examples" / "emr-launcher",
}
#: What a function using the layer imports first (the cold-start figure): every direct dependency
#: of the Pipfile's [packages] by its top-level module, then the own package.
IMPORTS = {
    "heavy": ("pandas", "pyarrow", "numpy", "pydantic", "yaml", "requests", "heavyapp"),
    "native": ("cryptography", "lxml", "orjson", "psycopg2", "nativeapp"),
    "mixed": ("six", "markupsafe", "mixedpkg"),
    "emr": ("yaml", "emrlauncher"),
}
#: The pin cli-bump changes: package → the version it is bumped to (a small package).
BUMPS = {"heavy": ("requests", "2.34.1"), "native": ("orjson", "3.12.0"), "mixed": ("six", "1.16.0")}
#: What the JSON keeps of each CLI --report.
REPORT_KEYS = ("timings", "dependency_cache", "bytecode", "slimmed", "warnings", "unzipped_bytes",
               "zipped_bytes", "installer", "peak_tmp_bytes", "room_left_bytes", "headroom",
               "downloaded_bytes", "checks")
CONTENDERS = ("seed", "cli-cold", "cli-same", "cli-bump", "floor")
CLI_CONTENDERS = ("cli-cold", "cli-same", "cli-bump")
#: Outside the repository: the venv's pip and pipenv name the public index's host in their code.
DEFAULT_VENV = (
    Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "layer-builder-bench" / "seed-venv"
)
_REFUSED_SIZE = re.compile(r"unzips to ([\d,]+) bytes")
#: Never copied into a run's project: caches and earlier outputs of the fixture.
_FIXTURE_IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", ".venv", "target", "*.zip")


def bump_pin(proj: Path, name: str, version: str) -> None:
    """What `pipenv lock` writes after one pin's version changes (its dependencies unchanged):
    the Pipfile's pin, the lock's entry with every file of the new release, the Pipfile hash."""
    pipfile = proj / "Pipfile"
    text = pipfile.read_text(encoding="utf-8")
    lines = [f'{name} = "=={version}"' if line.split("=")[0].strip().strip('"') == name else line
             for line in text.splitlines()]
    data = json.loads((proj / "Pipfile.lock").read_text(encoding="utf-8"))
    listed = fetch.IndexClient(os.environ).project_files(fetch.default_index(), name)
    entry = data["default"][name]
    entry["version"] = f"=={version}"
    entry["hashes"] = sorted(f"sha256:{f.sha256}" for f in listed if f.sha256 and (
        nv := fetch._version_of(f.filename)) and str(nv[1]) == version)
    pipfile.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pipfile.open(encoding="utf-8") as f:  # the hash as pipenv computes it (plette)
        data["_meta"]["hash"] = {"sha256": plette.Pipfile.load(f).get_hash().value}
    (proj / "Pipfile.lock").write_text(json.dumps(data, indent=4, sort_keys=True) + "\n",
                                       encoding="utf-8")


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
        self.warm_cache = self.work / "warm-cache"  # filled once (untimed), copied for each run
        self.layers = self.work / "layers"
        self.layers.mkdir(parents=True, exist_ok=True)
        self.env = clean_environment()
        self.index_url = public_index_url()
        self.records: list[RunRecord] = []
        if "cli-bump" in self.contenders and self.fixture not in BUMPS:
            raise SystemExit(f"bench: the {self.fixture} fixture has no pin to bump (BUMPS).")

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
            out = run / "floor.zip"
            return [sys.executable, "-m", "bench.floor", proj, out], REPO, env, out
        cache = run / "cache"
        if contender == "cli-cold":
            cache.mkdir()
        else:  # a hard-linked copy of the warm cache: each run starts from the same state
            subprocess.run(["cp", "-al", str(self.warm_cache), str(cache)], check=True)
        if contender == "cli-bump":
            bump_pin(proj, *BUMPS[self.fixture])
        out = run / "layer.zip"
        cmd = [*self.cli, "build", proj, "--output", out, "--cache-dir", cache,
               "--runtime", self.target.runtime, "--arch", self.target.arch,
               "--report", run / "report.json"]  # fmt: skip
        return cmd, run, env, out

    def run_one(self, contender: str, rep: int, warmup: bool = False) -> RunRecord:
        run = self.work / "runs" / f"{'warmup' if warmup else rep}-{contender}"
        proj = run / "project"
        shutil.copytree(self.source, proj, ignore=_FIXTURE_IGNORE)
        try:
            cmd, cwd, env, out = self._command(contender, run, proj, rep)
            log = run / "log.txt"
            # Untimed: what the previous contender (the seed writes ~380 MB) and the copy above
            # left for the kernel to write back is not charged to this one. Without it the heavy
            # cli-same measured 0.34-0.35 s in the full run and 0.19 s after cli-cold alone.
            os.sync()
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

    def compile_cli(self) -> None:
        """Untimed: the CLI as pip or pipx installs it, its modules byte-compiled (into a prefix
        under the scratch directory, so nothing is written into the checkout or the venv).

        A shell with PYTHONDONTWRITEBYTECODE=1 (as here) would otherwise make every run of the
        editable checkout compile its ~240 modules again: 0.18 s of a 0.4 s same-lock build.
        """
        self.env.pop("PYTHONDONTWRITEBYTECODE", None)
        self.env["PYTHONPYCACHEPREFIX"] = str(self.work / "cli-bytecode")
        modules = ("layer_builder.cli", "layer_builder.indexsession", "layer_builder.htmlreport",
                   "bench.floor")
        subprocess.run([sys.executable, "-c", "import " + ", ".join(modules)], env=self.env,
                       cwd=REPO, check=True)

    def warm_up(self) -> None:
        """Untimed: pip's cache for the seed; the warm dependency cache for cli-same/cli-bump."""
        if "seed" in self.contenders:
            self.run_one("seed", 0, warmup=True)
        if {"cli-same", "cli-bump"} & set(self.contenders):
            self.warm_cache.mkdir(parents=True)
            env = dict(self.env)
            done = subprocess.run([*self.cli, "build", self.source, "--output",
                                   self.work / "warm.zip", "--cache-dir", self.warm_cache],
                                  env=env, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                raise SystemExit(f"bench: the warm-up build failed: {done.stderr[-2000:]}")
            print("bench: warm-up build filled the dependency cache", file=sys.stderr, flush=True)

    def run(self) -> None:
        self.compile_cli()
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
