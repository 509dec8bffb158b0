"""Publish step: a new layer version only when the bytes differ from the latest version's.

Our zips are reproducible, so equal content gives an equal zip and an equal CodeSha256.
Always published from the artifact bucket, so the 50 MB direct-upload cap never applies.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol

from ..errors import TransientError
from ..report import BuildReport
from .settings import Team

#: How many versions below ours may be a twin (publishes that raced ours); bounds the look-back
#: when the versions seen before publishing were deleted.
TWIN_WINDOW = 20


@dataclass(frozen=True)
class PublishedLayer:
    layer_arn: str
    version_arn: str
    version: int
    code_sha256: str
    code_size: int
    reused: bool = False


class LayerRegistry(Protocol):
    def latest(self, layer_name: str) -> PublishedLayer | None: ...

    def publish(
        self,
        layer_name: str,
        *,
        bucket: str,
        key: str,
        description: str,
        runtime: str,
        arch: str,
        license_info: str,
    ) -> PublishedLayer: ...

    def version(self, layer_arn: str, number: int) -> PublishedLayer | None: ...

    def discard(self, layer: PublishedLayer) -> None: ...


class ArtifactStore(Protocol):
    bucket: str

    def put_file(self, key: str, path: Path) -> None: ...


def code_sha256(zip_sha256: str) -> str:
    """Lambda's CodeSha256: the zip's sha256 in base64 rather than hex."""
    return base64.b64encode(bytes.fromhex(zip_sha256)).decode()


def layer_key(report: BuildReport) -> str:
    """Named by the zip's own bytes: two builds write the same key only with the same bytes."""
    return f"layers/{report.layer_name}/{report.zip_sha256}.zip"


def _require_own(team: Team | None, layer: str, action: str) -> None:
    if team is not None:
        team.require_own(layer, action)


def publish(
    zip_path: Path,
    report: BuildReport,
    registry: LayerRegistry,
    store: ArtifactStore,
    team: Team | None = None,
) -> PublishedLayer:
    """`team`: the builder's tenant, whose prefix every name must carry (the CLI has none: it acts
    with its user's own rights)."""
    _require_own(team, report.layer_name, "publish")
    ours = code_sha256(report.zip_sha256)
    latest = registry.latest(report.layer_name)
    if latest is not None and latest.code_sha256 == ours:
        return replace(latest, reused=True)
    key = layer_key(report)
    store.put_file(key, zip_path)
    published = registry.publish(
        report.layer_name,
        bucket=store.bucket,
        key=key,
        description=report.description,
        runtime=report.runtime,
        arch=report.arch,
        license_info=report.license,
    )
    if published.code_sha256 != ours:
        registry.discard(published)  # never attached anywhere: leave no wrong version behind
        raise TransientError(
            f"Lambda stored {published.version_arn} with CodeSha256 {published.code_sha256}, not the "
            f"built zip's {ours}: the upload to s3://{store.bucket}/{key} was incomplete. Retrying."
        )
    return _without_twin(published, latest, registry, team)


def _without_twin(
    published: PublishedLayer,
    seen: PublishedLayer | None,
    registry: LayerRegistry,
    team: Team | None,
) -> PublishedLayer:
    """One version per content, even when a publish was sent twice.

    A PublishLayerVersion whose response was lost still made a version, and botocore's retry
    makes another. Versions newer than the one seen before publishing that hold the same bytes
    are such twins (or a concurrent build of the same bytes): keep the earliest, delete ours,
    which nothing references yet.
    """
    floor = max(seen.version if seen else 0, published.version - TWIN_WINDOW - 1)
    for number in range(floor + 1, published.version):
        twin = registry.version(published.layer_arn, number)
        if twin is not None and twin.code_sha256 == published.code_sha256:
            registry.discard(published)  # the layer checked before publishing
            return replace(twin, reused=False)
    return published
