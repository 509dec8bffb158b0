"""layer_builder.unpack: refusals name the member and leave dest empty; valid uploads unpack."""

from __future__ import annotations

import errno
import gzip
import io
import os
import stat
import struct
import tarfile
import warnings
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import pytest

from layer_builder import limits
from layer_builder import unpack as unpack_mod
from layer_builder.errors import DiskFullError, UnsafeArchiveError
from layer_builder.unpack import unpack

PIPFILE = b'[[source]]\nurl = "${PIP_INDEX_URL}"\nverify_ssl = true\nname = "pypi"\n'
LOCK = b'{"_meta": {"hash": {"sha256": "0"}}, "default": {}, "develop": {}}\n'


@dataclass
class E:
    """One archive entry. kind: file, dir, symlink, hardlink, chr, blk, fifo."""

    name: str
    data: bytes = b"x"
    mode: int = 0o644
    kind: str = "file"
    link: str = ""


def zip_bytes(*entries: E) -> bytes:
    unix_type = {"file": stat.S_IFREG, "dir": stat.S_IFDIR, "symlink": stat.S_IFLNK,
                 "chr": stat.S_IFCHR, "fifo": stat.S_IFIFO}
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about the duplicates we test on purpose
        for e in entries:
            info = zipfile.ZipInfo(e.name)
            info.create_system = 3
            info.external_attr = (unix_type[e.kind] | e.mode) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, e.link.encode() if e.kind == "symlink" else
                        b"" if e.kind == "dir" else e.data)
    return buf.getvalue()


def tar_bytes(*entries: E, encoding: str = "utf-8", pax: dict[str, str] | None = None) -> bytes:
    kinds = {"file": tarfile.REGTYPE, "dir": tarfile.DIRTYPE, "symlink": tarfile.SYMTYPE,
             "hardlink": tarfile.LNKTYPE, "chr": tarfile.CHRTYPE, "blk": tarfile.BLKTYPE,
             "fifo": tarfile.FIFOTYPE}
    buf = io.BytesIO()
    fmt = tarfile.PAX_FORMAT if pax else tarfile.GNU_FORMAT
    with tarfile.open(fileobj=buf, mode="w:gz", format=fmt, encoding=encoding,
                      pax_headers=pax) as tf:
        for e in entries:
            info = tarfile.TarInfo(e.name)
            info.type, info.mode, info.linkname = kinds[e.kind], e.mode, e.link
            info.size = len(e.data) if e.kind == "file" else 0
            tf.addfile(info, io.BytesIO(e.data) if e.kind == "file" else None)
    return buf.getvalue()


def patch(data: bytes, old: bytes, new: bytes, count: int = 2) -> bytes:
    """Swap bytes in place (zip names appear in the local and the central header)."""
    assert len(old) == len(new) and data.count(old) == count
    return data.replace(old, new)


def patch_zip_header(data: bytes, **fields: int) -> bytes:
    """Rewrite flag_bits/compress_size/file_size of a one-member zip, in both headers."""
    local = {"flag_bits": (6, "<H"), "compress_size": (18, "<I"), "file_size": (22, "<I")}
    central = {"flag_bits": (8, "<H"), "compress_size": (20, "<I"), "file_size": (24, "<I")}
    out = bytearray(data)
    for sig, offsets in ((b"PK\x03\x04", local), (b"PK\x01\x02", central)):
        start = data.index(sig)
        for field, value in fields.items():
            off, fmt = offsets[field]
            if field == "flag_bits":
                value |= struct.unpack_from(fmt, data, start + off)[0]
            struct.pack_into(fmt, out, start + off, value)
    return bytes(out)


def write_zip_listing(f: BinaryIO, entries: int, *, declared: int | None = None,
                      zip64: bool = False, name: bytes = b"a") -> None:
    """A zip whose central directory lists `entries` members (all pointing at one real member):
    what zipfile.ZipFile() parses before any cap can be checked. `declared`: the count the end
    records claim; `zip64`: the zip64 end records carry the counts, as past 65,535 members."""
    data = b"[packages]\n"
    crc = zlib.crc32(data)
    local = struct.pack("<4s5H3L2H", b"PK\x03\x04", 20, 0, 0, 0, 0, crc, len(data), len(data),
                        len(name), 0) + name + data
    record = struct.pack("<4s6H3L5H2L", b"PK\x01\x02", 20, 20, 0, 0, 0, 0, crc, len(data),
                         len(data), len(name), 0, 0, 0, 0, 0, 0) + name
    f.write(local)
    left = entries
    while left > 0:  # in slices: a million records need not sit in memory at once
        f.write(record * min(left, 10_000))
        left -= 10_000
    count, size, offset = entries if declared is None else declared, len(record) * entries, len(local)
    if zip64:
        f.write(struct.pack("<4sQ2H2L4Q", b"PK\x06\x06", 44, 45, 45, 0, 0, count, count, size, offset))
        f.write(struct.pack("<4sLQL", b"PK\x06\x07", 0, offset + size, 1))
        count, size, offset = 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF
    f.write(struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, min(count, 0xFFFF), min(count, 0xFFFF),
                        size, offset, 0))


