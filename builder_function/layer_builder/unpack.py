"""Safe unpacking of an uploaded project archive (.zip, .tar.gz or .tgz).

Each member is checked before it is written, content is copied in chunks with the
zip-bomb caps enforced on the bytes really written, and any refusal leaves `dest` empty.

Decisions:
- The format comes from the magic bytes; a misleading extension only adds a warning.
  An uncompressed tar is refused (upload .tar.gz or .zip), so there are exactly two formats.
- Links (symbolic or hard, even pointing inside), devices and FIFOs are refused: a project
  upload never needs them, and refusing is simpler to get right than resolving them.
- Zip names without the UTF-8 flag are legacy-encoded (cp437 by the spec). Pure ASCII passes;
  otherwise the raw bytes are accepted if they are valid UTF-8 (many zip tools write UTF-8
  without setting the flag) and refused if not, rather than guessing a code page.
- macOS metadata (`__MACOSX/…` and AppleDouble `._name` files, added by Finder's "Compress" and
  by tar on a Mac) is skipped with a warning: it is never project content, and a `__MACOSX/`
  folder next to the project folder would otherwise hide the single wrapping folder.
- Memory stays bounded whatever the upload claims. `zipfile.ZipFile()` parses the whole central
  directory before anything can be checked, so the end-of-central-directory records (classic
  and zip64) are read first and the listing is walked record by record (its declared count may
  lie) before zipfile sees it. tarfile reads each pax/GNU header whole, so every byte the
  decompressor yields is counted: headers per member, the ratio and the size cap apply to the
  decompressed stream itself, not only to the content written.
"""

from __future__ import annotations

import errno
import gzip
import os
import shutil
import stat
import struct
import tarfile
import unicodedata
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Protocol, cast

from . import limits
from .errors import DiskFullError, UnsafeArchiveError

CHUNK = 1024 * 1024
#: Tar headers and padding per member on top of the content, for the decompressed stream's cap.
TAR_HEADER_ALLOWANCE = 4096
#: tarfile reads its stream in records of this size: at most one record is read ahead.
_TAR_READ_AHEAD = tarfile.RECORDSIZE
NAME_MAX = 255
_ZIP_UTF8_FLAG = 0x800
_ZIP_ENCRYPTED_FLAG = 0x1
#: Missing before Python 3.11.4; our own checks cover the same ground, the filter is a second net.
_DATA_FILTER = getattr(tarfile, "data_filter", None)
_CORRUPT = (zlib.error, EOFError, zipfile.BadZipFile, tarfile.TarError, gzip.BadGzipFile)
_FORMATS = {"zip": (".zip",), "tar.gz": (".tar.gz", ".tgz")}
#: What an upload may be called (the template's S3 filters use the same suffixes).
ARCHIVE_SUFFIXES = tuple(suffix for suffixes in _FORMATS.values() for suffix in suffixes)


def strip_archive_suffix(filename: str) -> str:
    """`aws-emr-launcher-0.1.0.tar.gz` → `aws-emr-launcher-0.1.0`"""
    for suffix in ARCHIVE_SUFFIXES:
        if filename.lower().endswith(suffix):
            return filename[: -len(suffix)]
    return filename


_LINK_FIX = "replace it with a copy of the file (`zip` without -y, or `tar --dereference`)"
_BOMB_FIX = "this looks like a decompression bomb: upload only the project"
_UTF8_FIX = "rename it with UTF-8 (or ASCII) characters"
_RELATIVE_FIX = "archive relative paths only"


class _Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


@dataclass(frozen=True)
class UnpackResult:
    root: Path  # the project root: dest itself, or the single wrapping folder inside it
    members: int  # regular files written
    bytes_written: int  # bytes really written
    archive_format: str  # "zip" or "tar.gz"
    warnings: tuple[str, ...]


