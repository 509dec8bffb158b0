"""AWS faults, time and disk: retries recover what they can; the rest is reported, leaves no half
state and completes on Lambda's retry.

Faults are injected at the botocore level (awsfaults.py) into the builder's own clients, which
talk to moto over HTTP; botocore's standard retry mode and backoff run for real (the sleeps are
recorded and shortened).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import layer_builder.service.aws as aws_adapters
import layer_builder.zipwriter as zipwriter
import pytest
from aws_lambda_powertools.utilities.idempotency.exceptions import IdempotencyPersistenceLayerError
from layer_builder.errors import DiskFullError, OutOfTimeError, TransientError

from tests.reliability.awsfaults import (
    HTTP_500,
    HTTP_503,
    LOST_RESPONSE,
    READ_TIMEOUT,
    Fault,
    FaultInjector,
    throttling,
)
from tests.reliability.service_env import (
    Builder,
    enospc,
    temp_entries,
)
from tests.reliability.table import record

#: botocore's `max_attempts` counts retries: the first call plus that many.
ATTEMPTS = aws_adapters.RETRY_CONFIG.retries["max_attempts"] + 1
#: Every call on the way from an S3 event to an attached layer that the faults hit.
CALLS = [("s3", "GetObject"), ("s3", "PutObject"), ("lambda", "PublishLayerVersion"),
         ("lambda", "UpdateFunctionConfiguration"), ("ssm", "PutParameter"),
         ("dynamodb", "PutItem"), ("dynamodb", "GetItem")]
KINDS = {"throttling": throttling, "HTTP 500": lambda _: HTTP_500, "HTTP 503": lambda _: HTTP_503,
         "read timeout": lambda _: READ_TIMEOUT}
FAILED_EVENT = "Layer Build Failed"


def only(result: dict) -> dict:
    assert len(result["results"]) == 1, result
    return result["results"][0]


def failure_events(calls: FaultInjector) -> list[dict]:
    """The 'Layer Build Failed' events the builder sent to EventBridge."""
    found = []
    for call in calls.delivered("eventbridge", "PutEvents"):
        for entry in json.loads(call.body)["Entries"]:
            if entry["DetailType"] == FAILED_EVENT:
                found.append(json.loads(entry["Detail"]))
    return found


def failure_reports(builder: Builder) -> list[dict]:
    return [r for r in builder.reports() if r["status"] in ("failed", "refused")]


def assert_nothing_published(builder: Builder) -> None:
    layer = builder.layer()
    assert builder.versions(layer) == []
    assert builder.layers_of() == []
    assert builder.pointer(layer) is None


def assert_attached_versions_are_complete(builder: Builder) -> None:
    """Whatever the consumer points at is a version that exists with its full content."""
    lam = builder.aws.client("lambda")
    for arn in builder.layers_of():
        layer, _, number = arn.rpartition(":")
        version = lam.get_layer_version(LayerName=layer, VersionNumber=int(number))
        assert version["Content"]["CodeSize"] > 0, arn


@pytest.mark.parametrize("kind", list(KINDS))
def test_a_few_faults_on_every_call_are_retried_away(builder: Builder, kind: str) -> None:
    event = builder.upload(builder.archive(f"few-{kind}"))

    with builder.faults() as calls:
        rules = [calls.inject(svc, op, KINDS[kind](svc), times=2) for svc, op in CALLS]
        result = only(builder.deliver(event))

    assert result["status"] == "published", result["error"]
    assert [rule.injected for rule in rules] == [2] * len(CALLS)  # every call was hit twice
    assert len(calls.delays) >= 2 * len(CALLS)  # botocore backed off before each retry
    assert builder.versions(builder.layer()) == [1]
    assert builder.layers_of() == [result["version_arn"]]
    assert builder.pointer(builder.layer()) == result["version_arn"]
    assert failure_events(calls) == []
    record(f"{kind} x2 on each of {len(CALLS)} AWS calls",
           f"survived: {sum(r.injected for r in rules)} faults retried with backoff (up to "
           f"{max(calls.delays):.2f} s asked), 1 version published and attached")


# (case, builder, operation, fault, match, published before the fault)
EXHAUSTED: list[tuple[str, str, str, Fault, Any, bool]] = [
    ("S3 GetObject of the upload", "s3", "GetObject", throttling("s3"), None, False),
    ("S3 GetObject of the upload", "s3", "GetObject", READ_TIMEOUT, None, False),
    ("DynamoDB GetItem (build memo)", "dynamodb", "GetItem", READ_TIMEOUT, None, False),
    ("S3 PutObject of the layer zip", "s3", "PutObject", HTTP_500,
     lambda request: "/layers/" in request.url, False),
    ("Lambda PublishLayerVersion", "lambda", "PublishLayerVersion", throttling("lambda"), None,
     False),
    ("DynamoDB PutItem (order book)", "dynamodb", "PutItem", HTTP_503,
     lambda request: b"layer-order#" in (request.body or b""), True),
    ("SSM PutParameter (pointer)", "ssm", "PutParameter", throttling("ssm"), None, True),
]


@pytest.mark.parametrize("case, svc, operation, fault, match, published", EXHAUSTED,
                         ids=[f"{row[0]}: {row[3].label}" for row in EXHAUSTED])
def test_retries_exhausted_report_leave_no_half_state_and_a_retry_completes(
        builder: Builder, case: str, svc: str, operation: str, fault: Fault, match: Any,
        published: bool) -> None:
    event = builder.upload(builder.archive(f"exhausted-{operation}"))

    with builder.faults() as calls:
        rule = calls.inject(svc, operation, fault, match=match)
        failure = builder.attempt(event)
        assert isinstance(failure, TransientError), failure
        assert rule.injected == ATTEMPTS

        (report,) = failure_reports(builder)
        assert report["status"] == "failed" and report["error"]["retryable"] == "True"
        assert fault.code in report["error"]["message"] or fault.timeout
        assert [e["status"] for e in failure_events(calls)] == ["failed"]
        assert builder.idempotency_records() == []  # released: Lambda's retry will run
        if published:
            assert report["version_arn"] and builder.versions(builder.layer()) == [1]
            assert_attached_versions_are_complete(builder)
        else:
            assert report["version_arn"] == ""
            assert_nothing_published(builder)

        calls.heal()
        retried = only(builder.deliver(event))  # Lambda's retry of the same event

    assert retried["status"] in ("published", "reused"), retried["error"]
    assert builder.versions(builder.layer()) == [1]  # never published twice
    assert builder.layers_of() == [retried["version_arn"]]
    assert builder.pointer(builder.layer()) == retried["version_arn"]
    stage = "after publishing" if published else "before publishing"
    record(f"{fault.label} on {case}, every attempt",
           f"survived: failed {stage} after {ATTEMPTS} attempts with a failure report and event; "
           f"{'the version stayed unattached or complete' if published else 'nothing published'}; "
           f"the retry completed with 1 version")


def test_published_but_attach_failed_is_reported_and_the_retry_attaches_without_publishing(
        builder: Builder) -> None:
    event = builder.upload(builder.archive("attach-fails"))

    with builder.faults() as calls:
        calls.inject("lambda", "UpdateFunctionConfiguration", HTTP_503)
        failure = builder.attempt(event)
        (report,) = failure_reports(builder)
        published_before = calls.attempts("lambda", "PublishLayerVersion")
        calls.heal()
        retried = only(builder.deliver(event))
        published_on_retry = calls.attempts("lambda", "PublishLayerVersion") - published_before

    assert isinstance(failure, TransientError)
    assert report["published"] and report["version_arn"].endswith(f":layer:{builder.layer()}:1")
    assert "Updating the layers of" in report["error"]["message"]
    assert published_on_retry == 0
    assert retried["status"] == "reused" and retried["version_arn"] == report["version_arn"]
    assert builder.versions(builder.layer()) == [1]
    assert builder.layers_of() == [report["version_arn"]]
    record("published, then UpdateFunctionConfiguration fails every attempt",
           f"survived: the failure report names version {report['version_arn'].rsplit(':', 1)[1]}; "
           "the retry attached it without publishing again (1 version)")


def test_idempotency_store_unavailable_fails_before_anything_starts(builder: Builder) -> None:
    event = builder.upload(builder.archive("idempotency-down"))

    with builder.faults() as calls:
        rule = calls.inject("dynamodb", "PutItem", throttling("dynamodb"))
        failure = builder.attempt(event)
        started = calls.attempts("s3", "GetObject")
        calls.heal()
        retried = only(builder.deliver(event))

    assert isinstance(failure, IdempotencyPersistenceLayerError)
    assert rule.injected == ATTEMPTS
    assert started == 0  # without its idempotency record the build does not begin
    assert retried["status"] == "published" and builder.versions(builder.layer()) == [1]
    record("DynamoDB throttles the idempotency record every attempt",
           "survived: the handler failed before building anything (Lambda retries the event); "
           "the retry published 1 version")


def test_report_bucket_unwritable_still_sends_the_failure_event(builder: Builder) -> None:
    event = builder.upload(builder.archive("no-reports"))

    with builder.faults() as calls:
        calls.inject("s3", "PutObject", HTTP_500)  # the layer zip and the report alike
        failure = builder.attempt(event)

    assert isinstance(failure, TransientError)
    assert builder.reports() == []
    (sent,) = failure_events(calls)
    assert "Uploading s3://" in sent["error"]["message"]
    assert "Writing s3://" in sent["error"]["report_error"]
    assert_nothing_published(builder)
    record("S3 PutObject fails every attempt, reports included",
           "survived: no report could be written; the failure event still went out, naming both "
           "errors")


def test_failed_events_go_to_the_on_failure_queue(builder: Builder) -> None:
    """moto never invokes asynchronously, so Lambda's own retries and the destination cannot run
    here: this checks the builder's async-invoke config (the other tests show that transient
    failures raise, which is what makes Lambda retry and finally use the destination)."""
    lam, sqs = builder.aws.client("lambda"), builder.aws.client("sqs")
    config = lam.get_function_event_invoke_config(FunctionName=builder.function_name)
    queue_url = sqs.get_queue_url(QueueName=builder.stack.name("BuildFailureQueue"))["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])[
        "Attributes"]["QueueArn"]

    assert config["DestinationConfig"]["OnFailure"]["Destination"] == queue_arn
    assert config["MaximumRetryAttempts"] == 2
    record("events that fail every retry",
           f"survived: EventInvokeConfig sends them to {queue_arn.rsplit(':', 1)[1]} after "
           f"{config['MaximumRetryAttempts']} retries (config asserted; moto does not invoke "
           "asynchronously)")


@pytest.fixture
def lambda_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The builder's /tmp: tempfile (and subprocesses through TMPDIR) write here."""
    root = tmp_path / "lambda-tmp"
    root.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(root))
    monkeypatch.setenv("TMPDIR", str(root))
    return root


