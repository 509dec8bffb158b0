"""Unpack a candidate layer for a check, in parallel, every name, size and CRC checked.

Two inputs: a zip the builder made (the check function gets one by pre-signed URL:
`extract_layer`), or the builder's own entries, read straight from the wheels and files they
name (the CLI's LocalSandbox: `extract_entries`, no zip written and read back). The input is the
builder's, but each member is still checked: nothing lands outside `dest`, no links, a zip's
local header must name the member its central directory lists and members may not overlap, and
the bytes really written are capped (a header may lie). Threads inflate members at once: zlib and
file writes release the GIL, and unzipping the heavy bench fixture's 250 MB candidate was two
thirds of its cold check (2.1 s serial, 1.0 s with four threads on two cores). Sources are read
with pread on one descriptor each, shared by the threads, at most MAX_OPEN_SOURCES at a time.

Members are inflated with ISA-L (`isal`, Intel's deflate library, with manylinux wheels for every
Lambda runtime and both machines) where it is installed, else with zlib: on that candidate's
members ISA-L inflates in 0.33 s what zlib inflates in 0.70-0.77 s (zlib-ng 0.35 s), and the
output of a deflate stream is the same whichever library reads it. CRCs stay with zlib.
"""

from __future__ import annotations

import os
import shutil
import struct
import threading
import types
import zipfile
import zlib
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from . import limits
from .zipwriter import DataEntry, Entry, RawEntry

inflater: types.ModuleType
try:
    from isal import isal_zlib as inflater
except ImportError:  # a platform without its wheel: the same bytes, slower
    inflater = zlib
#: What a damaged deflate stream raises, whichever library reads it.
_STREAM_ERRORS: tuple[type[BaseException], ...] = (
    zipfile.BadZipFile,
    zlib.error,
    inflater.error,
    EOFError,
)

WORKERS = min(8, (os.cpu_count() or 1) + 2)
CHUNK = 1024 * 1024
_LINK = 0o120000
#: A local header: signature, version, flags, method, time, date, CRC, sizes, name and extra lengths.
_LOCAL = struct.Struct("<4sHHHHHIIIHH")
#: Sources (wheels) open at once: a lock of hundreds of wheels stays far below any fd limit.
MAX_OPEN_SOURCES = 64


class LayerZipError(ValueError):
    """The zip is not what the builder makes (a path outside, a link, too many or too big)."""


class LayerZipTooLarge(LayerZipError):
    """It unpacks to more than the cap: too big, not damaged."""


@dataclass(frozen=True)
class _Item:
    """One file to write: stored or deflated bytes at an offset of a zip or a wheel, or bytes
    the builder made, or a file of the project's own code."""

    name: str
    target: Path
    source: Path | None = None
    #: Where the member's local header starts (a zip's: its length is read, and its name must
    #: be `raw_name`, as its central directory says) ...
    header_offset: int | None = None
    raw_name: bytes = b""
    #: Where the next member's header (or the central directory) starts: its data ends before.
    data_limit: int | None = None
    #: ... or where its data starts (a wheel member the builder already located).
    data_offset: int | None = None
    compress_size: int = 0
    compress_type: int = zipfile.ZIP_STORED
    file_size: int = 0
    crc: int = 0
    data: bytes | None = None
    copy_of: Path | None = None