def zip_listing(entries: int, **options: Any) -> bytes:
    buf = io.BytesIO()
    write_zip_listing(buf, entries, **options)
    return buf.getvalue()


def write_pax_bomb(f: BinaryIO, size: int, *, before: tuple[E, ...] = ()) -> None:
    """A .tar.gz whose pax header carries `size` bytes (tarfile reads it whole), then a Pipfile;
    written in slices, so the test itself never holds the header."""
    key = b" comment="
    length = len(key) + size + 1
    length += len(str(length + len(str(length))))  # the record's length counts its own digits
    with gzip.GzipFile(fileobj=f, mode="wb", mtime=0) as gz:
        for e in before:
            gz.write(_tar_member(e.name, e.data))
        info = tarfile.TarInfo("././@PaxHeader")
        info.type, info.size = tarfile.XHDTYPE, length
        gz.write(info.tobuf(tarfile.USTAR_FORMAT) + str(length).encode() + key)
        left = size
        while left > 0:
            gz.write(b"x" * min(left, 1 << 20))
            left -= 1 << 20
        gz.write(b"\n" + bytes(-length % 512) + _tar_member("Pipfile", PIPFILE) + bytes(1024))


def _tar_member(name: str, data: bytes, pax: dict[str, str] | None = None) -> bytes:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.pax_headers = len(data), 0o644, pax or {}
    fmt = tarfile.PAX_FORMAT if pax else tarfile.USTAR_FORMAT
    return info.tobuf(fmt) + data + bytes(-len(data) % 512)


def pax_bomb(size: int, *, before: tuple[E, ...] = ()) -> bytes:
    buf = io.BytesIO()
    write_pax_bomb(buf, size, before=before)
    return buf.getvalue()


def tar_with_pax(*members: tuple[str, bytes, dict[str, str]]) -> bytes:
    """A .tar.gz whose members each carry their own pax header."""
    body = b"".join(_tar_member(n, d, pax) for n, d, pax in members) + bytes(1024)
    return gzip.compress(body, mtime=0)


def declare_count(data: bytes, count: int) -> bytes:
    """The same zip, its end record claiming `count` members."""
    at = data.rindex(b"PK\x05\x06")
    return data[:at + 8] + struct.pack("<2H", count, count) + data[at + 12:]


@pytest.fixture
def dest(tmp_path: Path) -> Path:
    d = tmp_path / "dest"
    d.mkdir()
    return d


@pytest.fixture
def small_limits(monkeypatch: pytest.MonkeyPatch) -> None:
    """Caps small enough to trip with kilobytes."""
    for name, value in {"MAX_ARCHIVE_MEMBERS": 5, "MAX_UNPACKED_BYTES": 50_000,
                        "MAX_COMPRESSION_RATIO": 10, "RATIO_GRACE_BYTES": 1024,
                        "MAX_PATH_DEPTH": 4, "MAX_PATH_LENGTH": 40,
                        "MAX_ZIP_DIRECTORY_BYTES": 2000, "MAX_TAR_HEADER_BYTES": 4096}.items():
        monkeypatch.setattr(limits, name, value)
    monkeypatch.setattr(unpack_mod, "CHUNK", 1024)  # much smaller than the caps, as in production


def write(tmp_path: Path, filename: str, data: bytes) -> Path:
    path = tmp_path / filename
    path.write_bytes(data)
    return path


Z, T = "up.zip", "up.tar.gz"
ZEROS = bytes(100_000)
NOISE = os.urandom(30_000)  # incompressible: trips the size cap, not the ratio

def row(id_: str, filename: str, build: Callable[[], bytes], member: str | bytes | None,
        reason: str) -> object:
    """One refusal: the message must name `member` (repr; None: the archive) and say `reason`."""
    return pytest.param(filename, build, member, reason, id=id_)


