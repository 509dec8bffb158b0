"""Hostile and broken archives, end to end: `layer-builder build` and the builder service refuse
them with one clear message naming the member, and leave nothing behind; valid variants build.

The hostile archives are tests/unit/test_unpack.py's table (REFUSALS, built in memory), run here
through the whole CLI instead of unpack() alone.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.unit.test_unpack import (  # noqa: F401 (small_limits is a fixture used by name)
    REFUSALS,
    E,
    small_limits,
    tar_bytes,
    write_pax_bomb,
    write_zip_listing,
    zip_bytes,
)

from .conftest import (
    PEAK_LIMIT_MB,
    CliRun,
    House,
    Sandbox,
    Service,
    archive_dir,
    pure_project,
    run_measuring_peak,
)
from .table import record

Build = Callable[[], bytes]


def refusal_names(message: str, filename: str, member: str | bytes | None, reason: str) -> None:
    assert message.startswith(filename), message
    if member is not None:
        assert f"member {member!r}" in message, message
    assert reason in message, message


@pytest.mark.usefixtures("small_limits")
@pytest.mark.parametrize(("filename", "build", "member", "reason"), REFUSALS)
def test_cli_refuses_hostile_archive_and_leaves_nothing(
        request: pytest.FixtureRequest, tmp_path: Path, sandbox: Sandbox,
        run_cli: Callable[..., CliRun], filename: str, build: Build, member: str | bytes | None,
        reason: str) -> None:
    archive = tmp_path / "upload" / filename
    archive.parent.mkdir()
    archive.write_bytes(build())
    run = run_cli(archive, "--report", str(sandbox.out / "report.json"))
    assert run.code == 2, run.stderr
    assert run.stderr.count("layer-builder: refused: ") == 1
    message = run.problem
    refusal_names(message, filename, member, reason)
    assert run.stdout == ""
    # What --report asked for: the refusal, the same words; then nothing else may be left.
    report = sandbox.out / "report.json"
    written = json.loads(report.read_text())
    assert written["status"] == "refused" and " ".join(written["error"]["message"].split()) == message
    report.unlink()
    assert sandbox.leftovers() == []
    case = request.node.callspec.id
    record(f"archive {case}", f"refused: {message}")


# Real limits, the installed console script, a real TMPDIR: the caps hold without monkeypatching.
BOMB = bytes(20 * 1024 * 1024)  # 20 MB of zeros deflates to ~20 kB: far past 200x


def zip_bomb() -> bytes:
    return zip_bytes(E("Pipfile", b"[packages]\n"), E("data/bomb.bin", BOMB))


def tar_bomb() -> bytes:
    return tar_bytes(E("Pipfile", b"[packages]\n"), E("data/bomb.bin", BOMB))


@pytest.mark.parametrize(("filename", "build", "member", "reason"), [
    pytest.param("bomb.zip", zip_bomb, "data/bomb.bin", "expands more than 200 times",
                 id="zip-bomb"),
    pytest.param("bomb.tar.gz", tar_bomb, "data/bomb.bin", "past 200 times its size",
                 id="tar-bomb"),
    pytest.param("evil.zip", lambda: zip_bytes(E("../../etc/cron.d/evil", b"* * * * * root x")),
                 "../../etc/cron.d/evil", "points outside", id="zip-traversal"),
    pytest.param("link.tgz", lambda: tar_bytes(E("Pipfile"), E("keys", kind="symlink",
                                                               link="/root/.aws/credentials")),
                 "keys", "is a symbolic link (to '/root/.aws/credentials')", id="tar-symlink"),
    pytest.param("project.zip", lambda: b"\x00" * 4096, None, "neither a zip nor a gzip",
                 id="garbage-named-zip"),
])
def test_console_script_refuses_with_real_limits(
        tmp_path: Path, sandbox: Sandbox, run_cli_process: Callable[..., CliRun], filename: str,
        build: Build, member: str | None, reason: str, request: pytest.FixtureRequest) -> None:
    archive = tmp_path / filename
    archive.write_bytes(build())
    run = run_cli_process(archive)
    assert run.code == 2, run.stderr
    message = run.problem
    refusal_names(message, filename, member, reason)
    assert sandbox.leftovers() == []
    record(f"archive {request.node.callspec.id} (real limits, console script)",
           f"refused: {message}")


# ---------------------------------------------------------------- the builder service


@pytest.mark.parametrize(("filename", "build", "member", "reason"), [
    pytest.param("evil.zip", lambda: zip_bytes(E("../evil.py")), "../evil.py", "points outside",
                 id="zip-traversal"),
    pytest.param("abs.tar.gz", lambda: tar_bytes(E("/etc/passwd")), "/etc/passwd", "absolute path",
                 id="tar-absolute"),
    pytest.param("link.tgz", lambda: tar_bytes(E("Pipfile"), E("hl", kind="hardlink",
                                                               link="/etc/shadow")),
                 "hl", "is a hard link", id="tar-hardlink"),
    pytest.param("dup.zip", lambda: zip_bytes(E("Pipfile"), E("./Pipfile")), "./Pipfile",
                 "duplicates", id="zip-duplicate"),
    pytest.param("bomb.zip", zip_bomb, "data/bomb.bin", "expands more than 200 times",
                 id="zip-bomb"),
    pytest.param("cut.tar.gz", lambda: tar_bytes(E("Pipfile", os.urandom(30_000)))[:-2000],
                 "Pipfile", "corrupt or truncated", id="tar-truncated"),
    pytest.param("empty.zip", lambda: zip_bytes(), None, "contains no files", id="zip-empty"),
])
def test_service_refuses_hostile_upload_and_changes_nothing(
        tmp_path: Path, sandbox: Sandbox, service: Service, filename: str, build: Build,
        member: str | None, reason: str, request: pytest.FixtureRequest) -> None:
    archive = tmp_path / filename
    archive.write_bytes(build())
    upload = service.upload(archive)
    before = service.state(upload)
    outcome = service.process(upload)
    message = service.assert_refused(upload, outcome, before)
    refusal_names(message, filename, member, reason)
    assert outcome.error["kind"] == "unsafe_archive"
    assert sandbox.leftovers() == []
    record(f"upload {request.node.callspec.id} (builder service)",
           f"refused, failure report written, nothing published: {message}")


# ---------------------------------------------------------------- valid variants keep working


def macos_junk(wrap: str) -> dict[str, bytes]:
    """What Finder's "Compress" adds: AppleDouble files under __MACOSX/ and next to the files."""
    return {f"__MACOSX/{wrap}/._Pipfile": b"\x00\x05\x16\x07junk",
            f"__MACOSX/{wrap}/app/._main.py": b"\x00\x05\x16\x07junk"}