def extract_layer(
    archive: Path, dest: Path, *, max_bytes: int | None = None, max_members: int | None = None
) -> Path:
    """Unzip `archive` into `dest` (created); returns `dest` resolved."""
    root = dest.resolve()
    with zipfile.ZipFile(archive) as zf:
        members = zf.infolist()
        directory = zf.start_dir
    if max_members is not None and len(members) > max_members:
        raise LayerZipError(f"the zip has more than {max_members:,} members")
    # Each member's data ends before the next member's header (or the central directory):
    # members sharing bytes would write the same data under many names.
    offsets = sorted(m.header_offset for m in members)
    if any(a == b for a, b in zip(offsets, offsets[1:], strict=False)):
        raise LayerZipError("members overlap in the zip: two share one local header")
    limit_of = dict(zip(offsets, [*offsets[1:], directory], strict=False))  # none: empty
    items, dirs = [], []
    for member in members:  # every name is checked before anything is written
        target = _inside(root, member.filename)
        if (member.external_attr >> 16) & 0o170000 == _LINK:
            raise LayerZipError(f"the zip holds a symbolic link: {member.filename!r}")
        if member.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED) or (
            member.flag_bits & 0x1
        ):
            raise LayerZipError(
                f"{member.filename} is encrypted or uses compression method {member.compress_type}"
            )
        if member.is_dir():
            dirs.append(target)
            continue
        encoding = "utf-8" if member.flag_bits & 0x800 else "cp437"  # as zipfile decodes it
        raw_name = member.orig_filename.encode(encoding)
        limit = limit_of[member.header_offset]
        # The least it needs, before its extra field is known (_data_offset checks the rest).
        if member.header_offset + _LOCAL.size + len(raw_name) + member.compress_size > limit:
            raise LayerZipError(f"members overlap in the zip: {member.filename!r} and the next one")
        items.append(
            _Item(
                member.filename,
                target,
                source=archive,
                header_offset=member.header_offset,
                raw_name=raw_name,
                data_limit=limit,
                compress_size=member.compress_size,
                compress_type=member.compress_type,
                file_size=member.file_size,
                crc=member.CRC,
            )
        )
    _write_all(root, dirs, items, max_bytes)
    return root


#: What a candidate may unpack to: the layer (at most Lambda's limit, the twin of another
#: machine unchecked) and the bytecode already cached for its wheels (at most about as much).
MAX_CANDIDATE_BYTES = 2 * limits.MAX_UNZIPPED_BYTES


def extract_entries(
    entries: Iterable[Entry], dest: Path, *, max_bytes: int | None = MAX_CANDIDATE_BYTES
) -> Path:
    """The tree the builder's zip of `entries` would unzip to, read straight from the wheels
    and files the entries name: a check on this machine needs no zip written and read back
    (0.2 s and 80 MB of the heavy bench fixture's cold build). Sizes and CRCs are checked as
    in a zip, and what is written is capped at `max_bytes`."""
    root = dest.resolve()
    items, names = [], set()
    for entry in entries:
        if entry.name in names:  # as write_zip: one file per name
            raise ValueError(f"duplicate layer entry {entry.name}")
        names.add(entry.name)
        target = _inside(root, entry.name)
        if isinstance(entry, RawEntry):
            if entry.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
                raise LayerZipError(f"{entry.name} uses compression method {entry.compress_type}")
            items.append(
                _Item(
                    entry.name,
                    target,
                    source=entry.source,
                    data_offset=entry.data_offset,
                    compress_size=entry.compress_size,
                    compress_type=entry.compress_type,
                    file_size=entry.file_size,
                    crc=entry.crc,
                )
            )
        elif isinstance(entry, DataEntry):
            items.append(_Item(entry.name, target, data=entry.data))
        else:
            items.append(_Item(entry.name, target, copy_of=entry.path))
    _write_all(root, [], items, max_bytes)
    return root


def _inside(root: Path, name: str) -> Path:
    target = (root / name).resolve()
    if root != target and root not in target.parents:
        raise LayerZipError(f"the zip holds a path outside its root: {name!r}")
    return target


def _write_all(root: Path, dirs: list[Path], items: list[_Item], max_bytes: int | None) -> None:
    for folder in dirs:
        folder.mkdir(parents=True, exist_ok=True)
    for item in items:
        item.target.parent.mkdir(parents=True, exist_ok=True)
    root.mkdir(parents=True, exist_ok=True)
    unzipper = _Unzipper(max_bytes)
    for batch in _batches(items):
        batch.sort(key=lambda item: -item.compress_size)  # the largest first: no long tail
        unzipper.run(batch)


def _batches(items: list[_Item]) -> Iterator[list[_Item]]:
    """The items, in runs reading from at most MAX_OPEN_SOURCES sources each."""
    by_source: dict[Path | None, list[_Item]] = {}
    for item in items:
        by_source.setdefault(item.source, []).append(item)
    batch: list[_Item] = []
    sources = 0
    for source, mine in by_source.items():
        if source is not None and sources == MAX_OPEN_SOURCES:
            yield batch
            batch, sources = [], 0
        batch += mine
        sources += source is not None
    if batch:
        yield batch