def unpack(archive: Path, dest: Path) -> UnpackResult:
    """Unpack `archive` into the fresh, empty directory `dest`, or raise and leave `dest` empty."""
    archive, dest = Path(archive), Path(dest)
    if dest.is_symlink() or not dest.is_dir() or any(dest.iterdir()):
        raise ValueError(f"{dest} must be an existing, empty directory (caller bug)")
    archive_format, warnings = _detect(archive)
    out = _Extractor(archive, dest)
    try:
        if archive_format == "zip":
            _unpack_zip(out)
        else:
            _unpack_tar(out)
        if out.files == 0:
            raise UnsafeArchiveError(
                f"{archive.name} contains no files: upload the project folder "
                "with its Pipfile and Pipfile.lock"
            )
    except BaseException as exc:
        _clear(dest)
        if isinstance(exc, _CORRUPT):
            raise UnsafeArchiveError(
                f"{archive.name}: near member {out.current!r} the archive is corrupt or "
                f"truncated: re-create it ({exc})"
            ) from exc
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise DiskFullError(
                f"no space left in {dest} while unpacking {out.current!r} from {archive.name}: "
                "free space there (or raise the function's ephemeral storage) and retry"
            ) from exc
        if isinstance(exc, OSError) and exc.errno in (errno.EEXIST, errno.ELOOP):
            raise out.refuse(
                out.current, "clashes with a path already written", "rename it"
            ) from exc
        raise
    if out.skipped:
        warnings.append(
            f"{archive.name}: skipped {out.skipped} macOS metadata members "
            "(__MACOSX/, ._*); they are not part of the project"
        )
    children = list(dest.iterdir())
    only_dir = len(children) == 1 and children[0].is_dir() and not children[0].is_symlink()
    return UnpackResult(
        root=children[0] if only_dir else dest,
        members=out.files,
        bytes_written=out.bytes,
        archive_format=archive_format,
        warnings=tuple(warnings),
    )


def _detect(archive: Path) -> tuple[str, list[str]]:
    """Format from the magic bytes; a warning when the extension says otherwise."""
    what = "upload the project as a .zip or .tar.gz (e.g. `zip -r project.zip project/`)"
    with archive.open("rb") as f:
        head = f.read(512)
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        found = "zip"
    elif head[:2] == b"\x1f\x8b":
        found = "tar.gz"
    elif not head:
        raise UnsafeArchiveError(f"{archive.name} is empty: {what}")
    elif head[257:262] == b"ustar":
        raise UnsafeArchiveError(f"{archive.name} is an uncompressed tar: gzip it or {what}")
    else:
        raise UnsafeArchiveError(f"{archive.name} is neither a zip nor a gzip'ed tar: {what}")
    warnings = []
    if not archive.name.lower().endswith(_FORMATS[found]):
        warnings.append(
            f"{archive.name}: the name does not end in {' or '.join(_FORMATS[found])} but the "
            f"content is {found}; unpacked it as {found}"
        )
    return found, warnings


