"""Dependency cache: the installed, slimmed, compiled and deflated dependencies of one lock.

Keyed by everything that decides those bytes: the locked requirements with their hashes and
indexes, the target, the slimming and bytecode settings, and the builder's version. A rebuild
after a change to the project's own code copies the cached members into the new zip without
installing, compiling or compressing anything again.

An entry is a directory `<key>/` with `deps.zip`, `meta.json` and, when kept, the installed
`tree/` (needed by the import check; re-extracted from deps.zip when missing). Work in progress
lives in `.staging-*` (a build) and `.fetch-*` (a download) directories next to the entries.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import uuid
import zipfile
import zlib
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
STAGING_PREFIX = ".staging-"
FETCH_PREFIX = ".fetch-"
#: Older work-in-progress directories belong to a build that was killed (Lambda's limit is 15 min).
STALE_AFTER_S = 3600
#: What the pipeline reads from meta.json, by type: an entry without them cannot be used.
META_FIELDS: dict[str, type] = {
    "sha256": dict, "owners": dict, "warnings": list, "built_from_source": list, "slimmed": list,
    "bytecode_failed": list, "installer": str, "binaries_checked": int,
}


def cache_key(locked: LockedProject, target: Target, config: ProjectConfig,
              interpreter: str | None, allow_sdist: frozenset[str], *,
              host_machine: str | None = None) -> str:
    """`host_machine` (default: this one) decides whether the start-up probe can run, and so
    which .pyc survive near the size limit: builds on other machines must not share entries."""
    host_machine = os.uname().machine if host_machine is None else host_machine
    material = {
        "builder": __version__,
        "requirements": [[r.name, r.version, list(r.hashes), r.index] for r in locked.requirements],
        "target": [target.runtime, target.arch, target.uv_platform],
        "slim": [config.slim, list(config.slim_exclude)],
        "bytecode": [config.bytecode, bool(interpreter)],
        "startup_probe": bool(interpreter) and target.machine == host_machine,
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
        #: Why entries fetched from the remote were not used (for the build's warnings).
        self.rejected: list[str] = []

    def lookup(self, key: str) -> CachedDeps | None:
        if self.root is None:
            return None
        path = self.root / key
        if (path / DEPS_ZIP).is_file() and (path / META).is_file():
            os.utime(path / META)  # recently used: evicted last
            return CachedDeps(path)
        if self.remote is not None:
            staging = self.root / f"{FETCH_PREFIX}{uuid.uuid4().hex}"
            staging.mkdir(parents=True)
            try:
                if self.remote.fetch(key, staging):
                    # Another machine wrote it, through a bucket: check before trusting the bytes.
                    problem = verify_entry(staging)
                    if problem is not None:
                        self.rejected.append(f"The shared cache entry {key[:12]} was not used ({problem}): "
                                             "the dependencies were built again.")
                        return None
                    try:
                        os.replace(staging, path)
                    except OSError:  # fetched concurrently
                        pass
                    if (path / META).is_file():
                        return CachedDeps(path)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
        return None

    def evict(self, max_bytes: int, now: float | None = None) -> list[str]:
        """Drop what killed builds left behind, then least recently used entries (uv's download
        cache first) until the cache is within max_bytes. Returns the names removed."""
        if self.root is None or not self.root.is_dir():
            return []
        now = time.time() if now is None else now
        removed: list[str] = []
        sizes: dict[Path, int] = {}
        for path in self.root.iterdir():
            if path.is_symlink() or not path.is_dir():
                sizes[path] = _lstat_size(path)
                continue
            size, newest = _walk(path)  # the only walk of this directory
            if path.name.startswith((STAGING_PREFIX, FETCH_PREFIX)) and now - newest > STALE_AFTER_S:
                shutil.rmtree(path, ignore_errors=True)
                removed.append(path.name)
            else:
                sizes[path] = size
        # meta.json's mtime is the entry's last use (lookup touches it)
        entries = [p for _, p in sorted((_lstat_mtime(p / META), p) for p in sizes if (p / META).is_file())]
        uv = self.root / "uv"
        candidates = ([uv] if uv in sizes and not uv.is_symlink() and uv.is_dir() else []) + entries
        total = sum(sizes.values())
        for victim in candidates:
            if total <= max_bytes:
                break
            shutil.rmtree(victim, ignore_errors=True)
            total -= sizes[victim]
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


def verify_entry(path: Path) -> str | None:
    """Why deps.zip and meta.json in path do not match, or None when every member of the zip
    is listed in the meta with the sha256 of its content, and nothing else is listed."""
    try:
        meta = json.loads((path / META).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        return f"{META} is unreadable: {exc}"
    if not isinstance(meta, dict):
        return f"{META} is not an object"
    wrong = sorted(k for k, kind in META_FIELDS.items() if not isinstance(meta.get(k), kind))
    if wrong:
        return f"{META} has no valid {', '.join(wrong)}"
    expected: dict = meta["sha256"]
    try:
        with zipfile.ZipFile(path / DEPS_ZIP) as zf:
            seen = set()
            for info in zf.infolist():
                name = info.filename
                if name not in expected:
                    return f"{DEPS_ZIP} holds {name}, which {META} does not list"
                if not name.startswith("python/") or name.endswith("/") or ".." in name.split("/"):
                    return f"{DEPS_ZIP} holds {name}, outside python/"
                if info.compress_type != zipfile.ZIP_DEFLATED or info.flag_bits & 0x1:
                    return f"{DEPS_ZIP}:{name} is encrypted or not deflated"
                digest = hashlib.sha256()
                try:  # reading to the end also checks the CRC, as ZipFile.testzip() does
                    with zf.open(info) as member:
                        for block in iter(lambda: member.read(1 << 20), b""):
                            digest.update(block)
                except (EOFError, zipfile.BadZipFile, zlib.error) as exc:
                    return f"{DEPS_ZIP}:{name} is corrupt: {exc}"
                if digest.hexdigest() != expected[name]:
                    return f"{DEPS_ZIP}:{name} does not match its sha256 in {META}"
                seen.add(name)
    except (OSError, EOFError, RuntimeError, NotImplementedError, zipfile.BadZipFile, zlib.error) as exc:
        return f"{DEPS_ZIP} is unreadable: {exc}"
    missing = sorted(set(expected) - seen)
    if missing:
        return f"{DEPS_ZIP} lacks {missing[0]}" + (f" and {len(missing) - 1} more" if len(missing) > 1 else "")
    return None


def _lstat_size(path: Path) -> int:
    try:
        return path.lstat().st_size
    except OSError:
        return 0


def _walk(root: Path) -> tuple[int, float]:
    """Total size of the files under root, and the newest mtime of anything there."""
    total, newest = 0, _lstat_mtime(root)
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames:
            newest = max(newest, _lstat_mtime(Path(dirpath, name)))
        for name in filenames:
            try:
                stat = os.lstat(os.path.join(dirpath, name))
            except OSError:  # removed while we looked
                continue
            newest = max(newest, stat.st_mtime)
            total += stat.st_size
    return total, newest


def _lstat_mtime(path: Path) -> float:
    try:
        return path.lstat().st_mtime
    except OSError:
        return 0.0
