"""extract.extract_layer: the parallel unzip a check runs on (the CLI's sandbox, the check function)."""

from __future__ import annotations

import os
import zipfile
import zlib
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


@pytest.fixture(params=["isal", "zlib"])
def inflater(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Both libraries extract_layer may inflate with: ISA-L when installed, zlib otherwise."""
    if request.param == "isal":
        from isal import isal_zlib  # a dependency: its absence is a failure, not a skip

        monkeypatch.setattr(extract, "inflater", isal_zlib)
    else:
        monkeypatch.setattr(extract, "inflater", extract.zlib)
    return request.param


def test_isal_is_what_it_inflates_with_when_installed() -> None:
    assert extract.inflater.__name__ == "isal.isal_zlib"


def test_every_library_writes_the_same_files(tmp_path: Path, inflater: str) -> None:
    archive = tmp_path / "layer.zip"
    compressible = b"import os\n" * (3 * extract.CHUNK // 10)  # inflates past one CHUNK per block
    members = {
        "python/big.py": compressible,
        "python/random.so": os.urandom(2 * extract.CHUNK + 7),
        "python/stored.txt": b"kept as is",
        "python/empty.py": b"",
    }
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            compress = zipfile.ZIP_STORED if name.endswith(".txt") else zipfile.ZIP_DEFLATED
            zf.writestr(name, data, compress_type=compress)
    extract_layer(archive, tmp_path / inflater)
    files = {k: v for k, v in tree(tmp_path / inflater).items() if v is not None}
    assert files == members


def _corrupt(archive: Path, name: str, offset_in_data: int) -> None:
    data = bytearray(archive.read_bytes())
    with zipfile.ZipFile(archive) as zf:
        info = zf.getinfo(name)
    header = info.header_offset
    start = header + 30 + int.from_bytes(data[header + 26 : header + 28], "little") + int.from_bytes(
        data[header + 28 : header + 30], "little"
    )
    data[start + offset_in_data] ^= 0xFF
    archive.write_bytes(bytes(data))


@pytest.mark.parametrize("compress", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED])
def test_a_member_whose_bytes_changed_is_refused_by_its_crc(
    tmp_path: Path, inflater: str, compress: int
) -> None:
    archive = tmp_path / "damaged.zip"
    with zipfile.ZipFile(archive, "w", compress) as zf:
        zf.writestr("python/ok.py", b"x = 1\n")
        zf.writestr("python/m.py", b"value = 12345\n" * 50)
    _corrupt(archive, "python/m.py", 3)
    with pytest.raises(LayerZipError, match="damaged"):
        extract_layer(archive, tmp_path / "out")


def test_a_truncated_member_is_refused(tmp_path: Path, inflater: str) -> None:
    archive = tmp_path / "short.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("python/m.py", os.urandom(5000))
    with zipfile.ZipFile(archive) as zf:
        info = zf.getinfo("python/m.py")
    data = bytearray(archive.read_bytes())
    # the central directory says the member is 100 compressed bytes shorter than it is
    central = data.rfind(b"PK\x01\x02")
    data[central + 20 : central + 24] = (info.compress_size - 100).to_bytes(4, "little")
    archive.write_bytes(bytes(data))
    with pytest.raises(LayerZipError, match="damaged"):
        extract_layer(archive, tmp_path / "out")


def test_an_encrypted_member_is_refused(tmp_path: Path) -> None:
    archive = tmp_path / "locked.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("python/m.py", b"x = 1\n")
    data = bytearray(archive.read_bytes())
    for signature, flag_offset in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        at = data.find(signature)
        data[at + flag_offset] |= 0x1
    archive.write_bytes(bytes(data))
    with pytest.raises(LayerZipError, match="encrypted"):
        extract_layer(archive, tmp_path / "out")


# --- the builder's entries, without a zip in between ------------------------------------------


def _entries(tmp_path: Path) -> list:
    from layer_builder.zipwriter import DataEntry, FileEntry, raw_entries

    wheel = tmp_path / "dep-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("dep/__init__.py", b"VALUE = 1\n" * 1000)
        zf.writestr("dep/data.bin", os.urandom(3 * extract.CHUNK + 5), compress_type=zipfile.ZIP_STORED)
    own = tmp_path / "own.py"
    own.write_text("import dep\n")
    raws = raw_entries(wheel, {"dep/__init__.py": "", "dep/data.bin": ""}, prefix="python/")
    return [*raws, DataEntry("python/dep-1.0.dist-info/RECORD", b"rows\n"),
            FileEntry("python/own.py", own)]


def test_entries_unpack_to_the_tree_their_zip_unzips_to(tmp_path: Path, inflater: str) -> None:
    from layer_builder.zipwriter import write_zip

    entries = _entries(tmp_path)
    write_zip(tmp_path / "layer.zip", entries)
    extract_layer(tmp_path / "layer.zip", tmp_path / "from-zip")
    extract.extract_entries(entries, tmp_path / "from-entries")
    assert tree(tmp_path / "from-entries") == tree(tmp_path / "from-zip")
    assert len([v for v in tree(tmp_path / "from-entries").values() if v is not None]) == 4


def test_an_entry_whose_wheel_bytes_changed_is_refused(tmp_path: Path, inflater: str) -> None:
    import dataclasses

    entries = _entries(tmp_path)
    lying = [dataclasses.replace(e, crc=e.crc ^ 1) if e.name.endswith("__init__.py") else e
             for e in entries]
    with pytest.raises(LayerZipError, match=r"dep/__init__\.py fails its size or CRC"):
        extract.extract_entries(lying, tmp_path / "out")


def test_entries_outside_the_root_or_twice_are_refused(tmp_path: Path) -> None:
    from layer_builder.zipwriter import DataEntry

    with pytest.raises(LayerZipError, match="outside its root"):
        extract.extract_entries([DataEntry("python/../../evil.py", b"")], tmp_path / "out")
    with pytest.raises(ValueError, match="duplicate"):
        extract.extract_entries([DataEntry("python/a.py", b""), DataEntry("python/a.py", b"x")],
                                tmp_path / "out2")
    assert not (tmp_path / "evil.py").exists()


def test_at_most_max_open_sources_are_open_at_once(tmp_path: Path, monkeypatch) -> None:
    """A lock of hundreds of wheels must not run out of file descriptors."""
    from layer_builder.zipwriter import raw_entries

    entries = []
    for n in range(23):
        wheel = tmp_path / f"w{n}.whl"
        with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as zf:
            zf.writestr(f"p{n}/__init__.py", f"N = {n}\n" * 50)
            zf.writestr(f"p{n}/data.bin", os.urandom(1000))
        entries += raw_entries(wheel, {f"p{n}/__init__.py": "", f"p{n}/data.bin": ""}, prefix="python/")
    monkeypatch.setattr(extract, "MAX_OPEN_SOURCES", 5)
    most = [0]
    real_fd = extract._Unzipper._fd

    def counting(self, source):  # type: ignore[no-untyped-def]
        fd = real_fd(self, source)
        most[0] = max(most[0], len(self.fds))
        return fd

    monkeypatch.setattr(extract._Unzipper, "_fd", counting)
    extract.extract_entries(entries, tmp_path / "out")
    assert most[0] == 5
    assert (tmp_path / "out/python/p22/__init__.py").read_text() == "N = 22\n" * 50
    assert len(list((tmp_path / "out/python").iterdir())) == 23


def test_a_local_header_that_names_another_member_is_refused(tmp_path: Path) -> None:
    archive = tmp_path / "liar.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("python/aaa.py", b"x = 1\n")
    data = bytearray(archive.read_bytes())
    at = data.find(b"PK\x03\x04") + 30
    data[at : at + len(b"python/aaa.py")] = b"python/bbb.py"  # the local name only
    archive.write_bytes(bytes(data))
    with pytest.raises(LayerZipError, match="local header of python/aaa.py does not match"):
        extract_layer(archive, tmp_path / "out")


def test_members_sharing_their_data_are_refused(tmp_path: Path) -> None:
    """Central entries pointing at one local header: the same bytes written many times."""
    archive = tmp_path / "overlap.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("python/x.txt", b"y" * 1000)
        zf.writestr("python/z.txt", b"z")
    data = bytearray(archive.read_bytes())
    second = data.rfind(b"PK\x01\x02")
    data[second + 42 : second + 46] = (0).to_bytes(4, "little")  # its local header offset: x.txt's
    archive.write_bytes(bytes(data))
    with pytest.raises(LayerZipError, match="overlap"):
        extract_layer(archive, tmp_path / "out")


def test_an_entry_with_another_compression_method_is_refused(tmp_path: Path) -> None:
    import dataclasses

    entry = _entries(tmp_path)[0]
    with pytest.raises(LayerZipError, match="compression method 14"):
        extract.extract_entries([dataclasses.replace(entry, compress_type=14)], tmp_path / "out")


def test_entries_are_capped(tmp_path: Path, monkeypatch) -> None:
    entries = _entries(tmp_path)
    with pytest.raises(extract.LayerZipTooLarge, match="more than 1,000 bytes"):
        extract.extract_entries(entries, tmp_path / "out", max_bytes=1000)
    # a layer within Lambda's limit plus the bytecode cached for its wheels
    assert extract.extract_entries.__kwdefaults__["max_bytes"] == 2 * extract.limits.MAX_UNZIPPED_BYTES


def test_a_member_hiding_another_behind_a_long_extra_field_is_refused(tmp_path: Path) -> None:
    """Its data, read from its real local header, runs into the next member's header."""
    archive = tmp_path / "hidden.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("python/a.py", b"a" * 100)
        zf.writestr("python/b.py", b"b" * 100)
    data = bytearray(archive.read_bytes())
    with zipfile.ZipFile(archive) as zf:
        a, b = zf.getinfo("python/a.py"), zf.getinfo("python/b.py")
    # a's local header claims a 60-byte extra field: its "data" now starts 60 bytes later and
    # ends inside b's header; the central directory still says 100 bytes
    data[a.header_offset + 28 : a.header_offset + 30] = (60).to_bytes(2, "little")
    # ... and its CRC, local and central, is that of those shifted 100 bytes: every other check
    # (size, CRC, name, method) passes, only the overlap gives it away
    start = a.header_offset + 30 + len(b"python/a.py") + 60
    crc = zlib.crc32(bytes(data[start : start + 100])).to_bytes(4, "little")
    data[a.header_offset + 14 : a.header_offset + 18] = crc
    central = data.find(b"PK\x01\x02")
    data[central + 16 : central + 20] = crc
    archive.write_bytes(bytes(data))
    with pytest.raises(LayerZipError, match="overlap"):
        extract_layer(archive, tmp_path / "out")


def test_a_zip_without_files_unpacks_to_its_directories(tmp_path: Path) -> None:
    empty, dirs = tmp_path / "empty.zip", tmp_path / "dirs.zip"
    zipfile.ZipFile(empty, "w").close()
    with zipfile.ZipFile(dirs, "w") as zf:
        zf.writestr("python/pkg/", b"")
    assert tree(extract_layer(empty, tmp_path / "e")) == {}
    assert tree(extract_layer(dirs, tmp_path / "d")) == {"python": None, "python/pkg": None}
