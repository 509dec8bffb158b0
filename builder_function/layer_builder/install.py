"""Install step: every locked requirement as a hash-verified wheel for the target, planned.

Nothing is installed into a directory: each requirement's wheel is chosen on its index
(fetch.py), taken from the per-wheel cache or downloaded and verified, and read once into a plan
of the members it ships (wheel.py). Operator-allowed source distributions are downloaded and
verified the same way, then built into a wheel by the sandbox (never where the builder's rights
are), and the built wheel is cached by the sdist's sha256 and the target.

uv stays for those source builds (sandbox_local runs it with `installer_environment`), so its
`--python-platform` must be a value uv accepts (Target.uv_platform).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import shutil
import tempfile
import threading
import zipfile
from collections.abc import Callable, Mapping
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import InputError, TargetMismatchError
from .target import Target

if TYPE_CHECKING:  # fetch (requests) is imported where it is used: the check function, which
    # imports this module for find_uv and PASSTHROUGH_ENV, ships without requests.
    from . import wheel
    from .cache import BuildCache
    from .fetch import Chosen, IndexClient
    from .lock import LockedProject

#: Only these variables of the builder's environment reach an installer (source builds).
PASSTHROUGH_ENV = (
    "PATH",
    "LANG",
    "LC_ALL",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
)
#: Version names a shared object needs from glibc, e.g. b"GLIBC_2.34".
_GLIBC = re.compile(rb"GLIBC_2\.(\d+)")
#: Bumped when a plan's format or the mapping rules change: old plans are then not reused.
PLAN_VERSION = 3
FETCHER = "layer-builder wheel fetcher (PEP 691/503, parallel, sha256-verified)"

Progress = Callable[..., None]


@dataclass
class Installed:
    """The dependencies of one target: each distribution's plan and the wheel it reads from."""

    plans: list[tuple[wheel.Plan, Path]] = field(default_factory=list)
    built_from_source: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    downloaded_bytes: int = 0
    downloaded_files: int = 0
    wheels: dict[str, str] = field(default_factory=dict)  # distribution → wheel file name


@dataclass(frozen=True)
class Settings:
    """What decides a wheel's plan besides its bytes."""

    python_version: str
    slim: bool
    slim_exclude: tuple[str, ...]

    def key(self) -> str:
        material = json.dumps(
            [PLAN_VERSION, self.python_version, self.slim, list(self.slim_exclude)]
        )
        return hashlib.sha256(material.encode()).hexdigest()[:16]


def install(
    locked: LockedProject,
    target: Target,
    cache: BuildCache,
    settings: Settings,
    *,
    client_factory: Callable[[], IndexClient],
    allow_sdist: frozenset[str] = frozenset(),
    build_sdist: Callable[[Path, Chosen], Path] | None = None,
    built_scope: str = "",
    progress: Progress = lambda message, **_: None,
) -> Installed:
    """`built_scope` ends the cache names of wheels built from sdists (in the sandbox): only
    builds of the same scope reuse them."""
    result = Installed()
    unknown = sorted(allow_sdist - {r.name for r in locked.requirements})
    if unknown:
        result.warnings.append(
            f"Allowed to build from source but not installed for {target.runtime}: "
            f"{', '.join(unknown)} (not in the lock's default packages, or skipped by a marker); "
            "check the spelling of --allow-sdist / AllowSdist."
        )
    clients: list[IndexClient] = []
    creating = threading.Lock()  # downloads may ask for it while resolve creates it

    def client() -> IndexClient:  # one client: its connections and credentials are reused
        with creating:
            if not clients:
                clients.append(client_factory())
        return clients[0]

    try:
        return _install(
            locked,
            target,
            cache,
            settings,
            client,
            allow_sdist,
            build_sdist,
            built_scope,
            progress,
            result,
        )
    finally:
        for c in clients:
            c.close()


