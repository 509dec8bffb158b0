"""A reproducible zip writer that compresses on every core and copies compressed members as-is.

The standard library's zipfile compresses one member at a time on the calling thread and cannot
accept data that is already compressed (python/cpython#113924), which makes it the slowest step of
a layer build. This writer copies members of other zips (wheels, stored or deflated, whatever
their local headers, data descriptors or zip64 extras held) without recompressing them: their
compressed bytes, CRC and sizes come from the source's central directory. Files on disk are split
into 1 MiB chunks that worker threads deflate independently (each primed with the previous 32 KiB,
as pigz does; zlib releases the GIL). Reading zips stays with zipfile.

Output is byte-identical for identical input: sorted names, one fixed timestamp, normalised modes,
no extra fields.
"""

from __future__ import annotations

import hashlib
import os
import struct
import zlib
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO
from zipfile import ZIP_DEFLATED, ZIP_STORED, ZipFile

from . import limits
from .cache import sha256_file
from .errors import LayerTooLargeError

CHUNK = 1 << 20
WINDOW = 1 << 15
_LOCAL = struct.Struct("<IHHHHHIIIHH")
_CENTRAL = struct.Struct("<IHHHHHHIIIHHHHHII")
_END = struct.Struct("<IHHHHIIH")
_LOCAL_SIG, _CENTRAL_SIG, _END_SIG = 0x04034B50, 0x02014B50, 0x06054B50
_VERSION = 20
_MADE_BY = (3 << 8) | _VERSION  # Unix, so external_attr carries the file mode
_UTF8 = 0x800
_DOS_TIME = 0
_DOS_DATE = ((limits.ZIP_EPOCH[0] - 1980) << 9) | (limits.ZIP_EPOCH[1] << 5) | limits.ZIP_EPOCH[2]
_MAX_ENTRIES = 0xFFFF
_MAX_OFFSET = 0xFFFFFFFF


@dataclass(frozen=True)
class FileEntry:
    """A file on disk to compress into the zip."""

    name: str
    path: Path
    executable: bool = False


@dataclass(frozen=True)
class DataEntry:
    """Bytes made by the builder (RECORD, bytecode, the manifest), deflated on the pool."""

    name: str
    data: bytes
    executable: bool = False


@dataclass(frozen=True)
class RawEntry:
    """A stored or deflated member of another zip, copied without recompressing."""

    name: str
    source: Path
    data_offset: int
    compress_size: int
    file_size: int
    crc: int
    sha256: str
    executable: bool = False
    compress_type: int = ZIP_DEFLATED


@dataclass(frozen=True)
class Written:
    name: str
    file_size: int
    compress_size: int
    sha256: str
    executable: bool


def _mode(executable: bool) -> int:
    return (0o100000 | (limits.ZIP_EXEC_MODE if executable else limits.ZIP_FILE_MODE)) << 16


def _deflate(path: Path, offset: int, last: bool, level: int) -> tuple[bytes, bytes]:
    with open(path, "rb") as f:
        start = max(0, offset - WINDOW)
        f.seek(start)
        zdict = f.read(offset - start)
        data = f.read(CHUNK)
    if zdict:
        compressor = zlib.compressobj(level, zlib.DEFLATED, -15, 9, zlib.Z_DEFAULT_STRATEGY, zdict)
    else:
        compressor = zlib.compressobj(level, zlib.DEFLATED, -15)
    # Non-final chunks end byte-aligned without the final bit, so the pieces concatenate.
    body = compressor.compress(data)
    return data, body + compressor.flush(zlib.Z_FINISH if last else zlib.Z_SYNC_FLUSH)


def _deflate_bytes(data: bytes, level: int) -> tuple[bytes, bytes]:
    compressor = zlib.compressobj(level, zlib.DEFLATED, -15)
    return data, compressor.compress(data) + compressor.flush()


Entry = FileEntry | RawEntry | DataEntry


def _chunk_tasks(entries: list[Entry]) -> Iterator[tuple[int, Path | bytes, int, bool]]:
    for position, entry in enumerate(entries):
        if isinstance(entry, FileEntry):
            size = entry.path.stat().st_size
            offsets = range(0, max(size, 1), CHUNK)
            for offset in offsets:
                yield position, entry.path, offset, offset + CHUNK >= size
        elif isinstance(entry, DataEntry):
            yield position, entry.data, 0, True


def entry_size(entry: Entry) -> int:
    """Its bytes once unzipped."""
    if isinstance(entry, RawEntry):
        return entry.file_size
    if isinstance(entry, DataEntry):
        return len(entry.data)
    return entry.path.stat().st_size


