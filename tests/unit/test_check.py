"""layer_builder.check: binaries for the target machine, the size limit, own packages import."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from layer_builder import limits
from layer_builder.check import (
    check_binaries,
    check_size,
    elf_machine,
    is_shared_object,
    machine_name,
    runtime_provided_paths,
    tree_headers,
)
from layer_builder.errors import LayerTooLargeError, TargetMismatchError
from layer_builder.target import Target

EM_386, EM_X86_64, EM_AARCH64 = 3, 62, 183


def elf_header(machine: int, *, bits: int = 64, little: bool = True) -> bytes:
    """The start of an ELF shared object: e_ident, e_type (ET_DYN), e_machine, e_version."""
    ident = b"\x7fELF" + bytes([2 if bits == 64 else 1, 1 if little else 2, 1, 0]) + bytes(8)
    return ident + struct.pack("<HHI" if little else ">HHI", 3, machine, 1) + bytes(40)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (elf_header(EM_X86_64), EM_X86_64),
        (elf_header(EM_AARCH64), EM_AARCH64),
        (elf_header(EM_AARCH64, little=False), EM_AARCH64),
        (elf_header(EM_X86_64, little=False), EM_X86_64),
        (elf_header(EM_386, bits=32), EM_386),
        (elf_header(EM_X86_64)[:20], EM_X86_64),
        (elf_header(EM_X86_64)[:19], None),
        (b"MZ\x90\x00" + bytes(60), None),
        (b"\xcf\xfa\xed\xfe" + bytes(60), None),  # Mach-O
        (b"", None),
    ],
    ids=["x86_64", "aarch64", "aarch64-be", "x86_64-be", "i386-32bit", "exactly-20", "short",
         "pe", "macho", "empty"],
)
def test_elf_machine(header, expected):
    assert elf_machine(header) == expected


def test_big_endian_is_not_read_little_endian():
    # 183 big-endian is 0xB700 little-endian: reading the wrong order would give 46848.
    assert elf_machine(elf_header(EM_AARCH64, little=False)) != 0xB700


@pytest.mark.parametrize(("number", "name"), [
    (EM_X86_64, "x86_64"), (EM_AARCH64, "aarch64"), (None, "not ELF"), (40, "ELF machine 40"),
])
def test_machine_name(number, name):
    assert machine_name(number) == name


@pytest.mark.parametrize(("name", "expected"), [
    ("_ext.cpython-313-x86_64-linux-gnu.so", True), ("libfoo.so", True), ("libfoo.so.1", True),
    ("libgfortran.so.5.0.0", True), ("foo.so.py", False), ("foo.soname", False),
    ("foo.py", False), ("foo.so.1a", False),
])
def test_is_shared_object(name, expected):
    assert is_shared_object(name) is expected


def test_check_binaries_accepts_the_targets_machine():
    headers = [("a.so", elf_header(EM_X86_64)), ("b.so.1", elf_header(EM_X86_64))]
    assert check_binaries(headers, Target(arch="x86_64")) == 2
    assert check_binaries([("a.so", elf_header(EM_AARCH64))], Target(arch="arm64")) == 1
    assert check_binaries([], Target()) == 0


def test_aarch64_binary_in_an_x86_64_build_is_refused_by_name():
    headers = [("python/ok.so", elf_header(EM_X86_64)),
               ("python/numpy/_core/_multiarray.cpython-313-aarch64-linux-gnu.so", elf_header(EM_AARCH64))]
    with pytest.raises(TargetMismatchError) as caught:
        check_binaries(headers, Target(arch="x86_64"))
    message = str(caught.value)
    assert "1 binaries are not built for x86_64" in message
    assert "_multiarray.cpython-313-aarch64-linux-gnu.so (aarch64)" in message
    assert "python/ok.so" not in message


def test_x86_64_and_non_elf_binaries_in_an_arm64_build_are_refused():
    headers = [(f"lib{i}.so", elf_header(EM_X86_64)) for i in range(7)] + [("fake.so", b"text")]
    with pytest.raises(TargetMismatchError) as caught:
        check_binaries(headers, Target(arch="arm64"))
    message = str(caught.value)
    assert "8 binaries are not built for aarch64" in message
    assert "lib0.so (x86_64)" in message and "and 3 more" in message


def test_tree_headers_reads_shared_objects_only(tmp_path):
    (tmp_path / "pkg" / "sub").mkdir(parents=True)
    (tmp_path / "pkg" / "sub" / "_x.so").write_bytes(elf_header(EM_AARCH64))
    (tmp_path / "pkg" / "libz.so.1").write_bytes(elf_header(EM_X86_64))
    (tmp_path / "pkg" / "readme.txt").write_bytes(b"\x7fELF not a library")
    found = dict(tree_headers(tmp_path))
    assert found == {"pkg/sub/_x.so": elf_header(EM_AARCH64)[:20],
                     "pkg/libz.so.1": elf_header(EM_X86_64)[:20]}
    with pytest.raises(TargetMismatchError, match="pkg/sub/_x.so"):
        check_binaries(tree_headers(tmp_path), Target(arch="x86_64"))


# --- size -------------------------------------------------------------------------------------

def test_size_at_exactly_the_limit_passes():
    check_size(limits.MAX_UNZIPPED_BYTES, {"pandas": limits.MAX_UNZIPPED_BYTES})
    check_size(0, {})


def test_size_over_the_limit_names_the_biggest_packages():
    sizes = {f"small{i}": 1_000_000 + i for i in range(20)}
    sizes |= {"pyarrow": 120_000_000, "pandas": 70_000_000, "numpy": 40_000_000}
    total = limits.MAX_UNZIPPED_BYTES + 1
    with pytest.raises(LayerTooLargeError) as caught:
        check_size(total, sizes)
    message = str(caught.value)
    assert f"unzips to {total:,} bytes" in message and f"{limits.MAX_UNZIPPED_BYTES:,}" in message
    assert "Biggest: pyarrow 120.0 MB, pandas 70.0 MB, numpy 40.0 MB, small19 1.0 MB" in message
    shown = [name for name in sizes if f"{name} " in message]
    assert len(shown) == limits.TOP_PACKAGES_SHOWN
    assert "small0 " not in message  # the smallest are left out


def test_size_message_names_what_was_measured():
    with pytest.raises(LayerTooLargeError, match="^The function and its layers unzips"):
        check_size(limits.MAX_UNZIPPED_BYTES + 1, {"x": 1}, what="The function and its layers")


def test_a_layer_leaving_less_than_the_headroom_is_refused_naming_the_setting():
    fits = limits.MAX_UNZIPPED_BYTES - 5_000_000
    check_size(fits, {"big": fits}, headroom=5_000_000)  # exactly the headroom left
    with pytest.raises(LayerTooLargeError) as refused:
        check_size(fits + 1, {"pyarrow": 160_000_000, "numpy": 50_000_000}, headroom=5_000_000)
    message = str(refused.value)
    assert "less than the headroom of 5,000,000 bytes" in message
    assert "Biggest: pyarrow 160.0 MB, numpy 50.0 MB" in message
    assert "`headroom` in [tool.layer-builder]" in message


def test_check_machines_names_every_wrong_binary():
    from layer_builder.check import check_machines
    assert check_machines([("a.so", EM_X86_64)], Target()) == 1
    with pytest.raises(TargetMismatchError, match="b.so \\(aarch64\\), c.so \\(not ELF\\)"):
        check_machines([("a.so", EM_X86_64), ("b.so", EM_AARCH64), ("c.so", None)], Target())
