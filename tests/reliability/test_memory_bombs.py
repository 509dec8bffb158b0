"""Memory bombs past the upload caps (issue 9): a project file, a pinned wheel or an own source
that is small to send but huge to parse or compile. The builder refuses (or ships without
bytecode) at a peak under PEAK_LIMIT_MB, its own and that of every process it starts, measured.

Before the caps, each case here failed (measured with these tests' own bombs, peak RSS): the
30 MB lock took the builder to 782 MB, the 12 MB Pipfile to 7,568 MB (tomllib, then plette's
tomlkit), the 12 MB pyproject.toml to 336 MB; the wheel listing 300,000 members to 497 MB, four
wheels of 60,000 members each (each under the one-wheel cap) to 351 MB; the bytecode compiler to
4,739 MB on the 12 MB module of `x=1` lines and to 1,193 MB on the 3 MB one.
"""

from __future__ import annotations

import json
import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import pytest
import wheelhouse
from lockfactory import make_project
from wheelhouse import Wheel, lock_entry, write_code

from layer_builder import limits

from .conftest import APP, PEAK_LIMIT_MB, House, Sandbox, pure_project, run_measuring_peak
from .table import record

MB = 1_000_000


def json_bomb(path: Path, size: int) -> None:
    """A lock-shaped JSON document whose `x` is `size` bytes of empty lists: ~24 bytes of memory
    per byte once parsed."""
    head, tail = '{"_meta": {}, "default": {}, "x": [', "[]]}"
    path.write_text(head + "[]," * ((size - len(head) - len(tail)) // 3) + tail)


def toml_bomb(path: Path, size: int, before: str = "") -> None:
    path.write_text(before + "x = [" + "[]," * ((size - len(before) - 6) // 3) + "[]]\n")


PROJECT_FILE_BOMBS = [
    pytest.param("Pipfile.lock", lambda p: json_bomb(p, 30 * MB), id="lock-30MB"),
    pytest.param("Pipfile", lambda p: toml_bomb(p, 12 * MB, p.read_text()), id="pipfile-12MB"),
    pytest.param("pyproject.toml", lambda p: toml_bomb(p, 12 * MB), id="pyproject-12MB"),
]


@pytest.mark.parametrize(("name", "inflate"), PROJECT_FILE_BOMBS)
def test_huge_project_file_is_refused_before_it_is_parsed(
        tmp_path: Path, sandbox: Sandbox, house: House, name: str,
        inflate: Callable[[Path], None], request: pytest.FixtureRequest) -> None:
    project = tmp_path / "project"
    pure_project(project, house)
    inflate(project / name)
    size = (project / name).stat().st_size
    run, peak = run_measuring_peak(["build", str(project), "--index-url", house.url,
                                    "-o", str(sandbox.out / "layer.zip"),
                                    "--cache-dir", str(sandbox.cache)], sandbox)
    assert run.code == 2, run.stderr
    message = run.problem
    assert message.startswith(f"{name} is {size:,} bytes, past the limit of "
                              f"{limits.MAX_PROJECT_FILE_BYTES:,} bytes"), message
    assert peak.builder < PEAK_LIMIT_MB, f"peak RSS {peak.builder:.0f} MB on a {size:,}-byte {name}"
    assert sandbox.leftovers() == []
    record(f"memory bomb {request.node.callspec.id} ({size:,}-byte {name})",
           f"refused at a peak of {peak.builder:.0f} MB (limit {PEAK_LIMIT_MB} MB): {message}")


def write_wheel_listing_bomb(dest: Path, members: int, name: str = "bomb") -> Wheel:
    """NAME-1.0, a valid wheel (METADATA, WHEEL) plus `members` empty modules: small to lock and
    download (~95 bytes per member), parsed at ~1.5 kB per member. Written record by record, so
    the test never holds the listing as zipfile objects."""
    dest.mkdir(parents=True, exist_ok=True)
    path = dest / f"{name}-1.0-py3-none-any.whl"
    info = f"{name}-1.0.dist-info"
    files = [(f"{info}/METADATA", f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n".encode()),
             (f"{info}/WHEEL", b"Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n")]
    central = bytearray()
    with path.open("wb") as f:
        for member, data in [*files, *((f"{name}/m{i:x}.py", b"") for i in range(members))]:
            raw, crc, offset = member.encode(), zlib.crc32(data), f.tell()
            f.write(struct.pack("<4s5H3L2H", b"PK\x03\x04", 20, 0, 0, 0, 0, crc, len(data),
                                len(data), len(raw), 0) + raw + data)
            central += struct.pack("<4s6H3L5H2L", b"PK\x01\x02", 20, 20, 0, 0, 0, 0, crc, len(data),
                                   len(data), len(raw), 0, 0, 0, 0, 0o644 << 16, offset) + raw
        start, count = f.tell(), members + len(files)
        f.write(central)
        f.write(struct.pack("<4sQ2H2L4Q", b"PK\x06\x06", 44, 45, 45, 0, 0, count, count,
                            len(central), start))
        f.write(struct.pack("<4sLQL", b"PK\x06\x07", 0, start + len(central), 1))
        f.write(struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, 0xFFFF, 0xFFFF, 0xFFFFFFFF,
                            0xFFFFFFFF, 0))
    return Wheel(name, "1.0", path)


WHEEL_BOMBS = [
    # One wheel: refused by its own listing (MAX_WHEEL_MEMBERS).
    pytest.param(1, 300_000, "bomb0-1.0-py3-none-any.whl: the zip lists 300,002 members, past the "
                 "limit of 65,535 members: no real wheel holds that many files", id="one-300k"),
    # Four wheels, each under that cap, planned four at once: refused by their sum
    # (MAX_LAYER_WHEEL_MEMBERS) before any is parsed; tinypure adds its 4.
    pytest.param(4, 60_000, "The locked wheels list 240,012 members together, past the limit of "
                 "100,000 for one layer", id="four-60k"),
]


@pytest.mark.parametrize(("count", "members", "reason"), WHEEL_BOMBS)
def test_pinned_wheels_with_huge_listings_are_refused_before_they_are_parsed(
        tmp_path: Path, sandbox: Sandbox, house: House, count: int, members: int, reason: str,
        request: pytest.FixtureRequest) -> None:
    bombs = [write_wheel_listing_bomb(tmp_path / "wheels", members, f"bomb{n}") for n in range(count)]
    index = wheelhouse.simple_index(tmp_path / "index", [house.pure, *bombs]).as_uri()
    project = tmp_path / "project"
    make_project(project, {"tinypure": lock_entry(house.pure), **{b.name: lock_entry(b) for b in bombs}})
    write_code(project, APP)
    size = sum(b.path.stat().st_size for b in bombs)
    run, peak = run_measuring_peak(["build", str(project), "--index-url", index,
                                    "-o", str(sandbox.out / "layer.zip"),
                                    "--cache-dir", str(sandbox.cache)], sandbox)
    assert run.code == 2, run.stderr
    message = run.problem
    assert message.startswith(reason), message
    assert "pin another version" in message or "drop or replace them" in message
    assert peak.builder < PEAK_LIMIT_MB, f"peak RSS {peak.builder:.0f} MB on {size:,} bytes of wheels"
    assert sandbox.leftovers() == []
    record(f"memory bomb wheel listings {request.node.callspec.id} ({count} pinned wheels, "
           f"{size:,} bytes)",
           f"refused at a peak of {peak.builder:.0f} MB (limit {PEAK_LIMIT_MB} MB): {message}")


SOURCE_BOMBS = [
    # Past MAX_COMPILE_SOURCE_BYTES: never compiled.
    pytest.param(12 * MB, "is 12,000,000 bytes, past the limit of", id="source-12MB"),
    # Under it, but compiling it needs ~1.2 GB: the compiler's address-space cap stops it.
    pytest.param(3 * MB, "1 source files do not compile", id="source-3MB-over-memory-cap"),
]


@pytest.mark.parametrize(("size", "warning"), SOURCE_BOMBS)
def test_huge_own_source_ships_without_bytecode_within_bounded_memory(
        tmp_path: Path, sandbox: Sandbox, house: House, size: int, warning: str,
        request: pytest.FixtureRequest) -> None:
    project = tmp_path / "project"
    pure_project(project, house)
    (project / "app" / "table.py").write_text("x=1\n" * (size // 4))
    report_path = sandbox.out / "report.json"
    run, peak = run_measuring_peak(["build", str(project), "--index-url", house.url,
                                    "-o", str(sandbox.out / "layer.zip"), "--report",
                                    str(report_path), "--cache-dir", str(sandbox.cache)], sandbox)
    assert run.code == 0, run.stderr
    report = json.loads(report_path.read_text())
    warned = [w for w in report["warnings"] if "app/table.py" in w]
    assert len(warned) == 1 and warning in warned[0], report["warnings"]
    assert "without bytecode" in warned[0]
    assert report["bytecode"]["kept"] > 0  # the rest of the layer still has its bytecode
    assert peak.builder < PEAK_LIMIT_MB, f"builder peak RSS {peak.builder:.0f} MB"
    assert peak.child < PEAK_LIMIT_MB, f"compiler (largest child) peak RSS {peak.child:.0f} MB"
    record(f"memory bomb {request.node.callspec.id} (own module of x=1 lines)",
           f"survived: layer built, that module without bytecode, at peaks of {peak.builder:.0f} MB (builder) and "
           f"{peak.child:.0f} MB (largest child; limit {PEAK_LIMIT_MB} MB): {warned[0]}")