def raw_entries(zip_path: Path, sha256: dict[str, str], prefix: str = "") -> list[RawEntry]:
    """The stored or deflated members of any zip, ready to copy into another one (as
    prefix + name). Sizes and CRC come from the central directory, which zipfile reads with its
    zip64 extras, so local headers with data descriptors copy as well."""
    entries = []
    with ZipFile(zip_path) as zf, open(zip_path, "rb") as f:
        for info in zf.infolist():
            if info.is_dir():
                continue
            if info.compress_type not in (ZIP_STORED, ZIP_DEFLATED) or info.flag_bits & 0x1:
                raise ValueError(
                    f"{zip_path.name}:{info.filename} is encrypted or uses compression "
                    f"method {info.compress_type}"
                )
            f.seek(info.header_offset)
            header = _LOCAL.unpack(f.read(_LOCAL.size))
            data_offset = info.header_offset + _LOCAL.size + header[9] + header[10]
            executable = bool((info.external_attr >> 16) & 0o111)
            entries.append(
                RawEntry(
                    prefix + info.filename,
                    zip_path,
                    data_offset,
                    info.compress_size,
                    info.file_size,
                    info.CRC,
                    sha256[info.filename],
                    executable,
                    info.compress_type,
                )
            )
    return entries


class _Hashing:
    """The output file, hashed as it is written: the zip's sha256 without reading it back. A
    seek (patching a header written before its sizes were known) ends the hash; the caller then
    reads the file (`sha256` is None)."""

    def __init__(self, f: BinaryIO) -> None:
        self.f = f
        self.position = 0
        self.digest: Any = hashlib.sha256()

    def write(self, data: bytes) -> None:
        self.f.write(data)
        self.position += len(data)
        if self.digest is not None:
            self.digest.update(data)

    def tell(self) -> int:
        return self.position

    def seek(self, position: int) -> None:
        self.f.seek(position)
        self.position = position
        self.digest = None

    @property
    def sha256(self) -> str | None:
        return None if self.digest is None else self.digest.hexdigest()


class _Output:
    def __init__(self, f: _Hashing) -> None:
        self.f = f
        self.central: list[bytes] = []

    def begin(
        self, name: bytes, method: int = ZIP_DEFLATED, sizes: tuple[int, int, int] | None = None
    ) -> int:
        """A local header; with `sizes` (crc, compressed, uncompressed) known up front there is
        nothing to patch afterwards."""
        offset = self.f.tell()
        if offset > _MAX_OFFSET:
            raise LayerTooLargeError("The layer zip grew past 4 GiB, far beyond Lambda's limits.")
        crc, csize, usize = sizes or (0, 0, 0)
        self.f.write(
            _LOCAL.pack(
                _LOCAL_SIG,
                _VERSION,
                _UTF8,
                method,
                _DOS_TIME,
                _DOS_DATE,
                crc,
                csize,
                usize,
                len(name),
                0,
            )
            + name
        )
        return offset

    def finish(
        self,
        name: bytes,
        offset: int,
        crc: int,
        csize: int,
        usize: int,
        exe: bool,
        method: int = ZIP_DEFLATED,
        patch: bool = True,
    ) -> None:
        if patch:
            end = self.f.tell()
            self.f.seek(offset + 14)
            self.f.write(struct.pack("<III", crc, csize, usize))
            self.f.seek(end)
        self.central.append(
            _CENTRAL.pack(
                _CENTRAL_SIG,
                _MADE_BY,
                _VERSION,
                _UTF8,
                method,
                _DOS_TIME,
                _DOS_DATE,
                crc,
                csize,
                usize,
                len(name),
                0,
                0,
                0,
                0,
                _mode(exe),
                offset,
            )
            + name
        )

    def close(self) -> None:
        start = self.f.tell()
        for record in self.central:
            self.f.write(record)
        size = self.f.tell() - start
        count = len(self.central)
        self.f.write(_END.pack(_END_SIG, 0, 0, count, count, size, start, 0))


def write_zip(
    out: Path,
    entries: Iterable[Entry],
    *,
    level: int = limits.ZIP_COMPRESS_LEVEL,
    workers: int | None = None,
    on_written: Callable[[Written], None] | None = None,
) -> list[Written]:
    """Write entries sorted by name; returns what was written, in order. `on_written` hears of
    each entry once it is in the file (progress)."""
    return write_zip_hashed(out, entries, level=level, workers=workers, on_written=on_written)[0]