def _install(
    locked: LockedProject,
    target: Target,
    cache: BuildCache,
    settings: Settings,
    client: Callable[[], IndexClient],
    allow_sdist: frozenset[str],
    build_sdist: Callable[[Path, Chosen], Path] | None,
    built_scope: str,
    progress: Progress,
    result: Installed,
) -> Installed:
    from . import fetch

    fetching = f"Fetching {len(locked.requirements)} locked packages"
    progress(fetching)
    files: dict[str, Path] = {}
    lookup_errors: dict[str, BaseException] = {}
    downloads = fetch.Downloads(
        client,
        lambda c: cache.wheel_path(c.sha256, _suffix(c.filename)),
        progress,
        fetching,  # until every page is read, downloaded bytes count under this step
    )

    evicted: set[str] = set()

    def found(c: Chosen) -> bool:
        """A file is chosen (on a page's thread): its download starts unless it is cached.
        A lookup's error waits, so a refusal of the whole lock takes precedence as before.
        False: a remembered choice (it has no URL) whose file is no longer cached."""
        try:
            # Looked up once: a remembered choice found missing comes back with its URL.
            path = None if c.sha256 in evicted else cache.wheel(c.sha256, _suffix(c.filename))
        except Exception as exc:
            lookup_errors[c.sha256] = exc
            return True
        if path is not None:
            files[c.sha256] = path
        elif c.url:
            downloads.start(c)
        else:
            evicted.add(c.sha256)
            return False
        return True

    with downloads:  # on any error, what still downloads is abandoned before we return
        chosen = _choose(locked, target, cache, client, allow_sdist, found, downloads.pool)
        for c in chosen:
            if c.sha256 in lookup_errors:
                raise lookup_errors[c.sha256]
        missing = [c for c in chosen if c.sha256 not in files]
        if missing:
            result.downloaded_bytes = downloads.finish(
                missing, f"Downloading {len(missing)} of {len(chosen)} files"
            )
            result.downloaded_files = len(missing)
            for c in missing:
                cache.added_wheel(c.sha256, _suffix(c.filename))
                files[c.sha256] = cache.wheel_path(c.sha256, _suffix(c.filename))
    wheels: list[tuple[Chosen, Path]] = []
    for c in chosen:
        if c.is_wheel:
            wheels.append((c, files[c.sha256]))
            continue
        if build_sdist is None:
            raise InputError(
                f"{c.requirement.name}=={c.requirement.version} must be built from "
                "source, and this builder has no sandbox to build it in."
            )
        built = _built_wheel(c, files[c.sha256], target, cache, build_sdist, built_scope)
        wheels.append((c, built))
        result.built_from_source.append(f"{c.requirement.name}=={c.requirement.version}")
    progress(f"Reading {len(wheels)} wheels")
    from . import wheel

    wheel.check_listings([(path, c.filename) for c, path in wheels])
    with ThreadPoolExecutor(min(4, max(1, len(wheels)))) as pool:
        plans = list(
            pool.map(lambda item: _plan(item[1], cache, settings, item[0].filename), wheels)
        )
    for (c, path), plan_ in zip(wheels, plans, strict=True):
        result.plans.append((plan_, path))
        result.wheels[c.requirement.name] = c.filename
    if result.built_from_source:
        refuse_newer_glibc(
            [
                (p, path)
                for (p, path), (c, _) in zip(result.plans, wheels, strict=True)
                if not c.is_wheel
            ],
            target,
        )
        result.warnings.append(
            f"Built from source (operator allowed): {', '.join(result.built_from_source)}."
        )
    return result


def _suffix(filename: str) -> str:
    for suffix in (".whl", ".tar.gz", ".zip"):
        if filename.endswith(suffix):
            return suffix
    return ""


def _choose(
    locked: LockedProject,
    target: Target,
    cache: BuildCache,
    client_factory: Callable[[], IndexClient],
    allow_sdist: frozenset[str],
    on_chosen: Callable[[Chosen], bool],
    pool: Executor,
) -> list[Chosen]:
    """Each requirement's file: remembered choices (signed) or the index's listing; on_chosen
    sees each file as soon as it is known, remembered ones first."""
    from . import fetch
    from .fetch import Chosen

    known: dict[str, Chosen] = {}
    for req in locked.requirements:
        key = fetch.requirement_key(req, target) + ("-sdist" if req.name in allow_sdist else "")
        payload = cache.get(f"choice-{key}")
        if payload is not None:
            data = json.loads(payload)
            known[fetch.requirement_key(req, target)] = Chosen(
                req, data["filename"], data["sha256"]
            )
    # Each remembered file is hashed on a thread of its own (its sha256 is checked on every use:
    # 80 MB took 0.05 s on one CPU), while this thread starts the index client if some
    # requirement needs its page (importing requests takes about 0.03 s).
    looked_up = [(key, pool.submit(on_chosen, c)) for key, c in known.items()]
    client = client_factory() if len(known) < len(locked.requirements) else None
    for key, future in looked_up:
        if not future.result():  # its file left the cache (evicted): its page says where it is
            del known[key]
    if len(known) == len(locked.requirements):
        return [known[fetch.requirement_key(r, target)] for r in locked.requirements]
    resolution = fetch.resolve(
        locked,
        target,
        client or client_factory(),
        allow_sdist=allow_sdist,
        known=known,
        pool=pool,
        on_chosen=on_chosen,
    )
    if resolution.missing:
        raise fetch.no_wheel_error(resolution.missing, target, allow_sdist)
    for c in resolution.chosen:
        key = fetch.requirement_key(c.requirement, target) + (
            "-sdist" if c.requirement.name in allow_sdist else ""
        )
        if key.removesuffix("-sdist") not in known:
            cache.put(
                f"choice-{key}", json.dumps({"filename": c.filename, "sha256": c.sha256}).encode()
            )
    return resolution.chosen