def zpatch(old: str, new: bytes, **header: int) -> Callable[[], bytes]:
    """A one-member zip whose stored name is `new` (bytes zipfile would never write)."""
    return lambda: patch(patch_zip_header(zip_bytes(E(old)), **header), old.encode(), new)


DEEP, LONG = "a/b/c/d/e.py", "x" * 41
REFUSALS = [
    row("zip-traversal", Z, lambda: zip_bytes(E("../evil.py")), "../evil.py", "points outside"),
    row("zip-traversal-nested", Z, lambda: zip_bytes(E("a/../../e.py")), "a/../../e.py",
        "points outside"),
    row("zip-absolute", Z, lambda: zip_bytes(E("/etc/cron.d/x")), "/etc/cron.d/x", "absolute path"),
    row("zip-backslash", Z, lambda: zip_bytes(E("a\\b.py")), "a\\b.py", "backslash"),
    row("zip-drive-letter", Z, lambda: zip_bytes(E("C:/x.py")), "C:/x.py", "drive letter"),
    row("zip-drive-relative", Z, lambda: zip_bytes(E("c:x.py")), "c:x.py", "drive letter"),
    row("zip-nul", Z, zpatch("aQb.py", b"a\x00b.py"), "a\x00b.py", "NUL or control"),
    row("zip-newline", Z, lambda: zip_bytes(E("a\nb.py")), "a\nb.py", "NUL or control"),
    row("zip-escape", Z, lambda: zip_bytes(E("\x1b[31m.py")), "\x1b[31m.py", "NUL or control"),
    row("zip-symlink-outside", Z, lambda: zip_bytes(E("p/ln", kind="symlink", link="../../etc")),
        "p/ln", "is a symbolic link"),
    row("zip-symlink-inside", Z, lambda: zip_bytes(E("Pipfile"), E("ln", kind="symlink",
                                                                  link="Pipfile")),
        "ln", "is a symbolic link"),
    row("zip-device", Z, lambda: zip_bytes(E("dev", kind="chr")), "dev", "not a regular file"),
    row("zip-fifo", Z, lambda: zip_bytes(E("pipe", kind="fifo")), "pipe", "not a regular file"),
    row("zip-duplicate", Z, lambda: zip_bytes(E("a/b.py"), E("a/b.py")), "a/b.py", "duplicates"),
    row("zip-duplicate-slashes", Z, lambda: zip_bytes(E("a/b.py"), E("a//b.py")), "a//b.py",
        "duplicates"),
    row("zip-duplicate-dot", Z, lambda: zip_bytes(E("a/b.py"), E("./a/b.py")), "./a/b.py",
        "duplicates"),
    row("zip-file-then-dir", Z, lambda: zip_bytes(E("a"), E("a/b.py")), "a/b.py", "both a file"),
    row("zip-dir-then-file", Z, lambda: zip_bytes(E("a/", kind="dir"), E("a")), "a", "both a file"),
    row("zip-parent-then-file", Z, lambda: zip_bytes(E("a/b.py"), E("a")), "a", "both a file"),
    row("zip-cp437-name", Z, zpatch("cafQ.py", b"caf\x82.py"), b"caf\x82.py", "not valid UTF-8"),
    row("zip-latin1-name", Z, zpatch("cafQ.py", b"caf\xe9.py"), b"caf\xe9.py", "not valid UTF-8"),
    row("zip-flagged-not-utf8", Z, zpatch("cafQ.py", b"caf\xe9.py", flag_bits=0x800),
        b"caf\xe9.py", "not valid UTF-8"),
    row("zip-too-deep", Z, lambda: zip_bytes(E(DEEP)), DEEP, "nested deeper than 4"),
    row("zip-too-long", Z, lambda: zip_bytes(E(LONG)), LONG, "longer than 40 bytes"),
    row("zip-part-too-long", Z, lambda: zip_bytes(E("d/" + "x" * 256)), "d/" + "x" * 256,
        "part longer than 255"),
    row("zip-encrypted", Z, lambda: patch_zip_header(zip_bytes(E("s.py")), flag_bits=0x1), "s.py",
        "is encrypted"),
    row("zip-empty", Z, lambda: zip_bytes(), None, "contains no files"),
    row("zip-dirs-only", Z, lambda: zip_bytes(E("a/", kind="dir")), None, "contains no files"),
    # zip bombs and caps (small_limits: ratio 10 after 1 KiB, 50 kB in all, 5 members)
    row("zip-ratio", Z, lambda: zip_bytes(E("bomb", ZEROS)), "bomb", "expands more than 10 times"),
    row("zip-total-size", Z, lambda: zip_bytes(E("a", NOISE), E("b", NOISE)), "b",
        "past 50000 bytes"),
    # the listing is checked before zipfile parses it (~430 bytes of memory per entry)
    row("zip-members", Z, lambda: zip_bytes(*(E(f"{i}.py") for i in range(6))), None,
        "the zip lists 6 members, past the limit of 5 members"),
    row("zip-listing-count-lies", Z, lambda: declare_count(zip_bytes(*(E(f"{i}.py") for i in
                                                                       range(6))), 1),
        None, "lists more than 5 members (it declares 1), past the limit of 5 members"),
    row("zip64-listing", Z, lambda: zip_listing(70_000, zip64=True), None,
        "the zip lists 70,000 members, past the limit of 5 members"),
    row("zip64-listing-count-lies", Z, lambda: zip_listing(40, zip64=True, declared=2), None,
        "lists more than 5 members (it declares 2)"),
    row("zip-listing-too-large", Z, lambda: zip_listing(3, name=b"n" * 1000), None,
        "(central directory) takes 3,138 bytes, past the limit of 2,000 bytes"),
    # headers that lie: zipfile stops at file_size (then the CRC fails) and checks overlaps;
    # without the overlap check (old interpreters) the ratio on real bytes stops it
    row("zip-header-lies-file-size", Z,
        lambda: patch_zip_header(zip_bytes(E("bomb", ZEROS)), file_size=10), "bomb", "corrupt"),
    row("zip-header-lies-compress-size", Z,
        lambda: patch_zip_header(zip_bytes(E("bomb", ZEROS)), compress_size=90_000), "bomb",
        "corrupt"),
    # tar.gz
    row("tar-traversal", T, lambda: tar_bytes(E("../evil.py")), "../evil.py", "points outside"),
    row("tar-absolute", T, lambda: tar_bytes(E("/etc/cron.d/x")), "/etc/cron.d/x", "absolute path"),
    row("tar-windows-path", T, lambda: tar_bytes(E("C:\\x.py")), "C:\\x.py", "backslash"),
    row("tar-control-char", T, lambda: tar_bytes(E("a\x07.py")), "a\x07.py", "NUL or control"),
    row("tar-symlink-inside", T, lambda: tar_bytes(E("Pipfile"), E("ln", kind="symlink",
                                                                   link="Pipfile")),
        "ln", "is a symbolic link (to 'Pipfile')"),
    row("tar-symlink-outside", T, lambda: tar_bytes(E("ln", kind="symlink", link="../../etc")),
        "ln", "is a symbolic link"),
    row("tar-symlink-absolute", T, lambda: tar_bytes(E("ln", kind="symlink", link="/etc/passwd")),
        "ln", "is a symbolic link"),
    row("tar-hardlink-inside", T, lambda: tar_bytes(E("Pipfile"), E("hl", kind="hardlink",
                                                                    link="Pipfile")),
        "hl", "is a hard link"),
    row("tar-hardlink-outside", T, lambda: tar_bytes(E("hl", kind="hardlink", link="/etc/shadow")),
        "hl", "is a hard link"),
    row("tar-block-device", T, lambda: tar_bytes(E("dev/sda", kind="blk")), "dev/sda", "device"),
    row("tar-char-device", T, lambda: tar_bytes(E("tty", kind="chr")), "tty", "device node"),
    row("tar-fifo", T, lambda: tar_bytes(E("pipe", kind="fifo")), "pipe", "is a FIFO"),
    row("tar-duplicate", T, lambda: tar_bytes(E("a/b.py"), E("./a//b.py")), "./a//b.py",
        "duplicates"),
    row("tar-duplicate-dir", T, lambda: tar_bytes(E("a", kind="dir"), E("a", kind="dir")), "a",
        "duplicates"),
    row("tar-file-and-dir", T, lambda: tar_bytes(E("a"), E("a", kind="dir")), "a", "both a file"),
    row("tar-not-utf8", T, lambda: tar_bytes(E("café.py"), encoding="latin-1"), b"caf\xe9.py",
        "not valid UTF-8"),
    row("tar-too-deep", T, lambda: tar_bytes(E(DEEP)), DEEP, "nested deeper than 4"),
    row("tar-too-long", T, lambda: tar_bytes(E(LONG)), LONG, "longer than 40 bytes"),
    row("tar-empty", T, lambda: tar_bytes(), None, "contains no files"),
    row("tar-dirs-only", T, lambda: tar_bytes(E("only/", kind="dir")), None, "contains no files"),
    row("tar-ratio", T, lambda: tar_bytes(E("bomb", ZEROS)), "bomb", "past 10 times its size"),
    row("tar-total-size", T, lambda: tar_bytes(E("a", NOISE), E("b", NOISE)), "b",
        "past 50000 bytes"),
    row("tar-members", T, lambda: tar_bytes(*(E(f"{i}.py") for i in range(6))), "5.py",
        "past the limit of 5 members"),
    # tarfile reads a pax header whole: the capped stream stops it while it is being read
    row("tar-pax-header-bomb", T, lambda: tar_bytes(E("Pipfile"), pax={"comment": "z" * 200_000}),
        None, "the tar headers before the first member take the archive past 10 times its size"),
    row("tar-pax-header-bomb-later", T, lambda: pax_bomb(200_000, before=(E("Pipfile"),)), None,
        "the tar headers after member 'Pipfile' take the archive past 10 times its size"),
    # headers under the per-member cap still count in the ratio: 3 x 3,000 bytes from ~150
    row("tar-headers-count-in-ratio", T,
        lambda: tar_with_pax(*((f"{i}.py", b"", {"comment": "z" * 3000}) for i in range(3))),
        None, "the tar headers after member '1.py' take the archive past 10 times its size once "
              "decompressed (tar headers included)"),
    # not an archive, or a broken one
    row("empty-file", Z, lambda: b"", None, "is empty: upload"),
    row("garbage", Z, lambda: b"hello, not an archive" * 30, None, "neither a zip nor a gzip"),
    row("gzip-not-tar", T, lambda: gzip.compress(b"not a tar" * 100), None, "corrupt"),
    row("gzip-garbage", T, lambda: b"\x1f\x8b" + os.urandom(3000), None, "corrupt"),
    row("tar-truncated", T, lambda: tar_bytes(E("Pipfile", NOISE))[:-2000], "Pipfile", "corrupt"),
    row("tar-truncated-early", T, lambda: tar_bytes(E("Pipfile", NOISE))[:5000], "Pipfile",
        "corrupt"),
    row("zip-truncated", Z, lambda: zip_bytes(E("Pipfile", NOISE))[:-100], None, "corrupt"),
    row("zip-corrupt-directory", Z,
        lambda: patch(zip_bytes(E("Pipfile")), b"PK\x01\x02", b"PK\x01\x03", count=1), None,
        "corrupt"),
    row("zip-bad-crc", Z,
        lambda: patch_zip_header(zip_bytes(E("Pipfile", PIPFILE)), file_size=len(PIPFILE) - 1),
        "Pipfile", "corrupt"),
]


