"""inspection.inspect_zip and `layer-builder inspect` on layer zips with members that cannot be read."""

from __future__ import annotations

import struct
import zipfile
from pathlib import Path

import pytest

from layer_builder import cli
from layer_builder.inspection import inspect_zip
from layer_builder.target import Target
from tests.zippatch import patch_member

EM_X86_64 = 62
NATIVE = "python/pkg/_speedups.cpython-313-x86_64-linux-gnu.so"
OTHER = "python/pkg/libz.so.1"
METADATA = "python/pkg-1.0.dist-info/METADATA"


def elf(machine: int) -> bytes:
    ident = b"\x7fELF" + bytes([2, 1, 1, 0]) + bytes(8)
    return ident + struct.pack("<HHI", 3, machine, 1) + bytes(4000)


def layer(tmp_path: Path) -> Path:
    path = tmp_path / "layer.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(NATIVE, elf(EM_X86_64))
        zf.writestr(OTHER, elf(EM_X86_64))
        zf.writestr("python/pkg/__init__.py", "VALUE = 1\n")
        zf.writestr(METADATA, "Metadata-Version: 2.1\nName: pkg\nVersion: 1.0\n")
    return path


DAMAGE = {
    "encrypted": {"flags_or": 0x1},           # RuntimeError: password required
    "corrupt": {"garble": True},              # zlib.error: invalid block type
    "unknown method": {"method": 99},         # NotImplementedError (AES, as 7-Zip writes)
}


@pytest.mark.parametrize("damage", list(DAMAGE), ids=list(DAMAGE))
def test_an_unreadable_shared_object_fails_the_target_check_by_name(tmp_path, damage):
    path = layer(tmp_path)
    patch_member(path, NATIVE, **DAMAGE[damage])
    for target in (Target(arch="x86_64"), None):
        result = inspect_zip(path, target)
        assert result["binaries"] == {"x86_64": 1, "unreadable": 1}
        assert result["target_ok"] is False
        assert NATIVE in result["target_check"] and OTHER not in result["target_check"]
        assert "cannot be read" in result["target_check"]
        assert result["unreadable"] == [NATIVE]
        assert result["files"] == 4 and result["fits"] is True


def test_an_unreadable_metadata_file_is_listed_not_raised(tmp_path):
    path = layer(tmp_path)
    patch_member(path, METADATA, flags_or=0x1)
    result = inspect_zip(path, Target(arch="x86_64"))
    assert result["unreadable"] == [METADATA]
    assert result["target_ok"] is True  # the binaries themselves are fine
    assert result["binaries"] == {"x86_64": 2}


def test_a_readable_layer_has_nothing_unreadable(tmp_path):
    result = inspect_zip(layer(tmp_path), None)
    assert result["unreadable"] == [] and "target_ok" not in result
    assert result["binaries"] == {"x86_64": 2}


@pytest.mark.parametrize("damage", list(DAMAGE), ids=list(DAMAGE))
def test_cli_inspect_exits_2_naming_the_member_without_a_traceback(tmp_path, capsys, damage):
    path = layer(tmp_path)
    patch_member(path, NATIVE, **DAMAGE[damage])
    assert cli.main(["inspect", str(path)]) == cli.EXIT_REFUSED
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err and err == ""
    naming = [line for line in out.splitlines() if NATIVE in line]
    assert len(naming) == 1 and naming[0].startswith("Target check: 1 shared objects cannot be read")
    assert "Binaries: 1 x86_64, 1 unreadable" in out
