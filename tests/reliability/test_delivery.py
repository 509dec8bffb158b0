"""Delivery semantics: S3 delivers at least once and unordered; Lambda retries async invocations.

Each test runs the real builder handler in-process against moto over HTTP (see service_env.py)
and checks what AWS holds afterwards: layer versions, the consumer function's layers, the SSM
pointer, the idempotency records.
"""

from __future__ import annotations

import copy
import json
import random
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from aws_lambda_powertools.utilities.idempotency.exceptions import IdempotencyAlreadyInProgressError

from layer_builder import limits
from layer_builder.errors import TransientError
from layer_builder.sandbox_local import LocalSandbox
from tests.reliability.awsfaults import throttling
from tests.reliability.service_env import (
    EMR_LAUNCHER,
    Builder,
    BuilderFactory,
    FakeContext,
    load_builder_app,
)
from tests.reliability.table import record
from tools.stack import EVENTS

DUPLICATES = 10


def only(result: dict) -> dict:
    assert len(result["results"]) == 1, result
    return result["results"][0]


def strip_metadata(response: dict) -> dict:
    return {k: v for k, v in response.items() if k != "ResponseMetadata"}


def concurrently(calls: list, workers: int | None = None) -> list:
    """Run the calls at once (a barrier releases them together); results in call order."""
    barrier = threading.Barrier(len(calls))

    def run(call):
        barrier.wait()
        try:
            return call()
        except Exception as exc:  # a function error, as Lambda would record it
            return exc

    with ThreadPoolExecutor(workers or len(calls)) as pool:
        return list(pool.map(run, calls))


def test_duplicate_events_in_sequence_publish_one_version(builder: Builder) -> None:
    event = builder.upload(builder.archive("dup-seq"))

    with builder.faults() as calls:
        results = [only(builder.deliver(event)) for _ in range(DUPLICATES)]

    first = results[0]
    assert first["status"] == "published" and first["published"]
    # Every duplicate gets the stored result of the one build, not a build of its own.
    assert all(r == first for r in results[1:])
    assert builder.versions(first["layer_name"]) == [1]
    assert calls.attempts("lambda", "PublishLayerVersion") == 1
    assert calls.attempts("lambda", "UpdateFunctionConfiguration") == 1
    assert builder.layers_of().count(first["version_arn"]) == 1
    assert builder.pointer(first["layer_name"]) == first["version_arn"]
    assert len(builder.idempotency_records()) == 1
    record(f"{DUPLICATES} duplicate events, one after another",
           f"survived: 1 layer version, 1 publish, 1 attach; {DUPLICATES - 1} duplicates got the "
           "stored result", duplicates=DUPLICATES)


# Threads share Powertools' Metrics, and one invocation's flush can empty another's metrics; a
# Lambda process never runs two invocations at once, so that warning is this test's artefact.
@pytest.mark.filterwarnings("ignore:No application metrics to publish:UserWarning")
def test_duplicate_events_at_once_publish_one_version(builder: Builder) -> None:
    event = builder.upload(builder.archive("dup-concurrent"))

    with builder.faults() as calls:
        first_round = concurrently([lambda: builder.deliver(event)] * DUPLICATES)
        in_progress = [r for r in first_round if isinstance(r, Exception)]
        # Lambda retries a function error; by then the one build has finished.
        retried = [builder.deliver(event) for _ in in_progress]

    assert all(isinstance(e, IdempotencyAlreadyInProgressError) for e in in_progress), in_progress
    answered = [r for r in first_round if not isinstance(r, Exception)] + retried
    results = [only(r) for r in answered]
    assert len(results) == DUPLICATES
    built = results[0]
    assert all(r == built for r in results)
    assert built["status"] == "published"
    assert builder.versions(built["layer_name"]) == [1]
    assert calls.attempts("lambda", "PublishLayerVersion") == 1
    assert calls.attempts("lambda", "UpdateFunctionConfiguration") == 1
    assert builder.layers_of().count(built["version_arn"]) == 1
    assert len(builder.idempotency_records()) == 1
    record(f"{DUPLICATES} duplicate events at once (threads)",
           f"survived: 1 layer version, 1 attach; {len(in_progress)} got 'already in progress' "
           "and their retry got the stored result", duplicates=DUPLICATES)