VARIANTS = [
    # id, archive name, wrapping folder, own code, extra members
    ("zip-wrapping-folder", "svc-1.2.0.zip", "svc-main", True, None),
    ("tar.gz-wrapping-folder", "svc-1.2.0.tar.gz", "svc-main", True, None),
    ("tgz-flat", "svc-1.2.0.tgz", None, True, None),
    ("zip-flat", "svc-1.2.0.zip", None, True, None),
    ("dependencies-only", "deps-1.2.0.zip", "deps", False, None),
    ("macos-finder-zip", "svc-1.2.0.zip", "svc", True, macos_junk("svc")),
    ("tar.gz-content-named-zip", "svc-1.2.0.zip", None, True, "tar"),
]


@pytest.mark.parametrize(("name", "wrap", "own_code", "extra"),
                         [pytest.param(*v[1:], id=v[0]) for v in VARIANTS])
def test_valid_archive_variants_build(tmp_path: Path, sandbox: Sandbox, house: House,
                                      run_cli: Callable[..., CliRun], name: str, wrap: str | None,
                                      own_code: bool, extra: dict[str, bytes] | str | None,
                                      request: pytest.FixtureRequest) -> None:
    project = tmp_path / "project"
    pure_project(project, house, code=None if own_code else {})
    if extra == "tar":  # a .tar.gz someone named .zip: unpacked by its content, with a warning
        archive = archive_dir(project, tmp_path / "upload.tar.gz", wrap=wrap)
        archive = archive.rename(tmp_path / name)
    else:
        archive = archive_dir(project, tmp_path / name, wrap=wrap, extra=extra)
    report_path = sandbox.out / "report.json"
    run = run_cli(archive, "--index-url", house.url, "--report", str(report_path))
    assert run.code == 0, run.stderr
    report = json.loads(report_path.read_text())
    with zipfile.ZipFile(sandbox.out / "layer.zip") as zf:
        names = set(zf.namelist())
    assert "python/tinypure.py" in names
    assert report["layer_name"] == name.split("-1.2.0")[0] and report["layer_version"] == "1.2.0"
    assert report["own_packages"] == (["app"] if own_code else [])
    assert ("python/app/__init__.py" in names) is own_code
    assert not [n for n in names if "__MACOSX" in n or "/._" in n]
    if extra == "tar":
        assert any("content is tar.gz" in w for w in report["warnings"]), report["warnings"]
    if isinstance(extra, dict):
        assert any("macOS" in w for w in report["warnings"]), report["warnings"]
    assert [p.name for p in sandbox.tmp.iterdir()] == []
    variant = request.node.callspec.id
    warned = [w for w in report["warnings"] if "macOS" in w or "content is" in w]
    record(f"archive {variant} (valid)", "accepted: layer built, own packages "
           f"{report['own_packages'] or 'none'}" + (f"; warning: {warned[0]}" if warned else ""))