def write_zip_hashed(
    out: Path,
    entries: Iterable[Entry],
    *,
    level: int = limits.ZIP_COMPRESS_LEVEL,
    workers: int | None = None,
    on_written: Callable[[Written], None] | None = None,
) -> tuple[list[Written], str]:
    """write_zip, and the sha256 of the file it wrote (taken as it was written when no header
    had to be patched: the members of more than one CHUNK of the project's own files)."""
    ordered = sorted(entries, key=lambda e: e.name)
    names = [e.name for e in ordered]
    if len(set(names)) != len(names):
        duplicate = next(n for n in names if names.count(n) > 1)
        raise ValueError(f"duplicate zip entry {duplicate}")
    if len(ordered) > _MAX_ENTRIES:
        raise LayerTooLargeError(
            f"The layer has {len(ordered)} files; a zip without ZIP64 holds {_MAX_ENTRIES}. "
            "Slim the dependencies."
        )
    workers = workers or min(32, (os.cpu_count() or 1) + 2)
    written: list[Written] = []
    with open(out, "wb") as file, ThreadPoolExecutor(workers) as pool:
        f = _Hashing(file)
        output = _Output(f)
        tasks = _chunk_tasks(ordered)
        pending: deque[tuple[int, bool, Future]] = deque()

        def refill() -> None:
            while len(pending) < workers * 4:
                task = next(tasks, None)
                if task is None:
                    return
                position, source, offset, last = task
                if isinstance(source, bytes):
                    pending.append((position, last, pool.submit(_deflate_bytes, source, level)))
                else:
                    pending.append(
                        (position, last, pool.submit(_deflate, source, offset, last, level))
                    )

        refill()
        for position, entry in enumerate(ordered):
            name = entry.name.encode("utf-8")
            if isinstance(entry, RawEntry):
                if entry.compress_type not in (ZIP_STORED, ZIP_DEFLATED):
                    raise ValueError(
                        f"{entry.source.name}:{entry.name} uses compression "
                        f"method {entry.compress_type}"
                    )
                sizes = (entry.crc, entry.compress_size, entry.file_size)
                offset = output.begin(name, entry.compress_type, sizes)
                _copy_raw(entry, f)
                output.finish(
                    name, offset, *sizes, entry.executable, method=entry.compress_type, patch=False
                )
                written.append(
                    Written(
                        entry.name,
                        entry.file_size,
                        entry.compress_size,
                        entry.sha256,
                        entry.executable,
                    )
                )
            else:
                _write_deflated(entry, position, name, output, pending, refill, written, f)
            if on_written is not None:
                on_written(written[-1])
        output.close()
    return written, f.sha256 or sha256_file(out)


def _write_deflated(
    entry: FileEntry | DataEntry,
    position: int,
    name: bytes,
    output: _Output,
    pending: deque,
    refill: Callable[[], None],
    written: list[Written],
    f: _Hashing,
) -> None:
    """Write the entry's chunks, which the pool deflated in order. One chunk: its sizes are
    known before its header is written; more: the header is patched once they are."""
    if pending and pending[0][0] == position and pending[0][1]:  # its only chunk
        data, deflated = pending.popleft()[2].result()
        refill()
        crc = zlib.crc32(data)
        offset = output.begin(name, sizes=(crc, len(deflated), len(data)))
        f.write(deflated)
        output.finish(name, offset, crc, len(deflated), len(data), entry.executable, patch=False)
        digest = hashlib.sha256(data).hexdigest()
        written.append(Written(entry.name, len(data), len(deflated), digest, entry.executable))
        return
    offset = output.begin(name)
    crc, csize, usize, sha = 0, 0, 0, hashlib.sha256()
    while pending and pending[0][0] == position:
        data, deflated = pending.popleft()[2].result()
        refill()
        crc = zlib.crc32(data, crc)
        sha.update(data)
        usize += len(data)
        csize += len(deflated)
        f.write(deflated)
    output.finish(name, offset, crc, csize, usize, entry.executable)
    written.append(Written(entry.name, usize, csize, sha.hexdigest(), entry.executable))


def _copy_raw(entry: RawEntry, out: _Hashing) -> None:
    with open(entry.source, "rb") as src:
        src.seek(entry.data_offset)
        remaining = entry.compress_size
        while remaining:
            block = src.read(min(CHUNK, remaining))
            if not block:
                raise ValueError(f"{entry.source.name} is truncated at {entry.name}")
            out.write(block)
            remaining -= len(block)