@pytest.mark.usefixtures("small_limits")
@pytest.mark.parametrize(("filename", "build", "member", "reason"), REFUSALS)
def test_refused_and_dest_left_empty(tmp_path: Path, dest: Path, filename: str,
                                     build: Callable[[], bytes], member: str | bytes | None,
                                     reason: str) -> None:
    with pytest.raises(UnsafeArchiveError) as caught:
        unpack(write(tmp_path, filename, build()), dest)
    message = str(caught.value)
    assert message.startswith(filename)
    if member is not None:
        assert f"member {member!r}" in message
    assert reason in message
    assert dest.is_dir() and list(dest.iterdir()) == []


CORRUPT_TEXT = "the archive is corrupt or truncated: re-create it"


@pytest.mark.parametrize("filename, build", [
    (T, lambda: tar_bytes(E("Pipfile", NOISE))[:-2000]),
    (Z, lambda: patch_zip_header(zip_bytes(E("Pipfile", PIPFILE)), file_size=len(PIPFILE) - 1)),
    (Z, lambda: zip_bytes(E("Pipfile", NOISE))[:-100]),
])
def test_corrupt_data_says_recreate(tmp_path: Path, dest: Path, filename: str,
                                    build: Callable[[], bytes]) -> None:
    with pytest.raises(UnsafeArchiveError, match=CORRUPT_TEXT):
        unpack(write(tmp_path, filename, build()), dest)