def test_build_that_would_outlive_the_lambda_stops_in_time(builder: Builder,
                                                          lambda_tmp: Path) -> None:
    margin_ms = int(builder.app.settings.finish_margin_s * 1000)
    event = builder.upload(builder.archive("late"))

    with builder.faults() as calls:
        failure = builder.attempt(event, remaining_ms=margin_ms + 50)

    assert isinstance(failure, OutOfTimeError), failure
    (report,) = failure_reports(builder)
    assert report["error"]["kind"] == "out_of_time"
    assert calls.attempts("lambda", "PublishLayerVersion") == 0
    assert_nothing_published(builder)
    assert builder.idempotency_records() == []
    assert temp_entries(lambda_tmp) == []
    record(f"{margin_ms + 50} ms left (finish margin {margin_ms} ms)",
           f"survived: stopped before publishing: {report['error']['message']}")


def test_disk_full_while_writing_the_layer_zip(builder: Builder, lambda_tmp: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    copy_raw = zipwriter._copy_raw

    def fill_up(entry: Any, out: Any) -> None:
        out.write(b"\0" * 4096)  # part of the member made it to disk
        raise enospc()

    monkeypatch.setattr(zipwriter, "_copy_raw", fill_up)
    event = builder.upload(builder.archive("enospc-zip"))
    failure = builder.attempt(event)
    monkeypatch.setattr(zipwriter, "_copy_raw", copy_raw)

    assert isinstance(failure, DiskFullError), failure
    (report,) = failure_reports(builder)
    assert report["error"]["kind"] == "disk_full"
    assert "disk filled up" in report["error"]["message"]
    assert_nothing_published(builder)
    assert temp_entries(lambda_tmp) == []
    retried = only(builder.deliver(event))
    assert retried["status"] == "published"
    record("/tmp full (ENOSPC) while writing the layer zip",
           f"survived: {report['error']['message']} Nothing published, /tmp left empty, retry ok")


def test_disk_full_while_downloading_the_upload(builder: Builder, lambda_tmp: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    class FullDisk:
        def __init__(self, path: Any, mode: str) -> None:
            self.file = open(path, mode)  # noqa: SIM115

        def write(self, data: bytes) -> int:
            self.file.write(data[:100])
            raise enospc()

        def __enter__(self) -> FullDisk:
            return self

        def __exit__(self, *exc: object) -> None:
            self.file.close()

    monkeypatch.setattr(aws_adapters, "open", FullDisk, raising=False)
    event = builder.upload(builder.archive("enospc-download"))
    failure = builder.attempt(event)
    monkeypatch.delattr(aws_adapters, "open")

    assert isinstance(failure, DiskFullError), failure
    (report,) = failure_reports(builder)
    assert report["error"]["kind"] == "disk_full"
    assert "disk filled up" in report["error"]["message"]
    assert_nothing_published(builder)
    assert temp_entries(lambda_tmp) == []
    record("/tmp full (ENOSPC) while downloading the upload",
           f"survived: {report['error']['message']} Nothing published, /tmp left empty")


def test_lost_publish_response_does_not_make_a_second_version(builder: Builder) -> None:
    event = builder.upload(builder.archive("lost-publish"))

    with builder.faults() as calls:
        calls.inject("lambda", "PublishLayerVersion", LOST_RESPONSE, times=1)
        result = only(builder.deliver(event))

    assert result["status"] == "published"
    assert builder.layers_of() == [result["version_arn"]]
    assert builder.versions(builder.layer()) == [1], "botocore resent PublishLayerVersion"
    record("PublishLayerVersion response lost (the version was created)",
           "survived: 1 version")


def test_remote_dependency_cache_unreachable_costs_only_a_rebuild(
        make_builder: Any, make_cache_dir: Any, tmp_path: Path) -> None:
    # An empty local cache: the build looks in the artifact bucket's cache/ first.
    builder = make_builder(cache_dir=make_cache_dir(tmp_path / "cold-cache"))
    event = builder.upload(builder.archive("remote-cache-down"))
    in_cache = lambda request: "/cache/" in request.url  # noqa: E731

    with builder.faults() as calls:
        for operation in ("HeadObject", "GetObject"):
            calls.inject("s3", operation, READ_TIMEOUT, match=in_cache)
        calls.inject("s3", "PutObject", HTTP_500, match=in_cache)
        result = only(builder.deliver(event))
        report = builder.report(result["report"])

    assert result["status"] == "published", result["error"]
    warnings = report["build"]["warnings"]
    assert any(w.startswith("cache fetch:") for w in warnings), warnings
    assert any(w.startswith("cache push:") for w in warnings), warnings
    assert builder.versions(builder.layer()) == [1]
    record("S3 dependency cache times out (fetch) and fails (push) every attempt",
           "survived: installed instead; the report warns about the cache; 1 version published")
