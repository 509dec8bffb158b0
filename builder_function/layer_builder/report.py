"""Report step: who owns which bytes, and the JSON report the CLI prints and the Lambda stores."""

from __future__ import annotations

import csv
import io
import json
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from email.parser import HeaderParser
from typing import Any

from . import limits

UNOWNED = "(other)"


def path_parts(path: str) -> tuple[str, ...]:
    """What PurePosixPath(path).parts gives for a zip member's name, without a path object: the
    report splits every file of a layer several times (a tenth of a second as objects)."""
    parts = tuple(p for p in path.split("/") if p and p != ".")
    return ("/", *parts) if path.startswith("/") else parts


def owners_from_dist_info(records: Iterable[tuple[str, str, str]]) -> dict[str, str]:
    """Top-level path → distribution name, from (dist-info dir, METADATA, RECORD) triples."""
    owners: dict[str, str] = {}
    for dist_info, metadata, record in records:
        name = HeaderParser().parsestr(metadata).get("Name") or dist_info.split("-")[0]
        owners[dist_info] = name
        for row in csv.reader(io.StringIO(record)):
            if row and row[0] and not row[0].startswith(".."):
                owners.setdefault(path_parts(row[0])[0], name)
    return owners


def owner_of(path: str, owners: Mapping[str, str]) -> str:
    """The distribution (or own package) a path relative to python/ belongs to."""
    parts = path_parts(path)
    # Bytecode of top-level modules sits in __pycache__/<module>.cpython-3X.pyc.
    top = (
        f"{parts[1].split('.')[0]}.py" if parts[0] == "__pycache__" and len(parts) > 1 else parts[0]
    )
    return owners.get(top) or owners.get(top.removesuffix(".py")) or UNOWNED


def owners_from_plans(plans: Iterable[Any]) -> dict[str, str]:
    """Top-level path → distribution name, from wheel plans (wheel.Plan)."""
    owners: dict[str, str] = {}
    for plan in plans:
        label = plan.display_name
        owners[plan.dist_info] = label
        for dest, _ in plan.files():
            owners.setdefault(path_parts(dest)[0], label)
    return owners


def package_sizes(files: Iterable[tuple[str, int]], owners: dict[str, str]) -> dict[str, int]:
    """Bytes per distribution (or own package) for paths relative to python/."""
    sizes: dict[str, int] = {}
    for path, size in files:
        owner = owner_of(path, owners)
        sizes[owner] = sizes.get(owner, 0) + size
    return dict(sorted(sizes.items(), key=lambda kv: (-kv[1], kv[0])))


class Timings:
    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = round(self.seconds.get(name, 0) + time.perf_counter() - start, 3)


@dataclass
class BuildReport:
    layer_name: str
    layer_version: str
    description: str
    runtime: str
    arch: str
    platform: str
    builder_version: str
    content_hash: str = ""
    #: sha256 of the zip's bytes (hex); Lambda's CodeSha256 is the same digest in base64.
    zip_sha256: str = ""
    license: str = ""
    lock_hash: str = ""
    zipped_bytes: int = 0
    unzipped_bytes: int = 0
    limit_bytes: int = limits.MAX_UNZIPPED_BYTES
    publish_via_s3: bool = False
    files: int = 0
    packages: list[dict[str, str]] = field(default_factory=list)
    own_packages: list[str] = field(default_factory=list)
    sizes: dict[str, int] = field(default_factory=dict)
    slimmed: list[dict[str, Any]] = field(default_factory=list)
    #: Symbol tables left out of shared objects (stripping.Outcome.summary).
    stripped: dict[str, Any] = field(default_factory=dict)
    bytecode: dict[str, Any] = field(default_factory=dict)
    checks: dict[str, Any] = field(default_factory=dict)
    installer: str = ""
    #: Room Lambda's limit leaves after this layer, and the part of it the layer must keep free.
    room_left_bytes: int = 0
    headroom: int = limits.DEFAULT_HEADROOM
    #: Most bytes the build had on disk at once (work dir plus what it added to the cache):
    #: size the builder's ephemeral storage from it.
    peak_tmp_bytes: int = 0
    downloaded_bytes: int = 0
    #: distribution → the wheel (or sdist) file it was assembled from.
    wheels: dict[str, str] = field(default_factory=dict)
    dependency_cache: str = "off"
    #: Not empty when this zip is an identical earlier build's, reused (buildmemo): says which.
    reused: str = ""
    built_from_source: list[str] = field(default_factory=list)
    skipped_by_marker: list[dict[str, str]] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False)

    def top_packages(self, count: int = limits.TOP_PACKAGES_SHOWN) -> list[tuple[str, int]]:
        return list(self.sizes.items())[:count]


def human(size: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        # Compare what is printed: 999,999 B is "1.0 MB", not "1000.0 KB".
        if round(size, 1) < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} GB"
