"""The build cache: wheels by their sha256, and what was derived from each wheel, signed.

A layer is made of wheels, and most locks share most wheels (numpy is numpy, in any team's
lock), so the cache is per wheel, not per lock: a lock that differs by one pin pays for one
wheel. Two kinds of entries:

- `wheels/<sha256>.whl`: content-addressed; the sha256 is checked again on every use, so a
  wheel can come from anywhere (this machine, the shared S3 level) and still not be trusted.
- `derived/<name>`: what the builder computed from wheels (a wheel's member plan, its bytecode
  for one Python, the file chosen for a requirement). These cannot be re-checked from their
  content, so each carries an HMAC-SHA256 over its name and bytes made with the builder's key
  (`BuildRequest.signing_key`; nothing a build runs has it). A bad MAC is a miss and a warning.

The remote level (the Lambda's artifact bucket, shared between containers) is a store of
generic blobs under the same names. Eviction is least-recently-used (a use touches the file)
down to a byte budget.
"""

from __future__ import annotations

import errno
import hashlib
import hmac
import os
import secrets
import shutil
import threading
import time
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Protocol

WHEELS = "wheels"
DERIVED = "derived"
KEY_FILE = "signing.key"
KEY_BYTES = 32
_MAGIC = b"LB1 "
#: Work in progress older than this belongs to a build that was killed (Lambda's limit is 15 min).
STALE_AFTER_S = 3600
PARTIAL = ".part"


class RemoteCache(Protocol):
    """A second level shared between machines: generic blobs by name."""

    def fetch(self, name: str, dest: Path) -> bool:
        """Download blob `name` to the file dest; False when absent."""

    def push(self, name: str, path: Path) -> None:
        """Upload the file at path as blob `name`."""


