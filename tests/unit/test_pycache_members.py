"""pycache.member_bytes: a wheel member is inflated for compiling only up to its planned size,
and only kept when its size and CRC are the planned ones."""

from __future__ import annotations

import zipfile
import zlib

import pytest

from layer_builder.errors import UnsafeArchiveError
from layer_builder.pycache import member_bytes as _member_bytes
from layer_builder.wheel import Member, Plan

PLAN = Plan(name="liar", version="1.0", dist_info="liar-1.0.dist-info")


def deflated(data: bytes) -> bytes:
    packer = zlib.compressobj(6, zlib.DEFLATED, -15)
    return packer.compress(data) + packer.flush()


def member(data: bytes, size: int | None = None, crc: int | None = None) -> Member:
    return Member(
        "liar/mod.py",
        0,
        zipfile.ZIP_DEFLATED,
        0,
        len(data) if size is None else size,
        zlib.crc32(data) if crc is None else crc,
        "",
        False,
    )


def test_a_member_is_its_planned_bytes() -> None:
    source = b"X = 1\n" * 100
    assert _member_bytes(deflated(source), member(source), PLAN) == source


def test_a_member_inflating_past_its_planned_size_is_refused_without_inflating_it_all() -> None:
    bomb = deflated(bytes(64 * 1024 * 1024))  # 64 MiB of zeros in ~64 KB
    with pytest.raises(UnsafeArchiveError, match="liar 1.0: liar/mod.py does not hold"):
        _member_bytes(bomb, member(b"", size=10, crc=0), PLAN)


def test_a_member_with_another_crc_is_refused() -> None:
    source = b"X = 1\n"
    with pytest.raises(UnsafeArchiveError):
        _member_bytes(deflated(source), member(source, crc=zlib.crc32(b"other")), PLAN)
