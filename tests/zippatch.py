"""Damage one member of a zip in place, for tests of readers that must not trust it."""

from __future__ import annotations

import struct
from pathlib import Path


def patch_member(path: Path, name: str, *, flags_or: int = 0, crc_xor: int = 0,
                 method: int | None = None, garble: bool = False) -> None:
    """Set flag bits (0x1: encrypted), flip CRC bits or change the compression method in both the
    local and the central header, or garble the member's data."""
    data = bytearray(path.read_bytes())
    end = data.rindex(b"PK\x05\x06")
    count, _, central = struct.unpack_from("<HII", data, end + 10)
    for _ in range(count):
        name_len, extra_len, comment_len = struct.unpack_from("<HHH", data, central + 28)
        if data[central + 46:central + 46 + name_len] == name.encode():
            local = struct.unpack_from("<I", data, central + 42)[0]
            for flags_at, crc_at in ((local + 6, local + 14), (central + 8, central + 16)):
                flags = struct.unpack_from("<H", data, flags_at)[0]
                struct.pack_into("<H", data, flags_at, flags | flags_or)
                crc = struct.unpack_from("<I", data, crc_at)[0]
                struct.pack_into("<I", data, crc_at, crc ^ crc_xor)
            if method is not None:
                struct.pack_into("<H", data, local + 8, method)
                struct.pack_into("<H", data, central + 10, method)
            if garble:  # 0xff starts a deflate block of the reserved type 3
                start = local + 30 + sum(struct.unpack_from("<HH", data, local + 26))
                data[start:start + 8] = b"\xff" * 8
            path.write_bytes(bytes(data))
            return
        central += 46 + name_len + extra_len + comment_len
    raise AssertionError(f"{name} is not in {path}")
