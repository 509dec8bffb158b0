"""Strip step: shared objects without their symbol tables, where the layer needs the room.

`strip = "auto"` (the default) strips only when the layer would not fit with its headroom and all
its bytecode; `true` strips every shared object it can, `false` none. The heavy bench lock
(pandas, pyarrow, numpy) sits at Lambda's limit once slimmed and had room for 79 of its 761 .pyc;
its shared objects carry 37.5 MB of symbol tables that no import reads (elfstrip.py).

A stripped file must be deflated again (the wheel's compressed bytes no longer match), so files
are taken by what they free per byte deflated (the estimate is read from the ELF header while
planning: Plan.tails) until the room is there. Each stripped file is cached per wheel: the entry
is named by the wheel's sha256 (checked against the lock) and the member's path, never by a hash
the wheel itself claims, and the stripped bytes are content-addressed (verified on every use).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import struct
import uuid
import zipfile
import zlib
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import elfstrip, limits, wheel
from .cache import PARTIAL, BuildCache
from .pycache import member_bytes
from .wheel import Member, Plan

MODES = ("auto", "always", "never")
#: Bumped when elfstrip's output changes: older stripped files are then not reused.
STRIP_VERSION = 1
#: Measured on pyarrow's stripped libarrow.so (38.7 MB): level 1 deflates at 109 MB/s to 16.0 MB
#: (the wheel's level-6 copy of the unstripped file is 16.6 MB), level 3 at 79 MB/s, level 6 at
#: 35 MB/s. The first build of a wheel pays it; later ones copy the cached bytes.
STRIP_COMPRESS_LEVEL = 1
#: A file freeing less is not worth deflating again (pandas' extensions free 248 bytes each).
MIN_FREED_BYTES = 16 * 1024
_SLICE = 4 * 1024 * 1024
_SUFFIX = ".strip"

Plans = list[tuple[Plan, Path]]


@dataclass
class Outcome:
    plans: Plans
    files: int = 0
    freed: int = 0
    reused: int = 0
    refused: list[str] = field(default_factory=list)  # chosen, but nothing safe to drop

    def summary(self, mode: str) -> dict:
        return {
            "mode": mode,
            "files": self.files,
            "freed_bytes": self.freed,
            "reused": self.reused,
            "left_as_is": len(self.refused),
        }


def candidates(plans: Plans) -> list[tuple[int, str]]:
    """(plan index, member path) of every file worth stripping, most room per byte first. The
    estimates come from the wheel's own bytes: a member bigger than is ever stripped, or packed
    tighter than any real library, is not a candidate (it would be inflated whole to find out)."""
    ranked = []
    for index, (plan, _) in enumerate(plans):
        members = {m.dest: m for m in plan.members if not m.blob}
        for dest, tail in plan.tails.items():
            m = members.get(dest)
            if (
                m is None
                or not MIN_FREED_BYTES <= tail <= m.file_size <= limits.MAX_STRIP_MEMBER_BYTES
                or m.file_size > limits.MAX_COMPRESSION_RATIO * max(1, m.compress_size)
            ):
                continue
            ranked.append((-tail / m.file_size, -tail, index, dest))
    return [(index, dest) for *_, index, dest in sorted(ranked)]


def estimate(plans: Plans) -> int:
    """At most what stripping every file worth it frees (the tails; elfstrip.symbol_tail)."""
    return sum(plans[index][0].tails[dest] for index, dest in candidates(plans))


def strip(plans: Plans, need: int | None, cache: BuildCache, threads: int = 2) -> Outcome:
    """Strip files until `need` bytes are freed (None: every file worth it)."""
    outcome = Outcome(list(plans))
    todo = candidates(plans)
    while todo and (need is None or outcome.freed < need):
        batch, estimate = [], 0
        while todo and (need is None or outcome.freed + estimate < need):
            index, dest = todo.pop(0)
            batch.append((index, dest))
            estimate += outcome.plans[index][0].tails[dest]
        with ThreadPoolExecutor(max(1, min(threads, len(batch)))) as pool:
            done = list(pool.map(lambda i: _stripped(outcome.plans, i[0], i[1], cache), batch))
        _apply(outcome, batch, done)
    return outcome


def _apply(outcome: Outcome, batch: list[tuple[int, str]], done: list) -> None:
    by_plan: dict[int, dict[str, Member]] = {}
    for (index, dest), (member, reused) in zip(batch, done, strict=True):
        if member is None:
            outcome.refused.append(dest)
            continue
        old = next(m for m in outcome.plans[index][0].members if m.dest == dest)
        outcome.files += 1
        outcome.freed += old.file_size - member.file_size
        outcome.reused += reused
        by_plan.setdefault(index, {})[dest] = member
    for index, replaced in by_plan.items():
        plan, path = outcome.plans[index]
        new = dataclasses.replace(
            plan, members=[replaced.get(m.dest, m) for m in plan.members], generated={}
        )
        wheel.generate(new, requested=f"{plan.dist_info}/REQUESTED" in plan.generated)
        outcome.plans[index] = (new, path)


def entry_name(wheel_path: Path, dest: str) -> str:
    """Named by the wheel file (its sha256, checked against the lock) and the member's path."""
    digest = hashlib.sha256(f"{dest}\0{STRIP_VERSION}\0{STRIP_COMPRESS_LEVEL}".encode())
    return f"strip-{wheel_path.name.split('.')[0]}-{digest.hexdigest()[:16]}"


