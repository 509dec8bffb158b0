"""Isolation (issue 8): between teams, and between a build and the shared cache.

The team comes from the key (`incoming/<team>/…`) and every layer name starts with that team's
prefix. Each test runs the real handler against moto (service_env.py), most with two teams,
`data` and `ops`, and a consumer function shared by both, and checks what AWS holds afterwards.
The last one alters the shared S3 cache between two builder containers.
"""

from __future__ import annotations

import io
import json
import uuid
import zipfile
from pathlib import Path
from typing import Any

import pytest
from layer_builder.sandbox_local import LocalSandbox

from tests.reliability.service_env import (
    Builder,
    BuilderFactory,
    FakeContext,
    load_builder_app,
)
from tests.reliability.table import record

REFUSED_KEYS = ["mixed-1.0.0.zip", "unknown/mixed-1.0.0.zip", "Data/mixed-1.0.0.zip",
                "data-mixed-1.0.0.zip", "datax/mixed-1.0.0.zip"]


def only(result: dict) -> dict:
    assert len(result["results"]) == 1, result
    return result["results"][0]


@pytest.fixture
def teams(make_builder: BuilderFactory) -> tuple[Builder, dict[str, str]]:
    """Teams data and ops (prefixes <stack>data- and <stack>ops-), each with a consumer of its
    own and one shared consumer; both subscribe to their `mixed` layer."""
    unique = uuid.uuid4().hex[:8]
    fn = {name: f"iso-{unique}-{name}" for name in ("data", "ops", "shared")}
    builder = make_builder(teams=[
        {"name": "data", "layer_prefix": "data-", "consumers": [fn["data"], fn["shared"]],
         "subscribed_layers": ["mixed"]},
        {"name": "ops", "layer_prefix": "ops-", "consumers": [fn["ops"], fn["shared"]],
         "subscribed_layers": ["mixed"]}])
    for name in fn.values():
        builder.create_function(name)
    return builder, fn


def everything(builder: Builder, fn: dict[str, str]) -> dict[str, Any]:
    """What an upload could change: every layer's versions, the consumers, the pointers."""
    lam = builder.aws.client("lambda")
    layers = {layer["LayerName"]: builder.versions(layer["LayerName"])
              for layer in lam.list_layers()["Layers"] if layer["LayerName"].startswith(
                  builder.stack_prefix)}
    consumers = {name: builder.layers_of(f) for name, f in fn.items()}
    pointers = {name: builder.pointer(name) for name in layers}
    return {"layers": layers, "consumers": consumers, "pointers": pointers}


def test_a_team_uploading_another_teams_project_name_publishes_only_its_own_layer(
        teams: tuple[Builder, dict[str, str]]) -> None:
    builder, fn = teams
    a = only(builder.deliver(builder.upload(builder.archive("team-data"), team="data")))
    before = everything(builder, fn)

    b = only(builder.deliver(builder.upload(builder.archive("team-ops"), team="ops")))

    assert a["status"] == b["status"] == "published", (a["error"], b["error"])
    assert (a["team"], a["layer_name"]) == ("data", builder.layer("mixed", "data"))
    assert (b["team"], b["layer_name"]) == ("ops", builder.layer("mixed", "ops"))
    after = everything(builder, fn)
    data_layer = builder.layer("mixed", "data")
    assert after["layers"][data_layer] == before["layers"][data_layer] == [1]
    assert after["pointers"][data_layer] == a["version_arn"]
    assert after["consumers"]["data"] == before["consumers"]["data"] == [a["version_arn"]]
    assert after["consumers"]["ops"] == [b["version_arn"]]
    # The shared consumer holds each team's own layer: ops added its layer, data's stayed.
    assert after["consumers"]["shared"] == [a["version_arn"], b["version_arn"]]
    assert {x["function"] for x in b["attachments"]} == {fn["ops"], fn["shared"]}
    record("team ops uploads a project named like team data's ('mixed')",
           f"refused to touch data's layer: ops published {b['layer_name']}; {a['layer_name']}, "
           "its pointer and data's consumer unchanged; the shared consumer got ops' layer beside "
           "data's")


@pytest.mark.parametrize("how", ["archive name", "pyproject name"])
def test_a_name_crafted_to_look_like_another_teams_prefix_stays_in_the_uploaders_prefix(
        teams: tuple[Builder, dict[str, str]], how: str) -> None:
    builder, fn = teams
    a = only(builder.deliver(builder.upload(builder.archive("victim"), team="data")))
    before = everything(builder, fn)
    lookalike = builder.layer("mixed", "data")  # <stack>data-mixed, team data's real layer
    if how == "archive name":
        archive = builder.archive("crafted", filename=f"{lookalike}-1.0.0.zip")
    else:
        archive = builder.archive("crafted", broken={"pyproject.toml": (
            f'[tool.layer-builder]\nname = "../../{lookalike}"\n')})

    b = only(builder.deliver(builder.upload(archive, team="ops")))

    assert b["status"] == "published", b["error"]
    ops_prefix = builder.layer("", "ops")
    assert b["layer_name"].startswith(ops_prefix) and b["layer_name"] != lookalike
    after = everything(builder, fn)
    assert after["layers"][lookalike] == [1] and after["pointers"][lookalike] == a["version_arn"]
    assert after["consumers"] == before["consumers"]  # not subscribed: attached nowhere
    record(f"team ops names its layer {lookalike!r} ({how})",
           f"refused to take it: published as {b['layer_name']} (ops' prefix); team data's layer, "
           "pointer and consumers unchanged")