class _Extractor:
    """Checks names, creates directories and copies content under the caps."""

    def __init__(self, archive: Path, dest: Path) -> None:
        self.archive, self.dest = archive, dest
        self.archive_size = max(archive.stat().st_size, 1)
        self.entries = self.files = self.bytes = 0
        self.current = "(before the first member)"
        self.seen: set[str] = set()  # normalised names of members, to spot duplicates
        self.dirs: set[str] = {""}  # directories created, explicitly or as parents
        self.file_names: set[str] = set()
        self.skipped = 0  # macOS metadata members left out

    def refuse(self, name: object, problem: str, fix: str) -> UnsafeArchiveError:
        return UnsafeArchiveError(f"{self.archive.name}: member {name!r} {problem}: {fix}")

    def _count(self, name: str) -> None:
        self.current = name
        self.entries += 1
        if self.entries > limits.MAX_ARCHIVE_MEMBERS:
            raise self.refuse(
                name,
                f"is past the limit of {limits.MAX_ARCHIVE_MEMBERS} members",
                "upload only the project (Pipfile, Pipfile.lock, sources)",
            )

    def skip_macos_metadata(self, name: str) -> bool:
        """True (and counted against the member cap) for __MACOSX/… and ._name members."""
        parts = [p for p in name.split("/") if p not in ("", ".")]
        if not parts or not (parts[0] == "__MACOSX" or parts[-1].startswith("._")):
            return False
        self._count(name)
        self.skipped += 1
        return True

    def claim(self, name: str, is_dir: bool) -> tuple[str, ...]:
        """Validate one member name; return its normalised parts (empty for the root itself)."""
        self._count(name)
        parts = self._safe_parts(name)
        key = "/".join(parts)
        if not parts and is_dir:
            return parts  # "./" as written by `tar -C project .`
        if not parts:
            raise self.refuse(name, "has an empty name", "re-create the archive")
        parents = {"/".join(parts[:i]) for i in range(1, len(parts))}
        if key in (self.file_names if is_dir else self.dirs) or parents & self.file_names:
            raise self.refuse(name, "is both a file and a directory", "rename one of them")
        if key in self.seen:
            raise self.refuse(
                name,
                f"duplicates another member (both are {key!r})",
                "keep one copy and re-create the archive",
            )
        self.seen.add(key)
        if not is_dir:
            self.file_names.add(key)
        return parts

    def _safe_parts(self, name: str) -> tuple[str, ...]:
        try:
            raw = name.encode("utf-8")
        except UnicodeEncodeError:  # tarfile's surrogate escapes for undecodable bytes
            raw_name = name.encode("utf-8", "surrogateescape")
            raise self.refuse(raw_name, "is not valid UTF-8", _UTF8_FIX) from None
        if any(unicodedata.category(c) == "Cc" for c in name):
            raise self.refuse(name, "contains NUL or control characters", "rename it")
        if "\\" in name:
            raise self.refuse(
                name,
                "contains a backslash (a Windows path?)",
                "re-create the archive with forward slashes (7-Zip or `zip`)",
            )
        if name.startswith("/"):
            raise self.refuse(name, "is an absolute path", _RELATIVE_FIX)
        parts = tuple(p for p in name.split("/") if p not in ("", "."))
        for part in parts:
            if part == "..":
                raise self.refuse(name, "points outside the archive (`..`)", _RELATIVE_FIX)
            if len(part) >= 2 and part[1] == ":" and part[0].isascii() and part[0].isalpha():
                raise self.refuse(name, "has a drive letter", _RELATIVE_FIX)
            if len(part.encode()) > NAME_MAX:
                raise self.refuse(name, f"has a part longer than {NAME_MAX} bytes", "shorten it")
        if len(raw) > limits.MAX_PATH_LENGTH:
            raise self.refuse(name, f"is longer than {limits.MAX_PATH_LENGTH} bytes", "shorten it")
        if len(parts) > limits.MAX_PATH_DEPTH:
            raise self.refuse(
                name, f"is nested deeper than {limits.MAX_PATH_DEPTH} folders", "flatten it"
            )
        return parts

    def make_dirs(self, parts: tuple[str, ...]) -> None:
        for i in range(1, len(parts) + 1):
            key = "/".join(parts[:i])
            if key not in self.dirs:
                os.mkdir(self.dest / key, 0o755)
                os.chmod(self.dest / key, 0o755)  # whatever the umask
                self.dirs.add(key)

    def write_file(
        self, parts: tuple[str, ...], src: _Readable, executable: bool, compressed: int | None
    ) -> None:
        """Copy `src` in chunks; `compressed` is the member's compressed size (zip only)."""
        self.make_dirs(parts[:-1])
        mode = 0o755 if executable else 0o644
        # O_NOFOLLOW | O_EXCL: a link or file already there can never redirect the write.
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        with open(os.open(self.dest.joinpath(*parts), flags, mode), "wb") as out:
            os.fchmod(out.fileno(), mode)
            written = 0
            while chunk := src.read(CHUNK):
                written += len(chunk)
                self.bytes += len(chunk)
                self._check_caps(written, compressed)
                out.write(chunk)
        self.files += 1

    def _check_caps(self, written: int, compressed: int | None) -> None:
        ratio, grace, cap = (
            limits.MAX_COMPRESSION_RATIO,
            limits.RATIO_GRACE_BYTES,
            limits.MAX_UNPACKED_BYTES,
        )
        if compressed is not None and written > grace and written > ratio * max(compressed, 1):
            raise self.refuse(self.current, f"expands more than {ratio} times", _BOMB_FIX)
        if self.bytes > grace and self.bytes > ratio * self.archive_size:
            raise self.refuse(
                self.current, f"takes the archive past {ratio} times its size unpacked", _BOMB_FIX
            )
        if self.bytes > cap:
            raise self.refuse(
                self.current, f"takes the archive past {cap} bytes unpacked", _BOMB_FIX
            )


# The records that describe a zip's listing (APPNOTE.TXT 4.3.12-4.3.16), as zipfile reads them.
_EOCD = struct.Struct("<4s4H2LH")  # end of central directory
_ZIP64_LOCATOR = struct.Struct("<4sLQL")
_ZIP64_EOCD = struct.Struct("<4sQ2H2L4Q")
_CENTRAL = struct.Struct("<4s6H3L5H2L")  # one central directory record, before its name
_LISTING_FIX = "upload only the project (Pipfile, Pipfile.lock, sources)"


