"""publish: a new version only when the bytes differ; always from S3; one version per content."""

from __future__ import annotations

import base64
import hashlib
from dataclasses import replace

import pytest

from layer_builder.errors import TeamError, TransientError
from layer_builder.report import BuildReport
from layer_builder.service.publish import PublishedLayer, code_sha256, layer_key, publish
from layer_builder.service.settings import Team

ARN = "arn:aws:lambda:us-east-1:123456789012:layer:s-data-demo"
TEAM = Team("data", "s-data-")


def sha(data: bytes) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


class Registry:
    def __init__(self, stored_bytes: bytes | None = None) -> None:
        self.versions: dict[int, PublishedLayer] = {}
        self.stored_bytes = stored_bytes  # what Lambda reads from S3 (None: what was uploaded)
        self.published: list[dict] = []
        self.discarded: list[int] = []
        self.store: Store | None = None

    def add(self, data: bytes) -> PublishedLayer:
        number = max(self.versions, default=0) + 1
        layer = PublishedLayer(ARN, f"{ARN}:{number}", number, sha(data), len(data))
        self.versions[number] = layer
        return layer

    def latest(self, layer_name):
        return self.versions[max(self.versions)] if self.versions else None

    def version(self, layer_arn, number):
        return self.versions.get(number)

    def publish(self, layer_name, **kwargs):
        self.published.append(kwargs)
        data = self.stored_bytes if self.stored_bytes is not None else self.store.files[kwargs["key"]]
        return self.add(data)

    def discard(self, layer):
        self.discarded.append(layer.version)
        del self.versions[layer.version]


class Store:
    bucket = "artifacts"

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}

    def put_file(self, key, path):
        self.files[key] = path.read_bytes()


def report(data: bytes = b"layer bytes", name: str = "s-data-demo") -> BuildReport:
    return BuildReport(layer_name=name, layer_version="1.0", description="d", runtime="python3.13",
                       arch="arm64", platform="aarch64-manylinux_2_34", builder_version="0",
                       content_hash="c0ffee", zip_sha256=hashlib.sha256(data).hexdigest(),
                       license="MIT")


@pytest.fixture
def layer_zip(tmp_path):
    path = tmp_path / "layer.zip"
    path.write_bytes(b"layer bytes")
    return path


def wired(stored_bytes=None):
    registry, store = Registry(stored_bytes), Store()
    registry.store = store
    return registry, store


def test_code_sha256_is_lambdas_base64_sha256():
    assert code_sha256(hashlib.sha256(b"layer bytes").hexdigest()) == sha(b"layer bytes")


def test_new_content_is_uploaded_to_s3_and_published_from_there(layer_zip):
    registry, store = wired()
    layer = publish(layer_zip, report(), registry, store, TEAM)
    assert layer.version == 1 and not layer.reused
    assert store.files == {layer_key(report()): b"layer bytes"}
    call = registry.published[0]
    zip_sha = hashlib.sha256(b"layer bytes").hexdigest()
    assert (call["bucket"], call["key"]) == ("artifacts", f"layers/s-data-demo/{zip_sha}.zip")
    assert (call["runtime"], call["arch"], call["license_info"]) == ("python3.13", "arm64", "MIT")


def test_the_same_bytes_as_the_latest_version_reuse_it(layer_zip):
    registry, store = wired()
    registry.add(b"layer bytes")
    layer = publish(layer_zip, report(), registry, store, TEAM)
    assert layer.reused and layer.version == 1
    assert registry.published == [] and store.files == {}


def test_older_identical_bytes_do_not_count_only_the_latest(layer_zip):
    registry, store = wired()
    registry.add(b"layer bytes")
    registry.add(b"something newer")
    assert publish(layer_zip, report(), registry, store, TEAM).version == 3


def test_lambda_storing_other_bytes_is_discarded_and_retried(layer_zip):
    registry, store = wired(stored_bytes=b"truncated")
    with pytest.raises(TransientError, match="incomplete"):
        publish(layer_zip, report(), registry, store, TEAM)
    assert registry.discarded == [1] and registry.versions == {}


def test_a_twin_made_by_a_resent_publish_is_deleted_and_the_first_kept(layer_zip):
    registry, store = wired()
    original = registry.publish

    def twice(layer_name, **kwargs):  # the first response was lost; botocore sent it again
        original(layer_name, **kwargs)
        return original(layer_name, **kwargs)

    registry.publish = twice
    layer = publish(layer_zip, report(), registry, store, TEAM)
    assert layer.version == 1 and registry.discarded == [2]
    assert list(registry.versions) == [1]
    assert layer == replace(registry.versions[1], reused=False)


@pytest.mark.parametrize("name", ["s-ops-demo", "s-dat-demo", "demo", "s-data"])
def test_a_layer_outside_the_teams_prefix_is_never_published(layer_zip, name):
    registry, store = wired()
    with pytest.raises(TeamError, match="not a layer of team 'data'"):
        publish(layer_zip, report(name=name), registry, store, TEAM)
    assert registry.published == [] and store.files == {}