def test_plain_tar_is_refused_with_advice(tmp_path: Path, dest: Path) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        info = tarfile.TarInfo("Pipfile")
        info.size = len(PIPFILE)
        tf.addfile(info, io.BytesIO(PIPFILE))
    with pytest.raises(UnsafeArchiveError, match="up.tar is an uncompressed tar: gzip it"):
        unpack(write(tmp_path, "up.tar", buf.getvalue()), dest)


def project(prefix: str = "") -> tuple[E, ...]:
    return (E(prefix + "Pipfile", PIPFILE), E(prefix + "Pipfile.lock", LOCK),
            E(prefix + "src/app/__init__.py", b""), E(prefix + "src/app/main.py", b"print(1)\n"))


@pytest.mark.parametrize("filename, build", [
    ("p.zip", zip_bytes), ("p.tar.gz", tar_bytes), ("p.tgz", tar_bytes), ("P.ZIP", zip_bytes),
])
def test_valid_project_unpacks(tmp_path: Path, dest: Path, filename: str,
                               build: Callable[..., bytes]) -> None:
    result = unpack(write(tmp_path, filename, build(*project())), dest)
    assert result.root == dest
    assert result.members == 4
    assert result.bytes_written == len(PIPFILE) + len(LOCK) + len(b"print(1)\n")
    assert result.archive_format == ("zip" if build is zip_bytes else "tar.gz")
    assert result.warnings == ()
    assert (dest / "Pipfile").read_bytes() == PIPFILE
    assert (dest / "src/app/main.py").read_bytes() == b"print(1)\n"
    assert stat.S_IMODE((dest / "src/app").stat().st_mode) == 0o755


