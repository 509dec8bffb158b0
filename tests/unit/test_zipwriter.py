"""layer_builder.zipwriter: reproducible, valid zips; raw copies of deflated members are exact."""

from __future__ import annotations

import hashlib
import io
import random
import shutil
import struct
import subprocess
import zipfile
from pathlib import Path

import pytest

from layer_builder import limits, zipwriter
from layer_builder.errors import LayerTooLargeError
from layer_builder.zipwriter import CHUNK, FileEntry, RawEntry, Written, raw_entries, write_zip


def compressible(size: int, seed: int) -> bytes:
    """Code-like text: deflates well, yet differs chunk to chunk."""
    lines = (b"def f%d(self, x):\n    return x * %d + %d\n" % (i, i % 97, seed) for i in range(size // 20 + 1))
    return b"".join(lines)[:size]


CONTENTS = {
    "python/pkg/__init__.py": b"",
    "python/pkg/core.py": b"def f():\n    return 42\n",
    "python/pkg/donn\u00e9es.txt": "caf\u00e9\n".encode(),
    "python/bin/tool": b"#!/bin/sh\necho hi\n",
    "python/pkg/random.bin": random.Random(1).randbytes(CHUNK + 12345),  # two chunks
    "python/pkg/text.dat": compressible(2 * CHUNK + 777, seed=2),  # three chunks
    "python/pkg/exact.bin": compressible(2 * CHUNK, seed=4),  # ends exactly on a chunk boundary
    "python/aaa_first.txt": b"a" * 70_000,  # longer than the 32 KiB window, one chunk
}
EXECUTABLE = {"python/bin/tool"}


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("src")
    for name, data in CONTENTS.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root


def entries(root: Path, reverse: bool = False) -> list[FileEntry]:
    names = sorted(CONTENTS, reverse=reverse)
    return [FileEntry(n, root / n, executable=n in EXECUTABLE) for n in names]


@pytest.fixture(scope="module")
def written(source, tmp_path_factory) -> tuple[Path, list[Written]]:
    out = tmp_path_factory.mktemp("out") / "layer.zip"
    return out, write_zip(out, entries(source), workers=4)


def test_round_trip(written):
    out, _ = written
    with zipfile.ZipFile(out) as zf:
        assert zf.testzip() is None
        assert {i.filename: zf.read(i) for i in zf.infolist()} == CONTENTS
        assert all(i.compress_type == zipfile.ZIP_DEFLATED for i in zf.infolist())


def test_names_sorted_fixed_time_and_modes(written):
    out, _ = written
    with zipfile.ZipFile(out) as zf:
        infos = zf.infolist()
    assert [i.filename for i in infos] == sorted(CONTENTS)
    for info in infos:
        assert info.date_time == limits.ZIP_EPOCH == (1980, 1, 1, 0, 0, 0)
        mode = limits.ZIP_EXEC_MODE if info.filename in EXECUTABLE else limits.ZIP_FILE_MODE
        assert info.external_attr >> 16 == 0o100000 | mode
        assert info.extra == b"" and info.comment == b""


def test_written_records_are_right(written):
    out, records = written
    with zipfile.ZipFile(out) as zf:
        infos = {i.filename: i for i in zf.infolist()}
    assert [w.name for w in records] == sorted(CONTENTS)
    for w in records:
        data = CONTENTS[w.name]
        assert w.file_size == len(data) == infos[w.name].file_size
        assert w.compress_size == infos[w.name].compress_size
        assert w.sha256 == hashlib.sha256(data).hexdigest()
        assert w.executable == (w.name in EXECUTABLE)
    # Compression really happened on the compressible multi-chunk file.
    text = next(w for w in records if w.name.endswith("text.dat"))
    assert text.compress_size < text.file_size / 3


def test_every_local_header_carries_the_sizes_and_crc_of_the_central_one(written):
    """One-chunk members get theirs before their data is written, longer ones by a patch."""
    out, _ = written
    data = out.read_bytes()
    with zipfile.ZipFile(out) as zf:
        for info in zf.infolist():
            crc, csize, usize = struct.unpack_from("<III", data, info.header_offset + 14)
            assert (crc, csize, usize) == (info.CRC, info.compress_size, info.file_size), info.filename


def test_the_sha256_comes_with_the_zip_hashed_as_written_or_read_back(source, tmp_path, monkeypatch):
    from layer_builder.zipwriter import DataEntry

    read_back: list[Path] = []
    real = zipwriter.sha256_file
    monkeypatch.setattr(zipwriter, "sha256_file", lambda p: read_back.append(p) or real(p))
    small = [DataEntry("python/a.py", b"x = 1\n"), FileEntry("python/pkg/core.py", source / "python/pkg/core.py")]
    for name, batch in (("small", small), ("patched", entries(source))):  # multi-chunk files patch
        out = tmp_path / f"{name}.zip"
        written, sha = zipwriter.write_zip_hashed(out, batch)
        assert sha == hashlib.sha256(out.read_bytes()).hexdigest()
        assert [w.name for w in written] == sorted(e.name for e in batch)
        assert read_back == ([] if name == "small" else [out])


def test_a_patched_header_ends_the_hash_taken_while_writing(tmp_path):
    with open(tmp_path / "f", "wb") as f:
        hashing = zipwriter._Hashing(f)
        hashing.write(b"abc")
        assert hashing.sha256 == hashlib.sha256(b"abc").hexdigest() and hashing.tell() == 3
        hashing.seek(1)
        hashing.write(b"X")
        assert hashing.sha256 is None and hashing.tell() == 2


def test_byte_identical_for_identical_input(source, written, tmp_path):
    out, _ = written
    again = tmp_path / "again.zip"
    reordered = tmp_path / "reordered.zip"
    write_zip(again, entries(source), workers=4)
    write_zip(reordered, entries(source, reverse=True), workers=1)  # order and threads don't matter
    assert again.read_bytes() == out.read_bytes() == reordered.read_bytes()


def test_content_change_changes_the_zip(source, tmp_path):
    name = "python/pkg/text.dat"
    data = bytearray(CONTENTS[name])
    data[CHUNK + 5] ^= 1  # one bit in the second chunk
    changed = tmp_path / "text.dat"
    changed.write_bytes(bytes(data))
    original, other = tmp_path / "original.zip", tmp_path / "other.zip"
    write_zip(original, [FileEntry(name, source / name)])
    write_zip(other, [FileEntry(name, changed)])
    assert other.read_bytes() != original.read_bytes()
    with zipfile.ZipFile(other) as zf:
        assert zf.read(name) == bytes(data)


def test_unzip_accepts_it(written):
    out, _ = written
    unzip = shutil.which("unzip")
    if unzip is None:
        pytest.skip("the unzip binary is not installed; zipfile's testzip() ran in test_round_trip")
    done = subprocess.run([unzip, "-t", str(out)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "No errors detected" in done.stdout


def test_raw_copy_into_another_zip(written, tmp_path):
    out, records = written
    sha = {w.name: w.sha256 for w in records}
    raws = raw_entries(out, sha)
    assert {r.name for r in raws} == set(CONTENTS)
    assert next(r for r in raws if r.name == "python/bin/tool").executable
    extra = tmp_path / "manifest.json"
    extra.write_bytes(b'{"layer": "x"}\n')
    combined = tmp_path / "combined.zip"
    result = write_zip(combined, [*raws, FileEntry("python/.layer-builder.json", extra)])
    assert [w.name for w in result] == sorted([*CONTENTS, "python/.layer-builder.json"])
    assert {w.name: w.sha256 for w in result if w.name in sha} == sha

    with zipfile.ZipFile(out) as a, zipfile.ZipFile(combined) as b:
        assert b.testzip() is None
        for info in a.infolist():
            copy = b.getinfo(info.filename)
            assert (copy.CRC, copy.compress_size, copy.file_size, copy.external_attr) == (
                info.CRC, info.compress_size, info.file_size, info.external_attr)
            assert b.read(copy) == a.read(info)
        assert b.read("python/.layer-builder.json") == b'{"layer": "x"}\n'
    # Copying raw is as reproducible as compressing.
    again = tmp_path / "again.zip"
    write_zip(again, [FileEntry("python/.layer-builder.json", extra), *raw_entries(out, sha)])
    assert again.read_bytes() == combined.read_bytes()


class _Unseekable(io.RawIOBase):
    """A write-only stream: zipfile then writes data descriptors after each member."""

    def __init__(self, target):
        self.target = target

    def writable(self):
        return True

    def write(self, data):
        return self.target.write(data)


def test_members_of_any_wheel_copy_raw_stored_deflated_descriptors_and_zip64(tmp_path):
    members = {"pkg/a.txt": (b"stored " * 50, zipfile.ZIP_STORED),
               "pkg/b.py": (b"deflated = 1\n" * 200, zipfile.ZIP_DEFLATED),
               "pkg/empty": (b"", zipfile.ZIP_DEFLATED)}
    descriptors = tmp_path / "descriptors.whl"
    with open(descriptors, "wb") as raw, zipfile.ZipFile(_Unseekable(raw), "w") as zf:
        for name, (data, method) in members.items():
            with zf.open(zipfile.ZipInfo(name), "w") as member:  # streamed: sizes come after
                member.write(data)
    zip64 = tmp_path / "zip64.whl"
    with zipfile.ZipFile(zip64, "w") as zf:
        for name, (data, method) in members.items():
            info = zipfile.ZipInfo(name)
            info.compress_type = method
            with zf.open(info, "w", force_zip64=True) as member:
                member.write(data)
    with zipfile.ZipFile(descriptors) as zf:
        assert any(i.flag_bits & 0x08 for i in zf.infolist()), "the source has data descriptors"
    sha = {name: hashlib.sha256(data).hexdigest() for name, (data, _) in members.items()}
    for source in (descriptors, zip64):
        out = tmp_path / f"copy-{source.stem}.zip"
        write_zip(out, raw_entries(source, sha, prefix="python/"))
        with zipfile.ZipFile(out) as zf:
            assert zf.testzip() is None
            assert {i.filename: zf.read(i) for i in zf.infolist()} == {
                f"python/{name}": data for name, (data, _) in members.items()}


def test_truncated_raw_source_is_detected(written, tmp_path):
    out, records = written
    raw = next(r for r in raw_entries(out, {w.name: w.sha256 for w in records})
               if r.name.endswith("random.bin"))
    cut = tmp_path / "cut.zip"
    cut.write_bytes(out.read_bytes()[: raw.data_offset + 10])
    broken = RawEntry(**{**raw.__dict__, "source": cut})
    with pytest.raises(ValueError, match="truncated"):
        write_zip(tmp_path / "x.zip", [broken])


@pytest.mark.parametrize("other_kind", ["file", "raw"])
def test_duplicate_names_are_rejected(written, source, tmp_path, other_kind):
    out, records = written
    name = "python/pkg/core.py"
    first = FileEntry(name, source / name)
    if other_kind == "file":
        second = FileEntry(name, source / "python/pkg/__init__.py")
    else:
        second = next(r for r in raw_entries(out, {w.name: w.sha256 for w in records}) if r.name == name)
    with pytest.raises(ValueError, match=f"duplicate zip entry {name}"):
        write_zip(tmp_path / "dup.zip", [first, second])


def test_too_many_entries_for_a_zip_without_zip64(source, tmp_path, monkeypatch):
    assert zipwriter._MAX_ENTRIES == 0xFFFF  # the classic zip's 16-bit entry count
    monkeypatch.setattr(zipwriter, "_MAX_ENTRIES", 3)  # the same check without 65,536 files
    path = source / "python/pkg/__init__.py"
    many = [FileEntry(f"python/f{i}", path) for i in range(4)]
    with pytest.raises(LayerTooLargeError, match="4 files"):
        write_zip(tmp_path / "many.zip", many)
    assert not (tmp_path / "many.zip").exists()  # refused before writing anything
    write_zip(tmp_path / "three.zip", many[:3])


def test_empty_zip(tmp_path):
    out = tmp_path / "empty.zip"
    assert write_zip(out, []) == []
    with zipfile.ZipFile(out) as zf:
        assert zf.infolist() == [] and zf.testzip() is None


def test_on_written_hears_of_each_entry_in_order(source, tmp_path):
    heard: list[Written] = []
    result = write_zip(tmp_path / "heard.zip", entries(source), workers=4, on_written=heard.append)
    assert heard == result and len(heard) == len(CONTENTS)