class _Unzipper:
    def __init__(self, max_bytes: int | None) -> None:
        self.max_bytes = max_bytes
        self.written = 0
        self.lock = threading.Lock()
        self.fds: dict[Path, int] = {}

    def run(self, items: list[_Item]) -> None:
        pool = ThreadPoolExecutor(WORKERS)
        try:
            for _ in pool.map(self.one, items):
                pass
        except _STREAM_ERRORS as exc:
            raise LayerZipError(f"the zip is damaged: {exc}") from None
        finally:
            pool.shutdown(wait=True, cancel_futures=True)  # the first error stops the rest
            for fd in self.fds.values():
                os.close(fd)
            self.fds.clear()

    def count(self, n: int) -> None:
        with self.lock:
            self.written += n
            if self.max_bytes is not None and self.written > self.max_bytes:
                raise LayerZipTooLarge(
                    f"the candidate unpacks to more than {self.max_bytes:,} bytes"
                )

    def _fd(self, source: Path) -> int:
        """One descriptor per source, shared: pread needs no position of its own."""
        with self.lock:
            if source not in self.fds:
                self.fds[source] = os.open(source, os.O_RDONLY | os.O_CLOEXEC)
            return self.fds[source]

    def one(self, item: _Item) -> None:
        if item.data is not None:
            self.count(len(item.data))
            item.target.write_bytes(item.data)
            return
        if item.copy_of is not None:
            self.count(item.copy_of.stat().st_size)
            shutil.copyfile(item.copy_of, item.target)
            return
        assert item.source is not None
        fd = self._fd(item.source)
        offset = item.data_offset
        if offset is None:
            assert item.header_offset is not None
            offset = _data_offset(fd, item)
        # Always streamed and capped: a deflate stream may claim a small size and inflate to
        # gigabytes, so no member is ever inflated whole before the caps are checked.
        with open(item.target, "wb") as out:
            crc, size = 0, 0
            for piece in _pieces(fd, offset, item):
                size += len(piece)
                self.count(len(piece))
                if size > item.file_size:
                    raise LayerZipError(f"the zip is damaged: {item.name} is longer than it says")
                crc = zlib.crc32(piece, crc)
                out.write(piece)
        if size != item.file_size or crc != item.crc:
            raise LayerZipError(f"the zip is damaged: {item.name} fails its size or CRC")


def _data_offset(fd: int, item: _Item) -> int:
    """Where a zip member's data starts, once its local header names it as the central
    directory does, with the same method."""
    assert item.header_offset is not None
    header = os.pread(fd, _LOCAL.size, item.header_offset)
    if len(header) < _LOCAL.size:
        raise LayerZipError(f"the zip is damaged: no local header for {item.name}")
    signature, _, _, method, _, _, _, _, _, name_len, extra_len = _LOCAL.unpack(header)
    name = os.pread(fd, name_len, item.header_offset + _LOCAL.size)
    if signature != b"PK\x03\x04" or name != item.raw_name or method != item.compress_type:
        raise LayerZipError(
            f"the zip is damaged: the local header of {item.name} does not match its listing"
        )
    start = item.header_offset + _LOCAL.size + name_len + extra_len
    if item.data_limit is not None and start + item.compress_size > item.data_limit:
        raise LayerZipError(f"members overlap in the zip: {item.name!r} and the next one")
    return start


def _pieces(fd: int, offset: int, item: _Item) -> Iterator[bytes]:
    left = item.compress_size
    inflate = inflater.decompressobj(-15) if item.compress_type == zipfile.ZIP_DEFLATED else None
    while left:
        block = os.pread(fd, min(CHUNK, left), offset)
        if not block:
            raise LayerZipError(f"the zip is damaged: {item.name} is truncated")
        left -= len(block)
        offset += len(block)
        if inflate is None:
            yield block
            continue
        while True:  # at most CHUNK out per call, however much the block inflates to
            piece = inflate.decompress(block, CHUNK)
            yield piece
            block = inflate.unconsumed_tail
            if inflate.eof or (not block and len(piece) < CHUNK):
                break