@pytest.mark.parametrize("build", [zip_bytes, tar_bytes])
def test_single_wrapping_folder_is_the_root(tmp_path: Path, dest: Path,
                                            build: Callable[..., bytes]) -> None:
    archive = write(tmp_path, "p.zip" if build is zip_bytes else "p.tgz",
                    build(E("repo-main/", kind="dir", mode=0o700), *project("repo-main/")))
    result = unpack(archive, dest)
    assert result.root == dest / "repo-main"
    assert (result.root / "Pipfile.lock").read_bytes() == LOCK
    assert stat.S_IMODE(result.root.stat().st_mode) == 0o755  # 0o700 in the archive


def test_two_top_level_entries_keep_dest_as_root(tmp_path: Path, dest: Path) -> None:
    result = unpack(write(tmp_path, "p.zip", zip_bytes(*project("repo/"), E("README"))), dest)
    assert result.root == dest


def test_tar_made_from_inside_the_folder(tmp_path: Path, dest: Path) -> None:
    # `tar czf p.tgz -C project .` writes "./" and "./Pipfile"
    result = unpack(write(tmp_path, "p.tgz", tar_bytes(E("./", kind="dir"), *project("./"))), dest)
    assert result.root == dest and (dest / "Pipfile").read_bytes() == PIPFILE


def test_nested_dirs_and_dependencies_only_project(tmp_path: Path, dest: Path) -> None:
    deep = "a/b/c/d/e/f/g/h/deep.py"
    archive = zip_bytes(E("Pipfile", PIPFILE), E("Pipfile.lock", LOCK), E(deep, b"x = 1\n"))
    result = unpack(write(tmp_path, "p.zip", archive), dest)
    assert (dest / deep).read_bytes() == b"x = 1\n" and result.members == 3
    dest2 = tmp_path / "dest2"
    dest2.mkdir()
    archive = tar_bytes(E("Pipfile", PIPFILE), E("Pipfile.lock", LOCK))
    result = unpack(write(tmp_path, "deps.tar.gz", archive), dest2)
    assert sorted(p.name for p in dest2.iterdir()) == ["Pipfile", "Pipfile.lock"]
    assert result.members == 2 and result.root == dest2


@pytest.mark.parametrize("build", [zip_bytes, tar_bytes])
@pytest.mark.parametrize("mode, expected", [(0o700, 0o755), (0o744, 0o755), (0o4755, 0o755),
                                            (0o600, 0o644), (0o666, 0o644), (0o444, 0o644)])
def test_permissions_are_normalised(tmp_path: Path, dest: Path, build: Callable[..., bytes],
                                    mode: int, expected: int) -> None:
    archive = write(tmp_path, "p.zip" if build is zip_bytes else "p.tgz",
                    build(E("Pipfile", PIPFILE), E("bin/run.sh", b"#!/bin/sh\n", mode=mode)))
    unpack(archive, dest)
    assert stat.S_IMODE((dest / "bin/run.sh").stat().st_mode) == expected
    assert stat.S_IMODE((dest / "Pipfile").stat().st_mode) == 0o644


