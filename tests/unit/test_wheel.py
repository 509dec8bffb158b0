"""wheel.plan: what a wheel puts on /opt/python, decided from its member names, with a RECORD
that importlib.metadata reads; and members copied raw into a layer zip."""

from __future__ import annotations

import csv
import importlib.metadata
import io
import sys
import zipfile
from pathlib import Path

import pytest

from layer_builder import limits, wheel
from layer_builder.errors import InputError, UnsafeArchiveError
from layer_builder.zipwriter import DataEntry, RawEntry, write_zip
from tests.wheelhouse import write_wheel

FILES = {
    "demo/__init__.py": b"from demo.core import VALUE\n",
    "demo/core.py": b"VALUE = 42\n",
    "demo/tests/__init__.py": b"",
    "demo/tests/test_core.py": b"def test(): pass\n",
    "demo/_speed.c": b"int x;\n",
    "demo/py.typed": b"",
    "tests/__init__.py": b"",  # a top-level test package, as typish ships
    "demo-1.0.data/purelib/demo_extra.py": b"EXTRA = 1\n",
    "demo-1.0.data/platlib/demo_plat.py": b"PLAT = 1\n",
    "demo-1.0.data/scripts/demo-cli": b"#!python\n",
    "demo-1.0.data/headers/demo.h": b"int y;\n",
    "demo-1.0.data/data/share/demo.txt": b"data\n",
}


@pytest.fixture
def demo(tmp_path: Path) -> Path:
    return write_wheel(tmp_path / "wheels", "demo", "1.0", "py3-none-any", FILES).path


def test_members_are_mapped_as_an_install_would(demo):
    plan = wheel.plan(demo, python_version="3.13")
    shipped = {m.dest for m in plan.members} | set(plan.generated)
    assert shipped == {
        "demo/__init__.py", "demo/core.py", "demo/py.typed", "demo_extra.py", "demo_plat.py",
        "demo-1.0.dist-info/METADATA", "demo-1.0.dist-info/WHEEL", "demo-1.0.dist-info/RECORD",
        "demo-1.0.dist-info/INSTALLER", "demo-1.0.dist-info/REQUESTED"}
    assert plan.skipped == {
        "test suites inside packages": [2, len(b"def test(): pass\n")],
        "top-level test packages of dependencies": [1, 0],
        "C/C++ sources": [1, 7],
        "scripts (not importable)": [1, 9],
        "headers (not importable)": [1, 7],
        "data (not importable)": [1, 5],
    }
    assert plan.name == "demo" and plan.version == "1.0" and plan.top_level == ["demo", "demo_extra", "demo_plat"]
    assert plan.generated["demo-1.0.dist-info/INSTALLER"] == b"layer-builder\n"


def test_without_slimming_only_the_not_importable_schemes_are_left_out(demo):
    plan = wheel.plan(demo, python_version="3.13", slim_enabled=False)
    assert {"demo/tests/test_core.py", "tests/__init__.py", "demo/_speed.c"} <= {m.dest for m in plan.members}
    assert set(plan.skipped) == {"scripts (not importable)", "headers (not importable)", "data (not importable)"}


def test_the_layer_is_importable_and_importlib_metadata_reads_it(demo, tmp_path):
    plan = wheel.plan(demo, python_version="3.13")
    layer = tmp_path / "layer.zip"
    entries = [RawEntry("python/" + m.dest, demo, m.data_offset, m.compress_size, m.file_size,
                        m.crc, m.sha256, m.executable, m.compress_type) for m in plan.members]
    entries += [DataEntry("python/" + dest, data) for dest, data in plan.generated.items()]
    write_zip(layer, entries)
    with zipfile.ZipFile(layer) as zf:
        assert zf.testzip() is None
        zf.extractall(tmp_path / "opt")
    python_dir = tmp_path / "opt" / "python"
    dist = importlib.metadata.distribution("demo") if False else next(
        importlib.metadata.distributions(path=[str(python_dir)]))
    assert dist.metadata["Name"] == "demo" and dist.read_text("INSTALLER") == "layer-builder\n"
    rows = list(csv.reader(io.StringIO(dist.read_text("RECORD"))))
    listed = {r[0] for r in rows}
    on_disk = {p.relative_to(python_dir).as_posix() for p in python_dir.rglob("*") if p.is_file()}
    assert listed == on_disk, "RECORD lists exactly the shipped files"
    for path, digest, size in rows:
        if path.endswith("RECORD"):
            assert (digest, size) == ("", "")
        else:
            assert digest == wheel.record_hash((python_dir / path).read_bytes())
            assert int(size) == (python_dir / path).stat().st_size
    sys.path.insert(0, str(python_dir))
    try:
        import demo as imported  # noqa: PLC0415
        assert imported.VALUE == 42
    finally:
        sys.path.remove(str(python_dir))
        sys.modules.pop("demo", None)
        sys.modules.pop("demo.core", None)


def test_record_with_bytecode_lists_pycs_without_hash(demo):
    plan = wheel.plan(demo, python_version="3.13")
    text = wheel.with_bytecode(plan, {"demo/__pycache__/core.cpython-313.pyc": b"x"}).decode()
    assert "demo/__pycache__/core.cpython-313.pyc,,\n" in text
    assert "demo-1.0.dist-info/RECORD,,\n" in text