def check_zip_listing(path: Path, max_members: int, fix: str, *, name: str = "") -> int:
    """Refuse a zip whose listing is past the caps before zipfile parses it (~430 bytes of
    memory per entry): more than `max_members` entries, or a central directory larger than
    limits.MAX_ZIP_DIRECTORY_BYTES. Used for uploads and for locked wheels; `fix` ends the message,
    which starts with `name` (default: the file's name).

    Finds the end records where zipfile does (the last 22 bytes, else the last 64 KiB + 22), then
    counts the records in the bytes zipfile would parse: the declared count may lie. Raises
    UnsafeArchiveError, or zipfile.BadZipFile for a zip zipfile could not read either. Returns
    the number of entries listed.
    """
    name, members, cap = name or path.name, max_members, limits.MAX_ZIP_DIRECTORY_BYTES
    with path.open("rb") as f:
        size = f.seek(0, os.SEEK_END)
        tail_start = max(0, size - _EOCD.size - 0xFFFF)
        f.seek(tail_start)
        tail = f.read()
        at = len(tail) - _EOCD.size
        if tail[at : at + 4] != b"PK\x05\x06" or tail[-2:] != b"\0\0":
            at = tail.rfind(b"PK\x05\x06")
        if at < 0 or len(tail) - at < _EOCD.size:
            raise zipfile.BadZipFile("no end of central directory record")
        _, _, _, _, count, listing, _, _ = _EOCD.unpack_from(tail, at)
        location = tail_start + at
        locator_at = location - _ZIP64_LOCATOR.size
        if locator_at - _ZIP64_EOCD.size >= 0:
            f.seek(locator_at - _ZIP64_EOCD.size)
            record = f.read(_ZIP64_EOCD.size + _ZIP64_LOCATOR.size)
            if (
                record[_ZIP64_EOCD.size : _ZIP64_EOCD.size + 4] == b"PK\x06\x07"
                and record[:4] == b"PK\x06\x06"
            ):
                count, listing = _ZIP64_EOCD.unpack_from(record)[7:9]
                location = locator_at - _ZIP64_EOCD.size
        if count > members:
            raise UnsafeArchiveError(
                f"{name}: the zip lists {count:,} members, past the limit of "
                f"{members:,} members: {fix}"
            )
        if listing > cap:
            raise UnsafeArchiveError(
                f"{name}: the zip's list of members (central directory) takes "
                f"{listing:,} bytes, past the limit of {cap:,} bytes: {fix}"
            )
        if listing > location:
            raise zipfile.BadZipFile("bad offset for central directory")
        f.seek(location - listing)
        data = f.read(listing)
    offset = found = 0
    while offset < len(data):
        if data[offset : offset + 4] != b"PK\x01\x02" or len(data) - offset < _CENTRAL.size:
            raise zipfile.BadZipFile("bad record in the central directory")
        name_length, extra_length, comment_length = _CENTRAL.unpack_from(data, offset)[10:13]
        offset += _CENTRAL.size + name_length + extra_length + comment_length
        found += 1
        if found > members:
            raise UnsafeArchiveError(
                f"{name}: the zip lists more than {members:,} members (it "
                f"declares {count:,}), past the limit of {members:,} members: "
                f"{fix}"
            )
    return found


def _unpack_zip(out: _Extractor) -> None:
    check_zip_listing(out.archive, limits.MAX_ARCHIVE_MEMBERS, _LISTING_FIX)
    try:
        zf = zipfile.ZipFile(out.archive)
    except UnicodeDecodeError as exc:  # flagged UTF-8, but is not; exc.object is the raw name
        raise out.refuse(exc.object, "is not valid UTF-8", _UTF8_FIX) from exc
    with zf:
        for info in zf.infolist():
            mode = info.external_attr >> 16 if info.create_system == 3 else 0  # 3 = Unix
            is_dir = info.is_dir() or stat.S_ISDIR(mode)
            name = _zip_name(out, info)
            if out.skip_macos_metadata(name):
                continue
            parts = out.claim(name, is_dir)
            if is_dir:
                out.make_dirs(parts)
                continue
            if stat.S_ISLNK(mode):
                raise out.refuse(name, "is a symbolic link", _LINK_FIX)
            if stat.S_IFMT(mode) not in (0, stat.S_IFREG):
                raise out.refuse(name, "is not a regular file or directory", "remove it")
            if info.flag_bits & _ZIP_ENCRYPTED_FLAG:
                raise out.refuse(name, "is encrypted", "upload an archive without a password")
            try:
                src = zf.open(info)
            except NotImplementedError as exc:
                raise out.refuse(
                    name,
                    f"uses an unsupported compression ({exc})",
                    "re-create the archive with deflate (`zip`'s default)",
                ) from exc
            with src:
                out.write_file(parts, src, bool(mode & 0o111), info.compress_size)


def _zip_name(out: _Extractor, info: zipfile.ZipInfo) -> str:
    name = info.orig_filename  # zipfile's `filename` silently cuts at a NUL
    if info.flag_bits & _ZIP_UTF8_FLAG or name.isascii():
        return name
    raw = name.encode("cp437")  # undo zipfile's cp437 decoding: the bytes as stored
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise out.refuse(raw, "is not valid UTF-8 (a legacy code page?)", _UTF8_FIX) from None