@pytest.mark.parametrize("filename, build, found", [
    ("p.tar.gz", zip_bytes, "zip"), ("p.zip", tar_bytes, "tar.gz"), ("p.bin", tar_bytes, "tar.gz"),
])
def test_wrong_extension_unpacks_with_warning(tmp_path: Path, dest: Path, filename: str,
                                              build: Callable[..., bytes], found: str) -> None:
    result = unpack(write(tmp_path, filename, build(*project())), dest)
    assert result.archive_format == found and (dest / "Pipfile").is_file()
    assert len(result.warnings) == 1
    assert filename in result.warnings[0] and f"content is {found}" in result.warnings[0]


def test_utf8_zip_names_with_or_without_the_flag(tmp_path: Path, dest: Path) -> None:
    flagged = zip_bytes(E("Pipfile", PIPFILE), E("données.py", b"a"))
    unflagged = patch(zip_bytes(E("cafQQ.py", b"b")), b"cafQQ.py", "café.py".encode())
    unpack(write(tmp_path, "a.zip", flagged), dest)
    assert (dest / "données.py").read_bytes() == b"a"
    dest2 = tmp_path / "dest2"
    dest2.mkdir()
    unpack(write(tmp_path, "b.zip", unflagged), dest2)
    assert (dest2 / "café.py").read_bytes() == b"b"