def _plan(path: Path, cache: BuildCache, settings: Settings, filename: str) -> wheel.Plan:
    from . import wheel

    name = f"plan-{path.name.split('.')[0]}-{settings.key()}"
    payload = cache.get(name)
    if payload is not None:
        try:
            return wheel.Plan.from_json(payload)
        except (ValueError, KeyError, TypeError):
            pass
    result = wheel.plan(
        path,
        python_version=settings.python_version,
        slim_enabled=settings.slim,
        extra_patterns=settings.slim_exclude,
        filename=filename,
    )
    cache.put(name, result.to_json().encode())
    return result


def _built_wheel(
    c: Chosen,
    sdist: Path,
    target: Target,
    cache: BuildCache,
    build_sdist: Callable[[Path, Chosen], Path],
    scope: str,
) -> Path:
    """The wheel built from a verified sdist, cached (signed) by the sdist's sha256 and target.

    The file sits among the cache's wheels, so eviction covers it; it is written again from the
    signed entry on every use, never trusted as found. It is named by its own sha256, as
    downloaded wheels are: a rebuild after eviction may differ (builds are not all
    reproducible), and its plan and everything remembered of it are keyed by that name.
    """
    from .cache import WHEELS

    name = f"built-{c.sha256}-{target.short}{scope}"
    data = cache.get(name)
    if data is None:
        data = build_sdist(sdist, c).read_bytes()
        cache.put(name, data)
    path = cache.root / WHEELS / f"built-{hashlib.sha256(data).hexdigest()}.whl"
    path.write_bytes(data)
    return path


@functools.cache
def find_uv() -> str | None:
    try:
        import uv
    except ImportError:
        return None
    try:
        return uv.find_uv_bin()
    except FileNotFoundError:
        pass
    # `sam build` (aws-lambda-builders) leaves a wheel's scripts in <name>.data/scripts.
    for candidate in sorted(Path(uv.__file__).resolve().parent.parent.glob("uv-*.data/scripts/uv")):
        return _executable(candidate)
    return None


def _executable(path: Path) -> str:
    """The path itself, or a copy with the exec bit in /tmp (Lambda's /var/task is read-only)."""
    if os.access(path, os.X_OK):
        return str(path)
    copy = Path(tempfile.gettempdir()) / "layer-builder-bin" / path.name
    if not os.access(copy, os.X_OK):
        copy.parent.mkdir(parents=True, exist_ok=True)
        partial = copy.with_name(f".{copy.name}.{os.getpid()}")  # concurrent first calls
        shutil.copyfile(path, partial)
        partial.chmod(0o755)
        os.replace(partial, copy)
    return str(copy)


def installer_environment(
    environ: Mapping[str, str], home: Path, cache_dir: Path
) -> dict[str, str]:
    env = {k: environ[k] for k in PASSTHROUGH_ENV if k in environ}
    env.setdefault("PATH", "/usr/bin:/bin")
    env.update(
        HOME=str(home),
        TMPDIR=str(home),
        UV_CACHE_DIR=str(cache_dir),
        UV_NO_PROGRESS="1",
        UV_PYTHON_DOWNLOADS="never",
        PIP_CONFIG_FILE=os.devnull,
        PIP_NO_INPUT="1",
        PIP_DISABLE_PIP_VERSION_CHECK="1",
        PIP_CACHE_DIR=str(cache_dir / "pip"),
        PYTHONDONTWRITEBYTECODE="1",
    )
    return env


def refuse_newer_glibc(built: list[tuple[wheel.Plan, Path]], target: Target) -> None:
    """Shared objects built from source must not need a newer glibc than the target has.

    Source builds link against the build machine's glibc; manylinux wheels are checked by their
    tag. The versions a library needs (GLIBC_2.NN) are plain strings in its dynamic string table.
    """
    from . import wheel

    too_new = []
    for plan_, path in built:
        with zipfile.ZipFile(path) as zf:
            for info in zf.infolist():
                dest, _ = wheel._dest(info.filename, plan_.dist_info)
                if dest and re.search(r"\.so(\.\d+)*$", dest):
                    need = max((int(m) for m in _GLIBC.findall(zf.read(info))), default=0)
                    if need > target.glibc[1]:
                        too_new.append(f"{dest} (GLIBC_2.{need})")
    if too_new:
        raise TargetMismatchError(
            f"Built from source on this machine, {', '.join(too_new[:5])} needs a newer glibc than "
            f"{target.describe()} provides (2.{target.glibc[1]}): build on Amazon Linux 2023 (the "
            "builder Lambda), or pin versions that ship manylinux wheels."
        )