class _TarStream:
    """The decompressed tar stream, every byte counted as the decompressor yields it.

    tarfile reads a member's headers (pax, GNU long names) whole, so they are capped while being
    read, not after. Content is credited as each member is announced, so what is left is header
    bytes; the ratio and the size cap apply to the whole stream, headers included.
    """

    def __init__(self, raw: _Readable, out: _Extractor) -> None:
        self.raw, self.out = raw, out
        self.total = 0  # bytes yielded by the decompressor
        self.content = 0  # bytes of member data (and its padding) announced so far
        self.run_start = 0  # header bytes before the current member's headers
        self.after = "before the first member"
        self.in_headers = True

    def members(self, tf: tarfile.TarFile) -> Iterator[tarfile.TarInfo]:
        """tf's members; between two of them tarfile reads headers (and skips unread data)."""
        while True:
            self.in_headers = True
            member = tf.next()
            if member is None:
                return
            # tf.offset: where the next header starts, after this member's data and padding
            self.run_start = self.total - self.content
            self.content += tf.offset - member.offset_data
            self.after, self.in_headers = f"after member {member.name!r}", False
            yield member

    def read(self, size: int = -1) -> bytes:
        data = self.raw.read(CHUNK if size < 0 else min(size, CHUNK))
        self.total += len(data)
        self._check()
        return data

    def _refuse(self, problem: str) -> UnsafeArchiveError:
        who = (
            f"the tar headers {self.after} take"
            if self.in_headers
            else f"member {self.out.current!r} takes"
        )
        return UnsafeArchiveError(f"{self.out.archive.name}: {who} {problem}: {_BOMB_FIX}")

    def _check(self) -> None:
        out = self.out
        header_cap = limits.MAX_TAR_HEADER_BYTES
        if self.total - self.content - self.run_start > header_cap + _TAR_READ_AHEAD:
            raise self._refuse(
                f"more than {header_cap:,} bytes, past the limit for one member's headers"
            )
        # The grace covers the zeros that pad every tar to a 10,240-byte record.
        ratio, grace = limits.MAX_COMPRESSION_RATIO, limits.RATIO_GRACE_BYTES + _TAR_READ_AHEAD
        if self.total > grace and self.total > ratio * out.archive_size:
            raise self._refuse(
                f"the archive past {ratio} times its size once decompressed (tar headers included)"
            )
        cap = limits.MAX_UNPACKED_BYTES + TAR_HEADER_ALLOWANCE * (out.entries + 1) + _TAR_READ_AHEAD
        if self.total > cap:
            raise self._refuse(f"the tar stream past {cap} bytes")


def _unpack_tar(out: _Extractor) -> None:
    # Stream mode ("r|"): the archive is read once, front to back, and never seeked.
    with out.archive.open("rb") as f, gzip.GzipFile(fileobj=f) as gz:
        stream = _TarStream(gz, out)
        # stream mode only ever calls read()
        with tarfile.open(fileobj=cast(IO[bytes], stream), mode="r|", encoding="utf-8") as tf:
            for member in stream.members(tf):
                out.current = member.name
                if out.skip_macos_metadata(member.name):
                    continue
                if not (member.isfile() or member.isdir()):
                    link = member.issym() or member.islnk()
                    raise out.refuse(
                        member.name,
                        _tar_kind(member),
                        _LINK_FIX if link else "remove it from the archive",
                    )
                parts = out.claim(member.name, member.isdir())  # our messages first
                if _DATA_FILTER is not None and parts:  # then the stdlib's own checks
                    try:
                        _DATA_FILTER(member, str(out.dest))
                    except tarfile.FilterError as exc:
                        raise out.refuse(
                            member.name,
                            f"is refused by tarfile's data filter ({exc})",
                            "archive plain files only",
                        ) from exc
                if member.isdir():
                    out.make_dirs(parts)
                    continue
                src = tf.extractfile(member)
                assert src is not None  # a regular file always has a content stream
                with src:
                    out.write_file(parts, src, bool(member.mode & 0o111), None)


def _tar_kind(member: tarfile.TarInfo) -> str:
    if member.issym():
        return f"is a symbolic link (to {member.linkname!r})"
    if member.islnk():
        return f"is a hard link (to {member.linkname!r})"
    if member.ischr() or member.isblk():
        return "is a device node"
    if member.isfifo():
        return "is a FIFO"
    return "is not a regular file or directory"


def _clear(dest: Path) -> None:
    """Remove everything under dest, leaving dest itself (empty)."""
    for child in dest.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()