@pytest.mark.parametrize("filename, build", [(Z, zip_bytes), (T, tar_bytes)])
def test_many_small_members_trip_the_overall_ratio(tmp_path: Path, dest: Path, filename: str,
                                                    build: Callable[..., bytes],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    # each member stays under the grace, so only the whole-archive ratio can see the bomb
    monkeypatch.setattr(limits, "MAX_COMPRESSION_RATIO", 5)
    monkeypatch.setattr(limits, "RATIO_GRACE_BYTES", 1024)
    archive = write(tmp_path, filename, build(*(E(f"{i}", bytes(1000)) for i in range(30))))
    # (the tar's stream check sees it first: "past 5 times its size once decompressed")
    with pytest.raises(UnsafeArchiveError, match="past 5 times its size"):
        unpack(archive, dest)
    assert list(dest.iterdir()) == []


def test_caps_count_real_bytes_and_allow_what_fits(tmp_path: Path, dest: Path,
                                                   small_limits: None) -> None:
    # 49,000 incompressible bytes: under the 50 kB cap, ratio ~1
    archive = zip_bytes(E("a.bin", NOISE), E("b.bin", NOISE[:19_000]))
    result = unpack(write(tmp_path, "p.zip", archive), dest)
    assert result.bytes_written == 49_000


def test_disk_full_becomes_transient_and_cleans_up(tmp_path: Path, dest: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    class FullDisk(io.RawIOBase):
        def __init__(self, fd: int, mode: str) -> None:
            self.fd = fd

        def fileno(self) -> int:
            return self.fd

        def write(self, _chunk: object) -> int:
            raise OSError(errno.ENOSPC, "No space left on device")

        def close(self) -> None:
            os.close(self.fd)
            super().close()

    monkeypatch.setattr(unpack_mod, "open", FullDisk, raising=False)  # shadows the builtin there
    with pytest.raises(DiskFullError, match=str(dest)) as caught:
        unpack(write(tmp_path, "p.zip", zip_bytes(*project("repo/"))), dest)
    assert not caught.value.permanent  # a retry may succeed
    assert list(dest.iterdir()) == []  # "repo/" and the half-written file are gone


def test_dest_must_be_empty(tmp_path: Path, dest: Path) -> None:
    (dest / "keep.txt").write_text("mine")
    with pytest.raises(ValueError, match="empty"):
        unpack(write(tmp_path, "p.zip", zip_bytes(*project())), dest)
    assert (dest / "keep.txt").read_text() == "mine"


@pytest.mark.skipif(unpack_mod._DATA_FILTER is None, reason="needs tarfile.data_filter (3.11.4+)")
def test_tarfile_data_filter_is_applied_to_every_member(tmp_path: Path, dest: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    checked: list[str] = []

    def spy(member: tarfile.TarInfo, path: str) -> tarfile.TarInfo:
        checked.append(member.name)
        assert path == str(dest)
        if member.name == "src/app/main.py":  # as if the stdlib knew of a threat we do not
            raise tarfile.OutsideDestinationError(member, path)
        return tarfile.data_filter(member, path)

    monkeypatch.setattr(unpack_mod, "_DATA_FILTER", spy)
    with pytest.raises(UnsafeArchiveError, match="'src/app/main.py' is refused by tarfile's data"):
        unpack(write(tmp_path, "p.tgz", tar_bytes(*project())), dest)
    assert checked == [e.name for e in project()]
    assert list(dest.iterdir()) == []


# --- memory bombs: caps checked before (or while) the library reads -------------------------

@pytest.mark.parametrize("before, where", [((), "before the first member"),
                                           ((E("Pipfile", PIPFILE),), "after member 'Pipfile'")])
def test_tar_header_cap_stops_a_pax_header_while_it_is_read(
        tmp_path: Path, dest: Path, monkeypatch: pytest.MonkeyPatch, before: tuple[E, ...],
        where: str) -> None:
    # Real ratio and grace: 2 MB of header in ~2 kB passes neither, but the header cap is first.
    monkeypatch.setattr(limits, "MAX_TAR_HEADER_BYTES", 64 * 1024)
    archive = write(tmp_path, T, pax_bomb(2_000_000, before=before))
    with pytest.raises(UnsafeArchiveError) as caught:
        unpack(archive, dest)
    assert str(caught.value) == (
        f"{T}: the tar headers {where} take more than 65,536 bytes, past the limit for one "
        "member's headers: this looks like a decompression bomb: upload only the project")
    assert list(dest.iterdir()) == []


def test_honest_pax_headers_and_long_names_pass(tmp_path: Path, dest: Path) -> None:
    # pax headers on every member (long names, extended attributes, as GNU and bsdtar write them)
    members = [(f"pkg/{'d' * 200}/{'m' * 180}_{i}.py", b"x = 1\n",
                {"SCHILY.xattr.user.digest": os.urandom(800).hex(), "mtime": "1700000000.5"})
               for i in range(300)]
    result = unpack(write(tmp_path, T, tar_with_pax(("Pipfile", PIPFILE, {}), *members)), dest)
    assert result.members == 301


def test_skipped_metadata_content_is_not_taken_for_headers(
        tmp_path: Path, dest: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # tarfile skips the data of members we leave out: that data is content, not header bytes.
    monkeypatch.setattr(limits, "MAX_TAR_HEADER_BYTES", 4096)
    archive = tar_bytes(E("._Pipfile", NOISE + NOISE), E("Pipfile", PIPFILE), E("._x", NOISE))
    result = unpack(write(tmp_path, T, archive), dest)
    assert result.members == 1 and (dest / "Pipfile").read_bytes() == PIPFILE


@pytest.mark.usefixtures("small_limits")
def test_zip_listing_at_the_limits_passes(tmp_path: Path, dest: Path) -> None:
    result = unpack(write(tmp_path, Z, zip_bytes(*(E(f"{i}.py") for i in range(5)))), dest)
    assert result.members == 5


def test_zip_with_an_archive_comment_is_read(tmp_path: Path, dest: Path) -> None:
    # the end record is then not the last 22 bytes: it is searched for, as zipfile does
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("Pipfile", PIPFILE)
        zf.comment = b"PK made by a tool that signs its comments " * 20
    assert unpack(write(tmp_path, Z, buf.getvalue()), dest).members == 1


def test_zip64_listing_as_zipfile_writes_it_is_read(tmp_path: Path, dest: Path) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", allowZip64=True) as zf:
        zf.writestr("Pipfile", PIPFILE)
    data = zip_listing(1, zip64=True)  # the zip64 end records, one member
    assert zipfile.ZipFile(io.BytesIO(data)).namelist() == ["a"]
    assert unpack(write(tmp_path, Z, data), dest).members == 1


@pytest.mark.parametrize("cut", [b"PK\x05\x06", b"PK\x01\x02"])
def test_broken_listing_is_corrupt_not_a_crash(tmp_path: Path, dest: Path, cut: bytes) -> None:
    data = zip_bytes(E("Pipfile", PIPFILE))
    with pytest.raises(UnsafeArchiveError, match=CORRUPT_TEXT):
        unpack(write(tmp_path, Z, data.replace(cut, b"PK\x09\x09")), dest)
