"""The whole-build memo: the same inputs again give the same zip, copied instead of rebuilt.

A build is a function of its inputs: the lock (every pin, its hashes and index), the Pipfile,
the project's settings and own code, the target, the request's options and the engine itself.
When all of them hash to a key an earlier successful build left in the cache, its zip (stored
content-addressed, sha256 checked while it is copied out) and report are reused; the report says
so. The entry naming the zip is a derived cache entry, HMAC-signed like the others, so a memo
edited on disk is refused and the build runs. Memos stay on this machine (never the shared
level): a zip is large and a report is not redacted yet.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from . import __version__
from .cache import PARTIAL, BuildCache
from .package import content_hash, tree_entries
from .report import BuildReport

SUFFIX = ".zip"
BLOCK = 1 << 20


@functools.lru_cache(maxsize=1)
def engine_digest() -> str:
    """The engine's version and the sources of its modules: a changed engine builds again."""
    digest = hashlib.sha256(__version__.encode())
    for path in sorted(Path(__file__).parent.glob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def key(inputs: Mapping[str, Any], own_tree: Path) -> str:
    """The memo's name for these inputs (any JSON-able values) plus the own code's content."""
    text = json.dumps(
        {**inputs, "engine": engine_digest(), "own": content_hash(tree_entries(own_tree))},
        sort_keys=True,
        default=repr,
    )
    return "build-" + hashlib.sha256(text.encode()).hexdigest()


def reuse(cache: BuildCache, name: str, dest: Path) -> BuildReport | None:
    """Copy the remembered zip to dest and return its report, or None (nothing written)."""
    payload = cache.get(name, local_only=True)
    if payload is None:
        return None
    try:
        memo = json.loads(payload)
        sha256, report = memo["zip_sha256"], BuildReport(**memo["report"])
    except (ValueError, KeyError, TypeError):
        return None
    source = cache.wheel_path(sha256, SUFFIX)
    if not _copy_checked(source, dest, sha256):
        dest.unlink(missing_ok=True)
        if source.exists():
            source.unlink(missing_ok=True)
            cache.warnings.append(
                f"The remembered layer {sha256[:12]}… did not match its sha256 and was built again."
            )
        return None
    return report


def remember(cache: BuildCache, name: str, output: Path, report: BuildReport) -> int:
    """Keep the zip (a hard link when the cache is on the same disk) and a signed memo naming it.
    Returns the bytes this added to the disk: the zip's size when it had to be copied, else 0."""
    stored = cache.wheel_path(report.zip_sha256, SUFFIX)
    added = 0
    if not stored.exists():
        partial = stored.with_name(f".{stored.name}.{uuid.uuid4().hex}{PARTIAL}")
        try:
            try:
                os.link(output, partial)
            except OSError:
                shutil.copyfile(output, partial)
                added = report.zipped_bytes
            os.replace(partial, stored)
        finally:
            partial.unlink(missing_ok=True)
    memo = {"zip_sha256": report.zip_sha256, "report": dataclasses.asdict(report)}
    cache.put(name, json.dumps(memo, sort_keys=True).encode(), local_only=True)
    return added


def _copy_checked(source: Path, dest: Path, sha256: str) -> bool:
    """Copy block by block while hashing (one read, little memory); True when the sha256 matches."""
    digest = hashlib.sha256()
    try:
        src = open(source, "rb") if not source.is_symlink() else None
    except FileNotFoundError:
        src = None
    if src is None:
        return False
    with src, open(dest, "wb") as out:
        for block in iter(lambda: src.read(BLOCK), b""):
            digest.update(block)
            out.write(block)
    if digest.hexdigest() != sha256:
        return False
    os.utime(source)  # used: last to be evicted
    return True