def test_single_member_tar_without_folder_entries_and_dot_prefix_builds(
        tmp_path: Path, sandbox: Sandbox, house: House, run_cli: Callable[..., CliRun]) -> None:
    # `tar czf p.tgz -C project .` writes "./" and "./Pipfile": the project is the root.
    project = tmp_path / "project"
    pure_project(project, house)
    archive = tmp_path / "dot.tgz"
    with tarfile.open(archive, "w:gz") as tf:
        tf.add(project, arcname=".")
    run = run_cli(archive, "--index-url", house.url)
    assert run.code == 0, run.stderr
    assert [p.name for p in sandbox.tmp.iterdir()] == []
    record("archive tar -C project . (valid)", "accepted: layer built from ./ members")


def test_zip_of_a_zip_is_refused_as_a_project_without_pipfile(
        tmp_path: Path, sandbox: Sandbox, house: House, run_cli: Callable[..., CliRun]) -> None:
    # People zip the zip. The inner archive is only a file: no Pipfile at the root, nothing runs.
    project = tmp_path / "project"
    pure_project(project, house)
    inner = archive_dir(project, tmp_path / "inner" / "svc.zip")
    outer = io.BytesIO()
    with zipfile.ZipFile(outer, "w") as zf:
        zf.write(inner, "svc.zip")
    archive = tmp_path / "svc-outer.zip"
    archive.write_bytes(outer.getvalue())
    run = run_cli(archive, "--index-url", house.url)
    assert run.code == 2, run.stderr
    message = run.problem
    assert "Pipfile not found at the project root" in message
    assert sandbox.leftovers() == []
    record("archive zip inside a zip", f"refused: {message}")


# ---------------------------------------------------------------- memory bombs (issue 9)

def zip_listing_bomb(path: Path, entries: int, **options: Any) -> None:
    with path.open("wb") as f:
        write_zip_listing(f, entries, **options)


def tar_header_bomb(path: Path, size: int) -> None:
    with path.open("wb") as f:
        write_pax_bomb(f, size)


MEMORY_BOMBS = [
    # zipfile.ZipFile() parses ~430 bytes per listed entry: a million cost ~450 MB before.
    pytest.param("listing.zip", lambda p: zip_listing_bomb(p, 1_000_000, zip64=True),
                 "the zip lists 1,000,000 members, past the limit of 20,000 members",
                 id="zip64-listing-1M-entries"),
    pytest.param("lying.zip", lambda p: zip_listing_bomb(p, 1_000_000, declared=10),
                 "(central directory) takes 47,000,000 bytes, past the limit of 16,777,216 bytes",
                 id="zip-listing-declares-10-lists-1M"),
    # tarfile reads a pax header whole: 60 MB in a 61 kB upload cost 240 MB (issue 9), 100 MB
    # cost ~400 MB, and both were accepted.
    pytest.param("pax60.tar.gz", lambda p: tar_header_bomb(p, 60_000_000),
                 "the tar headers before the first member take more than 1,048,576 bytes",
                 id="tar-pax-header-60MB"),
    pytest.param("pax100.tar.gz", lambda p: tar_header_bomb(p, 100_000_000),
                 "the tar headers before the first member take more than 1,048,576 bytes",
                 id="tar-pax-header-100MB"),
]


@pytest.mark.parametrize(("filename", "build", "reason"), MEMORY_BOMBS)
def test_memory_bombs_are_refused_within_bounded_memory(
        tmp_path: Path, sandbox: Sandbox, filename: str, build: Callable[[Path], None],
        reason: str, request: pytest.FixtureRequest) -> None:
    archive = tmp_path / filename
    build(archive)
    size = archive.stat().st_size
    run, peak = run_measuring_peak(["build", str(archive), "-o", str(sandbox.out / "layer.zip"),
                                    "--cache-dir", str(sandbox.cache)], sandbox)
    assert run.code == 2, run.stderr
    message = run.problem
    refusal_names(message, filename, None, reason)
    assert peak.builder < PEAK_LIMIT_MB, f"peak RSS {peak.builder:.0f} MB on {filename}"
    assert sandbox.leftovers() == []
    record(f"memory bomb {request.node.callspec.id} ({size:,} bytes uploaded)",
           f"refused at a peak of {peak.builder:.0f} MB (limit {PEAK_LIMIT_MB} MB): {message}")