def test_url_encoded_key_with_spaces_plus_and_unicode_is_decoded(builder: Builder) -> None:
    key = builder.key("my team+layer é-1.0.0.zip")
    event = builder.upload(builder.archive("encoded"), key=key, template="s3-put-encoded-key.json")
    # Exactly how S3 writes this key into the event (events/s3-put-encoded-key.json).
    assert event["Records"][0]["s3"]["object"]["key"] == \
        f"incoming/{builder.team}/my+team%2Blayer+%C3%A9-1.0.0.zip"

    result = only(builder.deliver(event))

    assert result["status"] == "published", result["error"]
    assert result["source"]["key"] == key  # the object it read, so GetObject found it
    assert builder.versions(result["layer_name"]) == [1]
    record("S3 key with space, '+' and 'é' (URL-encoded)",
           f"survived: decoded to {key!r}, layer {result['layer_name']} published")


def _multiple_records_event(uploads: dict[str, dict]) -> dict:
    """events/s3-put-multiple.json with its keys, versions and sizes made real.

    The file holds three records: an upload, another upload, and the first one again.
    """
    event = json.loads((EVENTS / "s3-put-multiple.json").read_text(encoding="utf-8"))
    for item in event["Records"]:
        name = item["s3"]["object"]["key"].rsplit("/", 1)[1]
        source = next(u for k, u in uploads.items() if k.endswith("/" + name))["Records"][0]
        item["s3"]["bucket"] = copy.deepcopy(source["s3"]["bucket"])
        item["s3"]["object"] = copy.deepcopy(source["s3"]["object"])
    return event


def test_event_with_several_records_processes_each_upload_once(builder: Builder) -> None:
    emr = builder.archive("multi-a", "aws-emr-launcher-0.1.0.zip", source=EMR_LAUNCHER)
    tools = builder.archive("multi-b", "data-tools-2.3.1.tar.gz")
    uploads = {builder.key(a): builder.upload(a) for a in (emr, tools)}
    event = _multiple_records_event(uploads)
    keys = [r["s3"]["object"]["key"] for r in event["Records"]]
    assert keys[0] == keys[2] != keys[1]  # the file's shape: the first upload delivered twice

    with builder.faults() as calls:
        results = builder.deliver(event)["results"]

    assert len(results) == 3
    assert [r["status"] for r in results] == ["published"] * 3, [r["error"] for r in results]
    assert results[2] == results[0]  # the repeated record got the stored result
    layers = {r["layer_name"] for r in results}
    assert layers == {builder.layer("emr-launcher"), builder.layer("data-tools")}
    for name in layers:
        assert builder.versions(name) == [1]
    assert calls.attempts("lambda", "PublishLayerVersion") == 2
    assert calls.attempts("lambda", "UpdateFunctionConfiguration") == 2
    assert sorted(builder.layers_of()) == sorted({r["version_arn"] for r in results})
    assert len(builder.idempotency_records()) == 2
    record("one event, 3 records (events/s3-put-multiple.json: .zip, .tar.gz, .zip again)",
           "survived: 2 builds, 1 version per layer; the repeated record got the stored result",
           duplicates=2)


def ours(builder: Builder, layer: str) -> list[str]:
    """The consumer's versions of this layer (it may hold others' layers too)."""
    return [arn for arn in builder.layers_of() if f":layer:{layer}:" in arn]


def _orders(events: list[dict]) -> list[tuple[str, str]]:
    records = [e["Records"][0] for e in events]
    return [(r["eventTime"], r["s3"]["object"]["sequencer"]) for r in records]


def _new_uploads(builder: Builder, count: int) -> list[dict]:
    """`count` uploads of new content to the same key (so the same layer), oldest first."""
    events = [builder.upload(builder.archive(f"release-{n}")) for n in range(count)]
    assert _orders(events) == sorted(_orders(events)) and len(set(_orders(events))) == count
    return events