@pytest.mark.parametrize("name", ["../evil.py", "/abs.py", "demo/../../x.py", "a\\b.py", "C:/x.py",
                                  "demo//x.py", "./x.py"])
def test_unsafe_member_names_are_refused(tmp_path, name):
    bad = write_wheel(tmp_path, "bad", "1.0", "py3-none-any", {"bad/__init__.py": b"", name: b"x"}).path
    with pytest.raises(UnsafeArchiveError, match="outside the layer"):
        wheel.plan(bad, python_version="3.13")


def test_a_file_that_is_not_a_wheel_is_refused(tmp_path):
    (tmp_path / "x.whl").write_bytes(b"not a zip")
    with pytest.raises(InputError, match="not a readable wheel"):
        wheel.plan(tmp_path / "x.whl", python_version="3.13")


def test_plans_survive_the_cache_round_trip(demo):
    plan = wheel.plan(demo, python_version="3.13")
    assert wheel.Plan.from_json(plan.to_json()) == plan


def test_members_missing_from_record_are_hashed_from_their_bytes(tmp_path):
    path = write_wheel(tmp_path, "norec", "1.0", "py3-none-any", {"norec.py": b"A = 1\n"}).path
    rewritten = tmp_path / "out" / path.name
    rewritten.parent.mkdir()
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(rewritten, "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            if info.filename.endswith("RECORD"):
                data = b""  # a wheel whose RECORD lists nothing
            dst.writestr(info, data)
    plan = wheel.plan(rewritten, python_version="3.13")
    assert {m.dest: m.sha256 for m in plan.members}["norec.py"] == \
        __import__("hashlib").sha256(b"A = 1\n").hexdigest()


def test_a_wheel_listing_more_members_than_the_cap_is_refused_before_zipfile_reads_it(
        demo, monkeypatch):
    listed = len(zipfile.ZipFile(demo).infolist())
    monkeypatch.setattr(limits, "MAX_WHEEL_MEMBERS", listed - 1)

    def never(*args, **kwargs):
        raise AssertionError("zipfile parsed a listing past the cap")

    monkeypatch.setattr(zipfile, "ZipFile", never)
    with pytest.raises(UnsafeArchiveError) as caught:
        wheel.plan(demo, python_version="3.13", filename="demo-1.0-py3-none-any.whl")
    assert str(caught.value).startswith(
        f"demo-1.0-py3-none-any.whl: the zip lists {listed} members, past the limit of "
        f"{listed - 1} members: no real wheel holds that many files")
    assert caught.value.permanent


def test_a_wheel_at_the_member_cap_is_planned_and_messages_use_the_index_filename(
        demo, tmp_path, monkeypatch):
    monkeypatch.setattr(limits, "MAX_WHEEL_MEMBERS", len(zipfile.ZipFile(demo).infolist()))
    assert wheel.plan(demo, python_version="3.13").name == "demo"
    cached = tmp_path / "0123abcd.whl"  # the cache names wheels by sha256
    cached.write_bytes(b"not a zip")
    with pytest.raises(InputError, match=r"^demo-1\.0-py3-none-any\.whl is not a readable wheel"):
        wheel.plan(cached, python_version="3.13", filename="demo-1.0-py3-none-any.whl")


def test_wheels_listing_more_members_together_than_the_layer_cap_are_refused_by_name(
        tmp_path, monkeypatch):
    small = write_wheel(tmp_path, "small", "1.0", "py3-none-any", {"small.py": b""}).path
    big = write_wheel(tmp_path, "big", "1.0", "py3-none-any",
                      {f"big/m{n}.py": b"" for n in range(6)}).path
    wheels = [(small, "small-1.0-py3-none-any.whl"), (big, "big-1.0-py3-none-any.whl")]
    monkeypatch.setattr(limits, "MAX_LAYER_WHEEL_MEMBERS", 13)  # 4 + 9 members: at the cap
    wheel.check_listings(wheels)
    monkeypatch.setattr(limits, "MAX_LAYER_WHEEL_MEMBERS", 12)
    with pytest.raises(InputError, match=r"^The locked wheels list 13 members together, past the "
                       r"limit of 12 for one layer; the largest: big-1\.0-py3-none-any\.whl \(9\), "
                       r"small-1\.0-py3-none-any\.whl \(4\): drop or replace them\.$"):
        wheel.check_listings(wheels)
    monkeypatch.setattr(limits, "MAX_WHEEL_MEMBERS", 8)
    with pytest.raises(UnsafeArchiveError, match=r"^big-1\.0-py3-none-any\.whl: the zip lists 9 "):
        wheel.check_listings(wheels)
    (tmp_path / "cut.whl").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(InputError, match=r"^cut-1\.0-py3-none-any\.whl is not a readable wheel"):
        wheel.check_listings([(tmp_path / "cut.whl", "cut-1.0-py3-none-any.whl")])


def test_a_wheel_that_installs_one_path_twice_is_refused(tmp_path):
    # dup/x.py and dup-1.0.data/purelib/dup/x.py both land on python/dup/x.py: which one an
    # install keeps is undefined, and a stripped copy of one must never stand in for the other.
    made = write_wheel(tmp_path, "dup", "1.0", "py3-none-any",
                       {"dup/x.py": b"A = 1\n", "dup-1.0.data/purelib/dup/x.py": b"A = 2\n"})
    with pytest.raises(UnsafeArchiveError, match="installs dup/x.py twice"):
        wheel.plan(made.path, python_version="3.13")