def test_keys_outside_every_teams_folder_are_refused_before_anything_is_read(
        teams: tuple[Builder, dict[str, str]]) -> None:
    builder, fn = teams
    archive = builder.archive("no-team")
    before = everything(builder, fn)
    messages = []
    with builder.faults() as calls:
        for key in REFUSED_KEYS:
            result = only(builder.deliver(builder.upload(archive, key=f"incoming/{key}")))
            assert result["status"] == "refused", result
            assert result["error"]["kind"] == "team_refused"
            assert result["published"] is False and result["version_arn"] == ""
            report = builder.report(result["report"])
            assert report["status"] == "refused" and report["error"] == result["error"]
            messages.append(result["error"]["message"])
        events = [e for e in _events(calls) if e["status"] == "refused"]
    assert all("incoming/data/, incoming/ops/" in m for m in messages), messages
    assert len(events) == len(REFUSED_KEYS)
    assert calls.attempts("s3", "GetObject") == 0  # the upload was never even read
    assert calls.attempts("lambda", "PublishLayerVersion") == 0
    assert calls.attempts("lambda", "UpdateFunctionConfiguration") == 0
    assert everything(builder, fn) == before
    record(f"{len(REFUSED_KEYS)} keys outside every team's folder (incoming/x.zip, "
           "incoming/unknown/…, incoming/Data/…, …)",
           f"refused: {messages[0]} (a failure report and event each; nothing read, published or "
           "attached)")


def _events(calls: Any) -> list[dict]:
    found = []
    for call in calls.delivered("eventbridge", "PutEvents"):
        found += [json.loads(entry["Detail"]) for entry in json.loads(call.body)["Entries"]]
    return found


def _tamper(blob: bytes, marker: bytes) -> bytes:
    """What a third party with write access to cache/ would do: a wheel (a zip) gets a module of
    its own and every module gets the marker; a signed entry keeps its signature line and gets
    another payload."""
    if blob[:2] == b"PK":
        source, out = zipfile.ZipFile(io.BytesIO(blob)), io.BytesIO()
        with zipfile.ZipFile(out, "w") as zf:
            for info in source.infolist():
                data = source.read(info)
                zf.writestr(info, data + b"\n" + marker if info.filename.endswith(".py") else data)
            zf.writestr("tampered.py", marker)
        return out.getvalue()
    head, _, payload = blob.partition(b"\n")
    return head + b"\n" + payload.replace(b'"', b'"' + marker, 1) + marker


def test_a_cache_entry_altered_in_s3_is_detected_rebuilt_and_never_published(
        make_builder: BuilderFactory, make_cache_dir: Any, reliability_aws: Any, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Container A fills the shared cache (cache/ in the artifact bucket); a third party alters
    every entry there; container B, with an empty local cache, builds the same lock."""
    key = reliability_aws.client("secretsmanager").create_secret(
        Name=f"cache-key-{uuid.uuid4().hex}", SecretString=uuid.uuid4().hex * 2)["ARN"]
    builder = make_builder(cache_dir=make_cache_dir(tmp_path / "a"),
                           environment={"CACHE_KEY_SECRET": key})
    first = only(builder.deliver(builder.upload(builder.archive("cache-a"))))
    s3 = builder.aws.client("s3")
    bucket = builder.stack.name("ArtifactBucket")
    entries = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix="cache/").get(
        "Contents", [])]
    assert first["status"] == "published" and entries, first
    marker = f"TAMPERED-{uuid.uuid4().hex}".encode()
    for name in entries:
        body = s3.get_object(Bucket=bucket, Key=name)["Body"].read()
        s3.put_object(Bucket=bucket, Key=name, Body=_tamper(body, marker))

    monkeypatch.setenv("CACHE_DIR", str(make_cache_dir(tmp_path / "b")))
    other = load_builder_app()  # container B: nothing cached locally
    other.adapters.sandbox = LocalSandbox()
    event = builder.upload(builder.archive("cache-b"))
    second = only(other.handler(event, FakeContext(function_name=builder.function_name)))

    assert second["status"] == "published", second["error"]
    report = builder.report(second["report"])
    rejected = [w for w in report["build"]["warnings"] if w.startswith("The shared cache entry")]
    assert rejected, report["build"]["warnings"]
    layers = {name: _layer_files(builder, result) for name, result in
              (("a", first), ("b", second))}
    assert not any(marker in data for data in layers["b"].values())
    deps = lambda files: {n: d for n, d in files.items() if "build_marker" not in n  # noqa: E731
                          and not n.endswith(".layer-builder.json")}
    assert deps(layers["b"]) == deps(layers["a"])  # the dependencies, byte for byte
    record(f"{len(entries)} shared cache entries (cache/ in S3) altered by a third party",
           f"refused: each one the next container read failed its check ({len(rejected)} warnings "
           f"like '{rejected[0][:90]}…'); rebuilt, dependencies byte-identical to the clean "
           "build's, no altered byte in the layer")


def _layer_files(builder: Builder, result: dict) -> dict[str, bytes]:
    """Every member of the published layer zip (from layers/ in the artifact bucket)."""
    s3 = builder.aws.client("s3")
    build = builder.report(result["report"])["build"]
    body = s3.get_object(Bucket=builder.stack.name("ArtifactBucket"),
                         Key=f"layers/{build['layer_name']}/{build['zip_sha256']}.zip")["Body"].read()
    with zipfile.ZipFile(io.BytesIO(body)) as zf:
        return {info.filename: zf.read(info) for info in zf.infolist()}
