"""Package step: the layer's entries (all under python/), its manifest and its content hash."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from pathlib import Path

from . import limits
from .cache import sha256_file
from .report import BuildReport
from .zipwriter import DataEntry, FileEntry, RawEntry

MANIFEST_NAME = ".layer-builder.json"
PREFIX = f"{limits.LAYER_PYTHON_DIR}/"


def tree_entries(tree: Path) -> list[FileEntry]:
    """Regular files under tree as python/<relative path>; links are never followed."""
    entries = []
    for dirpath, dirnames, filenames in os.walk(tree):
        dirnames.sort()
        for name in filenames:
            path = Path(dirpath, name)
            stat = path.lstat()
            if not path.is_file() or path.is_symlink():
                continue
            rel = path.relative_to(tree).as_posix()
            entries.append(FileEntry(PREFIX + rel, path, executable=bool(stat.st_mode & 0o111)))
    return entries


file_sha256 = sha256_file  # one implementation, in cache.py


def entry_sha256(entry: FileEntry | RawEntry | DataEntry) -> str:
    if isinstance(entry, RawEntry):
        return entry.sha256
    if isinstance(entry, DataEntry):
        return hashlib.sha256(entry.data).hexdigest()
    return file_sha256(entry.path)


def content_hash(entries: Iterable[FileEntry | RawEntry | DataEntry]) -> str:
    """sha256 over every file's name, mode and content: equal hashes mean equal layers."""
    lines = [
        f"{e.name}\0{int(e.executable)}\0{entry_sha256(e)}"
        for e in entries
        if e.name != PREFIX + MANIFEST_NAME
    ]
    return hashlib.sha256("\n".join(sorted(lines)).encode()).hexdigest()


def manifest(report: BuildReport) -> str:
    """What the layer is, stored inside it. Deterministic: no times, hosts or paths."""
    return (
        json.dumps(
            {
                "layer": report.layer_name,
                "version": report.layer_version,
                "runtime": report.runtime,
                "architecture": report.arch,
                "platform": report.platform,
                "builder_version": report.builder_version,
                "content_hash": report.content_hash,
                "lock_hash": report.lock_hash,
                "packages": report.packages,
                "own_packages": report.own_packages,
                "bytecode": report.bytecode.get("mode", "none"),
            },
            indent=2,
            sort_keys=True,
        )
        + "\n"
    )
