"""The `layer-builder` command as a user runs it: a real process, piped output, exit codes.

Refusals exit 2 with one `layer-builder: refused: …` line and leave nothing behind (no zip, no
.partial, no work dir in TMPDIR, no staging dir in the cache); transient failures exit 1.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from layer_builder.report import human
from lockfactory import fake_hashes, make_project

pytestmark = pytest.mark.network

CLI = Path(sys.executable).parent / "layer-builder"
MIXED = Path(__file__).parents[1] / "fixtures" / "projects" / "mixed"
DEFAULT_ZIP = "mixed-python3.13-x86_64.zip"
#: Phases a build that installs (a dependency-cache miss) reports timings for.
PHASES = {"unpack", "lock", "install", "package", "strip", "check", "bytecode", "zip"}


@dataclass(frozen=True)
class Run:
    returncode: int
    stdout: str
    stderr: str
    tmpdir: Path

    @property
    def messages(self) -> list[str]:
        """stderr lines that are the CLI's verdict (not progress)."""
        return [line for line in self.stderr.splitlines() if line.startswith("layer-builder:")]


def table(lines: list[str]) -> list[str]:
    """Package names of the "Largest packages:" rows (`  name   89.1 KB   52.1 %  ████▍`)."""
    rows = lines[lines.index("Largest packages:") + 1:]
    rows = rows[:next((i for i, row in enumerate(rows) if not row.startswith("  ")), len(rows))]
    names = [re.fullmatch(r"  (.+?) +[\d.]+ [KMG]?B +[\d.]+ %(  [^ ]+)?", row) for row in rows]
    assert all(names), rows
    return [m.group(1) for m in names]


def run_cli(*args: str | Path, cwd: Path, tmpdir: Path) -> Run:
    """The installed entry point, stdout and stderr piped, TMPDIR private so leftovers show."""
    assert CLI.is_file(), f"{CLI} is missing: install the project (make venv)"
    tmpdir.mkdir(parents=True, exist_ok=True)
    done = subprocess.run([str(CLI), *map(str, args)], cwd=cwd, env={**os.environ, "TMPDIR": str(tmpdir)},
                          capture_output=True, text=True, timeout=300, check=False)
    return Run(done.returncode, done.stdout, done.stderr, tmpdir)


def assert_nothing_left(run: Run, output: Path, cache: Path | None = None) -> None:
    assert not output.exists(), f"{output} was written by a failed build"
    assert not list(output.parent.glob(f".{output.name}*")), "a .partial file was left"
    assert not list(run.tmpdir.glob("layer-build-*")), "the work directory was left in TMPDIR"
    if cache is not None:
        assert not list(cache.rglob("*.part")), "a partial download was left in the cache"


@dataclass(frozen=True)
class Built:
    """One CLI build of the mixed project with the default output name and a report."""

    project: Path
    cwd: Path
    cache: Path
    run: Run
    zip: Path
    report: dict


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, make_cache_dir: Callable[[Path], Path]) -> Built:
    base = tmp_path_factory.mktemp("cli")
    project = Path(shutil.copytree(MIXED, base / "mixed"))
    cache = make_cache_dir(base / "cache")
    cwd = base / "work"
    cwd.mkdir()
    run = run_cli("build", project, "--cache-dir", cache, "--report", base / "report.json",
                  cwd=cwd, tmpdir=base / "tmp")
    assert run.returncode == 0, run.stderr
    return Built(project, cwd, cache, run, cwd / DEFAULT_ZIP,
                 json.loads((base / "report.json").read_text()))


# --- builds -------------------------------------------------------------------------------------

def test_default_output_is_named_after_the_project_runtime_and_arch(built: Built) -> None:
    assert sorted(p.name for p in built.cwd.iterdir()) == [DEFAULT_ZIP]
    assert zipfile.ZipFile(built.zip).testzip() is None
    assert not list(built.run.tmpdir.iterdir()), "the build left files in TMPDIR"


