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
from typing import Any

from . import __version__
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


class DependencyCache:
    """A directory of entries; None as root means no cache (entries live in the work dir)."""

    def __init__(self, root: Path | None) -> None:
        self.root = root

    def lookup(self, key: str) -> CachedDeps | None:
        if self.root is None:
            return None
        path = self.root / key
        if (path / DEPS_ZIP).is_file() and (path / META).is_file():
            return CachedDeps(path)
        return None

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
        return CachedDeps(final)
