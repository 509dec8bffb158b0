"""extract.extract_layer: the parallel unzip a check runs on (the CLI's sandbox, the check function)."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import pytest

from layer_builder import extract
from layer_builder.extract import LayerZipError, extract_layer


def tree(root: Path) -> dict[str, bytes | None]:
    return {
        str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None)
        for p in sorted(root.rglob("*"))
    }


def test_it_writes_what_extractall_writes(tmp_path: Path) -> None:
    archive = tmp_path / "layer.zip"
    big = os.urandom(3 * extract.CHUNK + 12345)  # several chunks
    members = {
        "python/a/__init__.py": b"A = 1\n",
        "python/a/b/c.py": b"C = 3\n",
        "python/big.so": big,
        "python/empty.txt": b"",
    }
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("python/a/emptydir/", b"")
        for name, data in members.items():
            zf.writestr(name, data)
    extract_layer(archive, tmp_path / "parallel")
    with zipfile.ZipFile(archive) as zf:
        zf.extractall(tmp_path / "serial")
    assert tree(tmp_path / "parallel") == tree(tmp_path / "serial")


def test_a_path_outside_its_root_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("python/ok.py", b"")
        zf.writestr("../outside.py", b"")
    with pytest.raises(LayerZipError, match="outside its root"):
        extract_layer(archive, tmp_path / "out")
    assert not (tmp_path / "outside.py").exists() and not (tmp_path / "out").exists()


def test_a_link_is_refused(tmp_path: Path) -> None:
    archive = tmp_path / "link.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        info = zipfile.ZipInfo("python/passwd")
        info.external_attr = (0o120777) << 16
        zf.writestr(info, "/etc/passwd")
    with pytest.raises(LayerZipError, match="symbolic link"):
        extract_layer(archive, tmp_path / "out")


def test_the_bytes_really_written_are_capped_across_threads(tmp_path: Path) -> None:
    archive = tmp_path / "many.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        for n in range(40):
            zf.writestr(f"python/m{n}.bin", bytes(1000))
    with pytest.raises(LayerZipError, match="more than 30,000 bytes"):
        extract_layer(archive, tmp_path / "out", max_bytes=30_000)
    with pytest.raises(LayerZipError, match="more than 10 members"):
        extract_layer(archive, tmp_path / "out2", max_members=10)


def test_a_member_that_inflates_past_its_header_stops_within_the_cap(tmp_path: Path) -> None:
    """A deflate stream whose header claims a few bytes: never inflated whole into memory."""
    archive = tmp_path / "liar.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("python/liar.py", bytes(50 * 1024 * 1024))
    data = bytearray(archive.read_bytes())
    with zipfile.ZipFile(archive) as zf:
        info = zf.getinfo("python/liar.py")
    # claim 10 bytes in the local and the central header (file_size fields)
    for offset in (info.header_offset + 22, data.rfind(b"PK\x01\x02") + 24):
        data[offset : offset + 4] = (10).to_bytes(4, "little")
    archive.write_bytes(bytes(data))
    with pytest.raises(LayerZipError):
        extract_layer(archive, tmp_path / "out", max_bytes=1024 * 1024)