def test_piped_output_is_plain_lines_ending_with_the_summary(built: Built) -> None:
    run = built.run
    assert "\r" not in run.stdout + run.stderr and "\x1b" not in run.stdout + run.stderr
    progress = run.stderr.splitlines()
    assert progress and all(re.match(r"^\[\d+\.\d+s\] \S", line) for line in progress), progress
    assert any("Fetching 2 locked packages" in line for line in progress)
    writing = [line for line in progress if "Writing the layer zip (" in line]
    assert writing and " of " in writing[0] and writing[0].endswith("B)"), progress  # bytes

    report = built.report
    lines = run.stdout.rstrip("\n").splitlines()
    assert lines[0] == "Built layer mixed"
    assert lines[1] == "  target     python3.13 x86_64 (x86_64-manylinux_2_34)"
    assert lines[2] == f"  zip        {DEFAULT_ZIP} ({human(built.zip.stat().st_size)})"  # as named
    assert lines[3].startswith(f"  unzipped   {human(report['unzipped_bytes'])} of 262.1 MB allowed, ")
    assert f"content    sha256:{report['content_hash']}" in run.stdout
    assert table(lines) == list(report["sizes"])
    assert table(lines)[:2] == ["MarkupSafe", "six"] and "mixedpkg (own)" in table(lines)


def test_summary_draws_the_limit_and_a_bar_per_package(built: Built) -> None:
    lines = built.run.stdout.splitlines()
    assert lines[4].startswith("  limit      [") and "% of Lambda's 262.1 MB;" in lines[4]
    rows = lines[lines.index("Largest packages:") + 1:]
    bars = [len(row.split(" %  ", 1)[1]) if " %  " in row else 0 for row in rows]
    assert bars[0] == max(bars) > 0  # the largest package has the longest bar


def test_the_report_has_an_html_picture_beside_it(built: Built) -> None:
    page = (built.cwd.parent / "report.html").read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>") and "<title>Layer mixed" in page
    assert 'data-package="MarkupSafe"' in page and 'data-package="mixedpkg (own)"' in page