def _stripped(plans: Plans, index: int, dest: str, cache: BuildCache) -> tuple[Member | None, bool]:
    """The stripped member (its bytes in a cached file), and whether the cache had it."""
    plan, path = plans[index]
    member = next(m for m in plan.members if m.dest == dest)
    name = entry_name(path, dest)
    known = cache.get(name)
    if known is not None:
        meta = json.loads(known)
        if not meta:
            return None, True  # stripped before: nothing safe to drop
        blob = cache.wheel(meta["blob"], _SUFFIX)
        if blob is not None:
            return _member(member, meta, blob), True
    with open(path, "rb") as f:
        f.seek(member.data_offset)
        data = member_bytes(f.read(member.compress_size), member, plan)
    try:
        result = elfstrip.strip_symbols(data)
    except (IndexError, KeyError, ValueError, struct.error):  # elfstrip refuses what it knows of
        result = None
    if result is None:
        cache.put(name, b"{}")
        return None, False
    meta, blob = _deflate(result.pieces(), cache)
    cache.put(name, json.dumps(meta).encode())
    return _member(member, meta, blob), False


def _deflate(pieces: Iterable[bytes | memoryview], cache: BuildCache) -> tuple[dict, Path]:
    compressor = zlib.compressobj(STRIP_COMPRESS_LEVEL, zlib.DEFLATED, -15)
    crc, size, content, packed = 0, 0, hashlib.sha256(), hashlib.sha256()
    # Beside its final place (the cache may sit on another file system than the work dir); a
    # killed build's partial file is swept by cache.evict.
    partial = cache.wheel_path(f".strip-{uuid.uuid4().hex}", PARTIAL)
    try:
        with open(partial, "wb") as out:
            for piece in pieces:
                view = memoryview(piece)
                for start in range(0, len(view), _SLICE):
                    chunk = view[start : start + _SLICE]
                    crc, size = zlib.crc32(chunk, crc), size + len(chunk)
                    content.update(chunk)
                    block = compressor.compress(chunk)
                    packed.update(block)
                    out.write(block)
            block = compressor.flush()
            packed.update(block)
            out.write(block)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    meta: dict[str, Any] = {
        "blob": packed.hexdigest(),
        "file_size": size,
        "crc": crc,
        "sha256": content.hexdigest(),
        "compress_size": partial.stat().st_size,
    }
    blob = cache.wheel_path(packed.hexdigest(), _SUFFIX)
    os.replace(partial, blob)
    cache.added_wheel(packed.hexdigest(), _SUFFIX)
    return meta, blob


def _member(member: Member, meta: dict, blob: Path) -> Member:
    return dataclasses.replace(
        member,
        data_offset=0,
        compress_type=zipfile.ZIP_DEFLATED,
        compress_size=meta["compress_size"],
        file_size=meta["file_size"],
        crc=meta["crc"],
        sha256=meta["sha256"],
        blob=str(blob),
    )