def load_or_create_key(cache_dir: Path) -> bytes:
    """The CLI's signing key: a 0600 file in its cache dir, made on first use."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    path = cache_dir / KEY_FILE
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    else:
        with os.fdopen(fd, "wb") as f:
            f.write(secrets.token_bytes(KEY_BYTES))
    stat = path.lstat()
    if path.is_symlink() or stat.st_mode & 0o077 or stat.st_uid != os.getuid():
        raise PermissionError(f"{path} must be a file of this user with mode 0600.")
    key = path.read_bytes()
    if len(key) < KEY_BYTES:  # a concurrent first use is still writing it
        time.sleep(0.1)
        key = path.read_bytes()
    return key


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _mac(key: bytes, name: str, payload: bytes) -> bytes:
    return hmac.new(key, name.encode() + b"\0" + payload, hashlib.sha256).hexdigest().encode()


def sign(key: bytes, name: str, payload: bytes) -> bytes:
    return _MAGIC + _mac(key, name, payload) + b"\n" + payload


def unsign(key: bytes, name: str, blob: bytes) -> bytes | None:
    """The payload when the MAC over (name, payload) is right, else None."""
    head, _, payload = blob.partition(b"\n")
    if not head.startswith(_MAGIC) or not hmac.compare_digest(
        head[len(_MAGIC) :], _mac(key, name, payload)
    ):
        return None
    return payload


class BuildCache:
    """The cache of one build. `root` None: a private directory the build removes (no reuse)."""

    def __init__(
        self,
        root: Path | None,
        key: bytes | None,
        remote: RemoteCache | None = None,
        *,
        scratch: Path | None = None,
    ) -> None:
        self.persistent = root is not None
        self.root = (
            root if root is not None else Path(scratch or "/tmp") / f"cache-{uuid.uuid4().hex}"
        )
        self.key = key
        self.remote = remote if self.persistent else None
        self.warnings: list[str] = []
        self.hits = {"wheels": 0, "derived": 0}
        self.misses = {"wheels": 0, "derived": 0}
        self._counting = threading.Lock()
        (self.root / WHEELS).mkdir(parents=True, exist_ok=True)
        (self.root / DERIVED).mkdir(parents=True, exist_ok=True)

    # --- wheels ---------------------------------------------------------------------------

    def wheel_path(self, sha256: str, suffix: str = ".whl") -> Path:
        return self.root / WHEELS / f"{sha256}{suffix}"

    def wheel(self, sha256: str, suffix: str = ".whl") -> Path | None:
        """The verified file with this sha256, from this machine or the remote level. Threads
        may look up several at once: the hashing runs in parallel, the counting does not."""
        path = self.wheel_path(sha256, suffix)
        if path.is_file() and not path.is_symlink():
            if sha256_file(path) == sha256:
                _touch(path)
                with self._counting:
                    self.hits["wheels"] += 1
                return path
            path.unlink(missing_ok=True)
            with self._counting:
                self.warnings.append(
                    f"The cached file {sha256[:12]}… did not match its sha256 and was "
                    "downloaded again."
                )
        if self.remote is not None and self._fetch_remote(
            f"{WHEELS}/{path.name}", path, lambda p: sha256_file(p) == sha256
        ):
            with self._counting:
                self.hits["wheels"] += 1
            return path
        with self._counting:
            self.misses["wheels"] += 1
        return None

    def added_wheel(self, sha256: str, suffix: str = ".whl") -> None:
        """A verified download is in place: share it."""
        if self.remote is not None:
            self._push(f"{WHEELS}/{sha256}{suffix}", self.wheel_path(sha256, suffix))

    # --- derived entries ------------------------------------------------------------------

    def get(self, name: str, *, local_only: bool = False) -> bytes | None:
        """A derived entry's payload, verified; None (a miss) without a key or on a bad MAC.
        `local_only`: not from the shared level (entries this machine keeps to itself)."""
        if self.key is None:
            return None
        path = self.root / DERIVED / name
        blob = _read(path)
        if blob is not None:
            payload = unsign(self.key, name, blob)
            if payload is not None:
                _touch(path)
                self.hits["derived"] += 1
                return payload
            path.unlink(missing_ok=True)
            self.warnings.append(
                f"The cache entry {name[:40]} failed its signature check and was "
                "not used (made again)."
            )
        if self.remote is not None and not local_only:
            check = lambda p: unsign(self.key, name, p.read_bytes()) is not None  # noqa: E731
            if self._fetch_remote(f"{DERIVED}/{name}", path, check, "failed its signature check"):
                self.hits["derived"] += 1
                return unsign(self.key, name, path.read_bytes())
        self.misses["derived"] += 1
        return None

    def put(self, name: str, payload: bytes, *, local_only: bool = False) -> None:
        if self.key is None:
            return
        path = self.root / DERIVED / name
        _atomic_write(path, sign(self.key, name, payload))
        if self.remote is not None and not local_only:
            self._push(f"{DERIVED}/{name}", path)

    # --- remote level ---------------------------------------------------------------------

    def _fetch_remote(
        self, name: str, path: Path, valid, problem: str = "did not match its sha256"
    ) -> bool:
        partial = path.with_name(f".{path.name}.{uuid.uuid4().hex}{PARTIAL}")
        try:
            if not self.remote.fetch(name, partial):  # type: ignore[union-attr]
                return False
            if not valid(partial):
                self.warnings.append(
                    f"The shared cache entry {name[:60]} {problem} and was not used."
                )
                return False
            os.replace(partial, path)
            return True
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                raise
            self.warnings.append(
                f"The shared cache could not be read ({type(exc).__name__}); built without it."
            )
            return False
        except Exception as exc:  # an adapter's network error costs a rebuild, not the build
            self.warnings.append(
                f"The shared cache could not be read ({type(exc).__name__}); built without it."
            )
            return False
        finally:
            partial.unlink(missing_ok=True)

    def _push(self, name: str, path: Path) -> None:
        try:
            self.remote.push(name, path)  # type: ignore[union-attr]
        except Exception as exc:  # the layer does not depend on sharing it
            self.warnings.append(f"The shared cache could not be written ({type(exc).__name__}).")

    # --- housekeeping ---------------------------------------------------------------------

    def close(self) -> None:
        if not self.persistent:
            shutil.rmtree(self.root, ignore_errors=True)

    def size(self) -> int:
        return sum(_lstat(p)[0] for p in _entries(self.root))


def evict(root: Path, max_bytes: int, now: float | None = None) -> list[str]:
    """Drop partial files of killed builds, then the least recently used entries until the
    cache holds at most max_bytes. Returns the names removed. Links are never followed."""
    if not root.is_dir():
        return []
    now = time.time() if now is None else now
    removed: list[str] = []
    entries = []
    for path in _entries(root):
        size, mtime = _lstat(path)
        if path.name.endswith(PARTIAL) and now - mtime > STALE_AFTER_S:
            path.unlink(missing_ok=True)
            removed.append(path.name)
        elif not path.name.endswith(PARTIAL):
            entries.append((mtime, path, size))
    total = sum(size for _, _, size in entries)
    for _, path, size in sorted(entries):
        if total <= max_bytes:
            break
        path.unlink(missing_ok=True)
        total -= size
        removed.append(path.name)
    return removed


def _entries(root: Path) -> Iterable[Path]:
    for kind in (WHEELS, DERIVED):
        folder = root / kind
        if folder.is_dir() and not folder.is_symlink():
            for entry in os.scandir(folder):
                if entry.is_file(follow_symlinks=False):
                    yield Path(entry.path)


def _lstat(path: Path) -> tuple[int, float]:
    try:
        stat = path.lstat()
        return stat.st_size, stat.st_mtime
    except OSError:
        return 0, 0.0


def _touch(path: Path) -> None:
    try:
        os.utime(path)
    except OSError:  # read-only or removed meanwhile: the entry is still good for this build
        pass


def _read(path: Path) -> bytes | None:
    try:
        if path.is_symlink():
            return None
        return path.read_bytes()
    except OSError:
        return None


def _atomic_write(path: Path, data: bytes) -> None:
    partial = path.with_name(f".{path.name}.{uuid.uuid4().hex}{PARTIAL}")
    try:
        partial.write_bytes(data)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