def test_usage_errors_exit_64_and_the_environment_stands_for_flags(built: Built,
                                                                     tmp_path: Path) -> None:
    run = run_cli("build", built.project, "--arch", "sparc", cwd=tmp_path, tmpdir=tmp_path / "tmp")
    assert run.returncode == 64 and "invalid choice: 'sparc'" in run.stderr and run.stdout == ""
    env = {**os.environ, "TMPDIR": str(tmp_path), "LAYER_BUILDER_CACHE_DIR": str(built.cache),
           "LAYER_BUILDER_OUTPUT": str(tmp_path / "env.zip"), "LAYER_BUILDER_QUIET": "1"}
    done = subprocess.run([str(CLI), "build", str(built.project)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""  # -q: no progress
    assert done.stdout.splitlines() == [f"Built layer mixed: {tmp_path / 'env.zip'} ("
                                        f"{human(built.report['zipped_bytes'])} zipped, "
                                        f"{human(built.report['unzipped_bytes'])} unzipped)"]
    assert (tmp_path / "env.zip").read_bytes() == built.zip.read_bytes()  # from the env's cache


def test_report_has_timings_sizes_warnings_and_the_content_hash(built: Built) -> None:
    report = built.report
    assert set(report["timings"]) == PHASES
    assert all(isinstance(v, float) and v >= 0 for v in report["timings"].values())
    with zipfile.ZipFile(built.zip) as zf:
        manifest = json.loads(zf.read("python/.layer-builder.json"))
        unzipped = sum(i.file_size for i in zf.infolist())
        files = len(zf.infolist())
    assert report["content_hash"] == manifest["content_hash"]
    assert (report["zipped_bytes"], report["unzipped_bytes"], report["files"]) == (
        built.zip.stat().st_size, unzipped, files)
    assert sum(report["sizes"].values()) == unzipped
    assert {"MarkupSafe", "six", "mixedpkg (own)", "mixedutil (own)"} <= set(report["sizes"])
    assert report["warnings"] == []
    assert report["dependency_cache"] == "miss"
    assert (report["layer_name"], report["runtime"], report["arch"]) == ("mixed", "python3.13", "x86_64")


def test_json_prints_the_report_on_stdout(built: Built, tmp_path: Path) -> None:
    output = tmp_path / "again.zip"
    report_file = tmp_path / "reports" / "report.json"  # a directory that does not exist yet
    run = run_cli("build", built.project, "--cache-dir", built.cache, "-o", output, "--json",
                  "--report", report_file, cwd=tmp_path, tmpdir=tmp_path / "tmp")
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    assert json.loads(report_file.read_text()) == report
    assert report["dependency_cache"] == "hit"
    assert report["content_hash"] == built.report["content_hash"]
    assert output.read_bytes() == built.zip.read_bytes()


def test_build_dot_names_the_layer_after_the_directory(built: Built, tmp_path: Path) -> None:
    project = Path(shutil.copytree(built.project, tmp_path / "mixed"))
    run = run_cli("build", ".", "--cache-dir", built.cache, cwd=project, tmpdir=tmp_path / "tmp")
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("Built layer mixed\n")
    assert (project / DEFAULT_ZIP).read_bytes() == built.zip.read_bytes()


def _archive(project: Path, out: Path, root: str) -> Path:
    """The project inside a wrapping folder, as `zip -r` or `tar czf` of its parent would do."""
    files = sorted(p for p in project.rglob("*") if p.is_file())
    if out.name.endswith(".zip"):
        with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
            for path in files:
                zf.write(path, f"{root}/{path.relative_to(project).as_posix()}")
    else:
        with tarfile.open(out, "w:gz") as tf:
            tf.add(project, arcname=root)
    return out


@pytest.mark.parametrize("suffix", [".zip", ".tar.gz"])
def test_archive_builds_like_the_directory(built: Built, tmp_path: Path, suffix: str) -> None:
    archive = _archive(built.project, tmp_path / f"mixed-1.2.0{suffix}", "mixed-1.2.0")
    run = run_cli("build", archive, "--cache-dir", built.cache, "--json", cwd=tmp_path,
                  tmpdir=tmp_path / "tmp")
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    assert report["content_hash"] == built.report["content_hash"]
    assert (report["layer_name"], report["layer_version"]) == ("mixed", "1.2.0")
    assert (tmp_path / "mixed-1.2.0-python3.13-x86_64.zip").is_file()
    assert not list((tmp_path / "tmp").iterdir())


# --- inspect ------------------------------------------------------------------------------------

def test_inspect_prints_the_breakdown(built: Built, tmp_path: Path) -> None:
    run = run_cli("inspect", built.zip, "--arch", "x86_64", cwd=tmp_path, tmpdir=tmp_path / "tmp")
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert lines[0].startswith(f"{built.zip}: {built.report['files']} files, ")
    assert "(fits Lambda's 262.1 MB)" in lines[0]
    assert "Binaries: 1 x86_64" in lines
    assert "Target check: ok for x86_64" in lines
    assert table(lines)[:2] == ["MarkupSafe", "six"]

    as_json = run_cli("inspect", built.zip, "--json", cwd=tmp_path, tmpdir=tmp_path / "tmp")
    assert as_json.returncode == 0
    result = json.loads(as_json.stdout)
    assert result["binaries"] == {"x86_64": 1} and result["outside_python_dir"] == []
    assert result["unzipped_bytes"] == built.report["unzipped_bytes"]


def test_inspect_for_the_wrong_arch_exits_2(built: Built, tmp_path: Path) -> None:
    run = run_cli("inspect", built.zip, "--arch", "arm64", cwd=tmp_path, tmpdir=tmp_path / "tmp")
    assert run.returncode == 2
    assert "Traceback" not in run.stderr
    assert re.search(r"^Target check: 1 binaries are not built for aarch64: "
                     r"python/markupsafe/_speedups\.cpython-313-x86_64-linux-gnu\.so \(x86_64\)",
                     run.stdout, re.M), run.stdout


# --- refusals and failures ----------------------------------------------------------------------

def _tampered_hash(project: Path, tmp_path: Path) -> Path:
    lock = json.loads((project / "Pipfile.lock").read_text())
    six = lock["default"]["six"]
    six["hashes"] = [h[:-1] + ("1" if h[-1] == "0" else "0") for h in six["hashes"]]
    (project / "Pipfile.lock").write_text(json.dumps(lock, indent=4))
    return project


def _stale_lock(project: Path, tmp_path: Path) -> Path:
    pipfile = project / "Pipfile"
    pipfile.write_text(pipfile.read_text().replace('six = "==1.17.0"', 'six = "==1.16.0"'))
    return project


def _missing_lock(project: Path, tmp_path: Path) -> Path:
    (project / "Pipfile.lock").unlink()
    return project


def _sdist_only(project: Path, tmp_path: Path) -> Path:
    # pyyaml 5.2 ships an sdist and Windows wheels only: the lock holds their real hashes (the
    # cp38 wheels and the sdist here), and nothing is downloaded.
    hashes = ["sha256:8100c896ecb361794d8bfdb9c11fce618c7cf83d624d73d5ab38aef3bc82d43f",
              "sha256:2e9f0b7c5914367b0916c3c104a024bb68f269a486b9d04a2e8ac6f6597b7803",
              "sha256:c0ee8eca2c582d29c3c2ec6e2c4f703d1b7f1fb10bc72317355a746057e7346c"]
    entry = {"version": "==5.2", "hashes": hashes, "index": "pypi"}
    return make_project(tmp_path / "sdistonly", {"pyyaml": entry}).root


UNKNOWN = "layer-builder-test-no-such-package-7f3a9c"


def _unknown_package(project: Path, tmp_path: Path) -> Path:
    name = UNKNOWN
    entry = {"version": "==1.0.0", "hashes": fake_hashes(name, "1.0.0"), "index": "pypi"}
    return make_project(tmp_path / "unknown", {name: entry}).root


REFUSALS = {
    "tampered-hash": (_tampered_hash, "six==1.17.0 does not match the hashes in Pipfile.lock"),
    "stale-lock": (_stale_lock, "Pipfile.lock is out of date with the Pipfile"),
    "missing-lock": (_missing_lock, "Pipfile.lock not found next to the Pipfile"),
    "sdist-only": (_sdist_only, "No wheel of pyyaml==5.2 for python3.13/x86_64 (manylinux_2_34). "
                               "pyyaml==5.2 has wheels only for other targets (cp38 win32; cp38 "
                               "win_amd64) and an sdist: allow building it from source "
                               "(--allow-sdist pyyaml / AllowSdist)"),
    "unknown-package": (_unknown_package, f"{UNKNOWN}==1.0.0 was not found on the package index"),
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_refusal_exits_2_with_one_line_and_leaves_nothing(
        case: str, mixed_project: Path, tmp_path: Path, cache_dir: Path) -> None:
    make, expected = REFUSALS[case]
    source = make(mixed_project, tmp_path)
    output = tmp_path / "out" / "layer.zip"
    run = run_cli("build", source, "-o", output, "--cache-dir", cache_dir, cwd=tmp_path,
                  tmpdir=tmp_path / "tmp")
    assert run.returncode == 2, run.stderr
    assert "Traceback" not in run.stderr
    assert run.stdout == ""
    assert len(run.messages) == 1 and run.stderr.rstrip("\n").splitlines()[-1] == run.messages[0]
    assert run.messages[0].startswith(f"layer-builder: refused: {expected}"), run.messages
    assert_nothing_left(run, output, cache_dir)
    # Verified wheels may stay in the per-wheel cache; nothing partial does.
    assert not list(cache_dir.rglob("*.part")), "a refused build left partial files"


def test_unreachable_index_exits_1_without_traceback(mixed_project: Path, tmp_path: Path,
                                                     cache_dir: Path) -> None:
    output = tmp_path / "out" / "layer.zip"
    # Port 9 (discard) on loopback: nothing listens, the connection is refused at once.
    run = run_cli("build", mixed_project, "-o", output, "--cache-dir", cache_dir,
                  "--index-url", "http://127.0.0.1:9/simple", cwd=tmp_path, tmpdir=tmp_path / "tmp")
    assert run.returncode == 1, run.stderr
    assert "Traceback" not in run.stderr and run.stdout == ""
    assert len(run.messages) == 1
    assert run.messages[0].startswith(
        "layer-builder: failed: The package index could not be reached (will retry)")
    assert "127.0.0.1:9" in run.stderr
    assert_nothing_left(run, output, cache_dir)