def test_new_uploads_at_once_each_publish_and_end_on_the_newest(builder: Builder) -> None:
    events = _new_uploads(builder, 5)
    shuffled = list(range(5))
    random.Random(5).shuffle(shuffled)

    outcomes = concurrently([lambda n=n: builder.deliver(events[n]) for n in shuffled])

    failed = [o for o in outcomes if isinstance(o, Exception)]
    assert not failed, failed
    results = {n: only(o) for n, o in zip(shuffled, outcomes, strict=True)}
    newest = results[4]
    layer = newest["layer_name"]
    assert all(r["published"] for r in results.values())
    assert len({r["version_arn"] for r in results.values()}) == 5
    assert builder.versions(layer) == [1, 2, 3, 4, 5]
    assert ours(builder, layer) == [newest["version_arn"]]
    assert builder.pointer(layer) == newest["version_arn"]
    assert newest["status"] == "published"
    compared = newest["ordering"]["compared"]
    record("5 new uploads of one layer at once, shuffled",
           f"survived: 5 versions, each published once; consumer and SSM pointer on the newest "
           f"upload (compared: {compared})")


def test_older_build_finishing_after_the_newest_does_not_overwrite_it(builder: Builder) -> None:
    events = _new_uploads(builder, 5)

    with builder.faults() as calls:
        newest = only(builder.deliver(events[-1]))
        older = [only(builder.deliver(e)) for e in reversed(events[:-1])]

    layer = newest["layer_name"]
    assert newest["status"] == "published"
    assert [r["status"] for r in older] == ["superseded"] * 4
    # Each older build checked the consumer and found it on the newest: nothing to change.
    assert all(r["published"] for r in older)
    assert all([(a["status"], a["version_arn"]) for a in r["attachments"]]
               == [("unchanged", newest["version_arn"])] for r in older)
    assert builder.versions(layer) == [1, 2, 3, 4, 5]
    assert calls.attempts("lambda", "UpdateFunctionConfiguration") == 1
    assert calls.attempts("ssm", "PutParameter") == 1
    assert ours(builder, layer) == [newest["version_arn"]]
    assert builder.pointer(layer) == newest["version_arn"]
    record("newest upload built first, 4 older ones finish later",
           f"survived: the 4 older builds published but were superseded; consumer and pointer stay "
           f"on the newest (compared: {newest['ordering']['compared']})")


def test_attach_keeps_the_functions_other_layers(builder: Builder) -> None:
    other = builder.publish_other_layer("team-tools")
    builder.set_layers([other])

    first = only(builder.deliver(builder.upload(builder.archive("keep-1"))))
    after_first = builder.layers_of()
    second = only(builder.deliver(builder.upload(builder.archive("keep-2"))))

    assert after_first == [other, first["version_arn"]]
    assert builder.layers_of() == [other, second["version_arn"]]
    assert first["version_arn"] != second["version_arn"]
    record("consumer already uses another layer",
           "survived: it keeps that layer in place; only our older version was replaced")


def test_function_at_the_layer_limit_is_refused_and_left_alone(builder: Builder) -> None:
    limit = limits.MAX_LAYERS_PER_FUNCTION
    others = [builder.publish_other_layer(f"team-{n}") for n in range(limit)]
    builder.set_layers(others)
    lam = builder.aws.client("lambda")
    before = lam.get_function_configuration(FunctionName=builder.consumer)

    with builder.faults() as calls:
        result = only(builder.deliver(builder.upload(builder.archive("full"))))

    after = lam.get_function_configuration(FunctionName=builder.consumer)
    (attachment,) = result["attachments"]
    assert attachment["function"] == builder.consumer and attachment["status"] == "refused"
    assert f"allows {limits.MAX_LAYERS_PER_FUNCTION}" in attachment["reason"]
    assert calls.attempts("lambda", "UpdateFunctionConfiguration") == 0
    assert strip_metadata(after) == strip_metadata(before)
    report = builder.report(result["report"])
    assert report["attachments"] == result["attachments"]
    reason = attachment["reason"]
    short = reason.split(" (")[0] + "; " + reason.split("; ", 1)[1] if "; " in reason else reason
    record(f"consumer already at {limits.MAX_LAYERS_PER_FUNCTION} layers",
           f"refused for that function: {short} (function unchanged; the report says so)")


def test_an_upload_naming_a_layer_the_consumers_do_not_subscribe_to_changes_no_function(
        builder: Builder) -> None:
    """A team member can name any layer of the team: it is published, but it only replaces an
    older version of itself in a consumer, never lands in a function that does not use it."""
    before = builder.layers_of()
    event = builder.upload(builder.archive("rogue", "rogue-layer-1.0.0.zip"))
    [result] = builder.deliver(event)["results"]
    assert result["status"] == "published"
    assert result["layer_name"] == builder.layer("rogue-layer")
    assert [a["status"] for a in result["attachments"]] == ["not a consumer"]
    assert builder.layers_of() == before
    record("upload naming a layer outside the team's subscribed_layers",
           "refused attach: published, no consumer function changed")


