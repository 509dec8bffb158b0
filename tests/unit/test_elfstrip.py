"""elfstrip: symbol tables out of real shared objects, which still load and link."""

from __future__ import annotations

import ctypes
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import wheelhouse
from layer_builder.elfstrip import strip_symbols, symbol_tail
from wheelhouse import MANY_C, section_names


def stripped_bytes(data: bytes) -> bytes:
    result = strip_symbols(data)
    assert result is not None
    return b"".join(bytes(piece) for piece in result.pieces())


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    built = wheelhouse.compile_shared_object(tmp_path_factory.mktemp("cc"), MANY_C)
    if built is None:
        pytest.skip("no C compiler (cc): these tests need a real shared object with symbols")
    return built


def test_the_symbol_table_goes_and_the_library_still_links(library: bytes, tmp_path: Path) -> None:
    assert ".symtab" in section_names(library)
    out = stripped_bytes(library)
    names = section_names(out)
    assert ".symtab" not in names and ".strtab" not in names
    assert {".dynsym", ".dynstr", ".text", ".shstrtab"} <= set(names)
    assert len(out) < len(library) - 16 * 1024
    path = tmp_path / "libmany.so"
    path.write_bytes(out)
    lib = ctypes.CDLL(str(path))  # the dynamic loader maps it and resolves exported symbols
    assert lib.tiny_add(2, 3) == 5
    assert lib.g599(10) == 10 * 599 + 1 - 599
    assert strip_symbols(out) is None, "nothing left to strip a second time"


def test_the_estimate_from_the_header_bounds_what_is_freed(library: bytes) -> None:
    freed = len(library) - len(stripped_bytes(library))
    estimate = symbol_tail(library[:4096], len(library))
    assert freed <= estimate < freed + 4096  # kept: .comment, .shstrtab and the section headers


def test_an_extension_module_still_imports(tmp_path: Path) -> None:
    import _json

    if not getattr(_json, "__file__", "").endswith(".so"):
        pytest.skip("this interpreter has _json built in: no extension module file to strip")
    original = Path(_json.__file__).read_bytes()
    if strip_symbols(original) is None:
        pytest.skip(f"{_json.__file__} has no symbol table to strip")
    (tmp_path / Path(_json.__file__).name).write_bytes(stripped_bytes(original))
    done = subprocess.run(
        [sys.executable, "-S", "-I", "-c",
         "import sys; sys.path.insert(0, sys.argv[1]); import _json; "
         "assert _json.__file__.startswith(sys.argv[1]); "
         "print(_json.encode_basestring_ascii('caf\\u00e9'))", str(tmp_path)],
        capture_output=True, text=True, timeout=60, check=False,
        env={"PATH": os.environ.get("PATH", "")})  # fmt: skip
    assert (done.returncode, done.stdout.strip()) == (0, '"caf\\u00e9"'), done.stderr


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda d: d + b"trailing data", id="unknown bytes after the sections"),
        pytest.param(lambda d: d[:60], id="truncated"),
        pytest.param(lambda d: b"\x7fELF" + bytes(60), id="not a shared object"),
        pytest.param(lambda d: b"#!/bin/sh\n" + d, id="not ELF"),
    ],
)
def test_anything_unusual_is_left_as_it_is(library: bytes, damage) -> None:
    assert strip_symbols(damage(library)) is None


def test_zero_padding_after_the_sections_is_no_reason_to_refuse(library: bytes) -> None:
    assert strip_symbols(library + bytes(64)) is not None


def test_a_section_that_points_at_the_symbol_table_keeps_it(library: bytes) -> None:
    names = section_names(library)
    (shoff,) = struct.unpack_from("<Q", library, 0x28)
    comment = names.index(".comment")
    data = bytearray(library)
    link_at = shoff + comment * 64 + 40  # sh_link of .comment
    struct.pack_into("<I", data, link_at, names.index(".symtab"))
    assert strip_symbols(bytes(data)) is None


def test_estimates_are_zero_for_what_is_not_a_shared_object() -> None:
    assert symbol_tail(b"not an ELF file at all" * 10, 220) == 0
    assert symbol_tail(b"\x7fELF" + bytes(100), 104) == 0


def with_section_field(data: bytes, section: str, field: int, value: int) -> bytes:
    """The file with one field of one section header changed (64-bit little-endian)."""
    names = section_names(data)
    (shoff,) = struct.unpack_from("<Q", data, 0x28)
    fmt = "<IIQQQQIIQQ"
    at = shoff + names.index(section) * 64
    fields = list(struct.unpack_from(fmt, data, at))
    fields[field] = value
    out = bytearray(data)
    struct.pack_into(fmt, out, at, *fields)
    return bytes(out)


@pytest.mark.parametrize(
    ("section", "field", "value"),
    [
        pytest.param(".symtab", 6, 999, id="symbol table linked to a section that is not there"),
        pytest.param(".comment", 6, 999, id="kept section linked past the last section"),
        pytest.param(".comment", 2, 0x40, id="info link flag with a bad index"),  # sh_info 0 ok
        pytest.param(".shstrtab", 1, 2, id="section names in a symbol table"),
        pytest.param(".comment", 8, 2**63, id="alignment that would grow the file"),
        pytest.param(".comment", 4, 0, id="kept section overlapping the ELF header"),
    ],
)
def test_hostile_section_headers_are_left_as_they_are(library: bytes, section, field, value):
    data = with_section_field(library, section, field, value)
    if field == 2:  # the flag alone is harmless; with a section index past the end it is not
        data = with_section_field(data, section, 7, 999)
    assert strip_symbols(data) is None


def test_overlapping_sections_after_the_segments_are_left_as_they_are(library: bytes) -> None:
    names = section_names(library)
    (shoff,) = struct.unpack_from("<Q", library, 0x28)
    symtab = struct.unpack_from("<IIQQQQIIQQ", library, shoff + names.index(".symtab") * 64)
    # .comment claims the symbol table's bytes too: copying it for every such section is how a
    # small file could be made to take gigabytes.
    data = with_section_field(library, ".comment", 4, symtab[4])
    data = with_section_field(data, ".comment", 5, symtab[5])
    assert strip_symbols(data) is None
