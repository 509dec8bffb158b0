"""Dependency cache: the installed, slimmed, compiled and deflated dependencies of one lock.

Keyed by everything that decides those bytes: the locked requirements with their hashes and
indexes, the target, the slimming and bytecode settings, and the builder's version. A rebuild
after a change to the project's own code copies the cached members into the new zip without
installing, compiling or compressing anything again.

An entry is a directory `<key>/` with `deps.zip`, `meta.json` and, when kept, the installed
`tree/` (needed by the import check; re-extracted from deps.zip when missing).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from . import __version__, limits
from .lock import LockedProject
from .project import ProjectConfig
from .target import Target

DEPS_ZIP = "deps.zip"
META = "meta.json"
TREE = "tree"


def cache_key(locked: LockedProject, target: Target, config: ProjectConfig,
              interpreter: str | None, allow_sdist: frozenset[str]) -> str:
    material = {
        "builder": __version__,
        "requirements": [[r.name, r.version, list(r.hashes), r.index] for r in locked.requirements],
        "target": [target.runtime, target.arch, target.uv_platform],
        "slim": [config.slim, list(config.slim_exclude)],
        "bytecode": [config.bytecode, bool(interpreter)],
        "sdist": sorted(allow_sdist),
        # what else decides the cached bytes
        "zip_level": limits.ZIP_COMPRESS_LEVEL,
        "budget": [limits.MAX_UNZIPPED_BYTES, limits.BYTECODE_BUDGET_RESERVE, limits.OWN_CODE_MIN_RESERVE],
    }
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class CachedDeps:
    path: Path

    @property
    def zip_path(self) -> Path:
        return self.path / DEPS_ZIP

    @property
    def meta(self) -> dict[str, Any]:
        return json.loads((self.path / META).read_text(encoding="utf-8"))

    def tree(self) -> Path:
        """The installed tree, extracted again from deps.zip when it was not kept."""
        tree = self.path / TREE
        if not tree.is_dir():
            staging = self.path / f".{TREE}-{uuid.uuid4().hex}"
            with zipfile.ZipFile(self.zip_path) as zf:
                zf.extractall(staging)
            try:
                os.replace(staging / "python", tree)
            except OSError:  # another build extracted it first
                pass
            shutil.rmtree(staging, ignore_errors=True)
        return tree


class RemoteCache(Protocol):
    """A second level shared between machines (the builder Lambda's artifact bucket)."""

    def fetch(self, key: str, dest: Path) -> bool:
        """Download deps.zip and meta.json of `key` into dest; False when absent."""

    def push(self, key: str, source: Path) -> None:
        """Upload deps.zip and meta.json from source."""


class DependencyCache:
    """A directory of entries; None as root means no cache (entries live in the work dir)."""

    def __init__(self, root: Path | None, remote: RemoteCache | None = None) -> None:
        self.root = root
        self.remote = remote if root is not None else None

    def lookup(self, key: str) -> CachedDeps | None:
        if self.root is None:
            return None
        path = self.root / key
        if (path / DEPS_ZIP).is_file() and (path / META).is_file():
            os.utime(path / META)  # recently used: evicted last
            return CachedDeps(path)
        if self.remote is not None:
            staging = self.root / f".fetch-{uuid.uuid4().hex}"
            staging.mkdir(parents=True)
            try:
                if self.remote.fetch(key, staging):
                    try:
                        os.replace(staging, path)
                    except OSError:  # fetched concurrently
                        pass
                    if (path / META).is_file():
                        return CachedDeps(path)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
        return None

    def evict(self, max_bytes: int) -> list[str]:
        """Drop least recently used entries (and uv's download cache first) above max_bytes."""
        if self.root is None or not self.root.is_dir():
            return []
        entries = sorted((p for p in self.root.iterdir() if (p / META).is_file()),
                         key=lambda p: (p / META).stat().st_mtime)
        removed = []
        candidates = [self.root / "uv", *entries]
        while candidates and _tree_size(self.root) > max_bytes:
            victim = candidates.pop(0)
            shutil.rmtree(victim, ignore_errors=True)
            removed.append(victim.name)
        return removed

    def store(self, key: str, staging: Path, meta: dict[str, Any]) -> CachedDeps:
        """Move a finished staging dir (deps.zip + tree/) into the cache atomically."""
        (staging / META).write_text(json.dumps(meta, sort_keys=True), encoding="utf-8")
        if self.root is None:
            return CachedDeps(staging)
        self.root.mkdir(parents=True, exist_ok=True)
        final = self.root / key
        try:
            os.replace(staging, final)
        except OSError:
            # Same key finished concurrently (identical bytes) or a cross-device move.
            if not (final / META).is_file():
                shutil.copytree(staging, final, dirs_exist_ok=True)
            shutil.rmtree(staging, ignore_errors=True)
        if self.remote is not None:
            self.remote.push(key, final)
        return CachedDeps(final)


def _tree_size(root: Path) -> int:
    total = 0
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_size
            except OSError:
                pass
    return total