@pytest.mark.filterwarnings("ignore:No application metrics to publish:UserWarning")
def test_an_older_build_that_overwrote_the_newest_and_failed_is_repaired_by_its_retry(
        builder: Builder) -> None:
    """Issue 9's interleaving, in two builder containers: build A (older upload) is updating the
    consumer when build B (newer) finishes; A's update lands after B's, then A fails before it
    looks again. Lambda retries A: it cannot claim the order book (B is newer) and must still
    put the consumer back on B."""
    older, newer = _new_uploads(builder, 2)
    other = load_builder_app()  # a second container, for B
    other.adapters.sandbox = LocalSandbox()  # moto cannot run the check functions
    real_set_layers = builder.app.adapters.functions.set_layers
    seen: dict[str, dict] = {}

    def b_finishes_meanwhile(state, layers, deadline):
        if "b" not in seen:
            seen["b"] = only(other.handler(newer, FakeContext(function_name=builder.function_name)))
            calls.inject("ssm", "GetParameter", throttling("ssm"))  # A's next step fails for good
        real_set_layers(state, layers, deadline)

    builder.app.adapters.functions.set_layers = b_finishes_meanwhile
    with builder.faults() as calls:
        failure = builder.attempt(older)
        layer = seen["b"]["layer_name"]
        stale = ours(builder, layer)
        calls.heal()
        retried = only(builder.deliver(older))  # Lambda's retry of A

    assert isinstance(failure, TransientError), failure
    assert seen["b"]["status"] == "published"
    assert stale != [seen["b"]["version_arn"]]  # A overwrote B: the state issue 9 describes
    assert retried["status"] == "superseded"
    assert ours(builder, layer) == [seen["b"]["version_arn"]]
    assert builder.pointer(layer) == seen["b"]["version_arn"]
    record("older build overwrites the newest, then fails before looking again (2 containers)",
           "survived: its retry lost the order book to the newer upload and still put the consumer "
           "and the pointer back on the newest version")


def test_retention_and_sharing_follow_each_publish(make_builder: BuilderFactory) -> None:
    """KEEP_VERSIONS=2, the stack sharing with an organization and the team with one account:
    after four uploads the two newest versions remain (a function still using an older one keeps
    it), and every version published was shared with both."""
    account, organization = "210987654321", "o-a1b2c3d4e5"
    builder = make_builder(
        environment={"KEEP_VERSIONS": "2", "SHARE_ORGANIZATION_ID": organization},
        teams=[{"name": "data", "consumers": [], "subscribed_layers": ["mixed"],
                "share_accounts": [account]}])
    pinned = builder.create_function(f"pinned-{builder.stack_prefix}fn")
    results = []
    for n in range(4):
        results.append(only(builder.deliver(builder.upload(builder.archive(f"keep-{n}")))))
        if n == 0:  # a function outside the team keeps using version 1
            builder.set_layers([results[0]["version_arn"]], function=pinned)
    layer = results[0]["layer_name"]
    lam = builder.aws.client("lambda")
    assert builder.versions(layer) == [1, 3, 4]
    deleted = [d for r in results for t in r["targets"] for d in t["retention"]]
    assert [(d["version"], d["action"]) for d in deleted] == [(2, "deleted")]
    for number in (1, 3, 4):
        policy = json.loads(lam.get_layer_version_policy(LayerName=layer,
                                                          VersionNumber=number)["Policy"])
        by_account, by_organization = policy["Statement"]  # the stack's and the team's
        assert account in json.dumps(by_account["Principal"])
        assert organization in json.dumps(by_organization)  # moto: OrganizationId; AWS: Condition
        assert {s["Action"] for s in policy["Statement"]} == {"lambda:GetLayerVersion"}
    record("KeepVersions=2, stack and team sharing, 4 uploads, version 1 still used elsewhere",
           "survived: versions 1 (in use), 3 and 4 kept, 2 deleted after the fourth publish; "
           "each version shared with the team's account and the stack's organization")
