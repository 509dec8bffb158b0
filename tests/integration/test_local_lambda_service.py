"""The local Lambda endpoint: Invoke runs local functions (sync, async with reserved concurrency,
retries, on-failure destination); every other Lambda request reaches moto unchanged."""

from __future__ import annotations

import io
import json
import textwrap
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from botocore.config import Config

from tools.lambda_runtime import LocalLambda
from tools.local_aws import LocalAws
from tools.local_lambda_service import LocalLambdaService

APP = """
    import os, time

    def handler(event, context):
        if event.get("sleep"):
            time.sleep(event["sleep"])
        if event.get("fail"):
            raise RuntimeError(f"failing on purpose: {event['fail']}")
        return {"echo": event, "pid": os.getpid()}
"""


@pytest.fixture(scope="module")
def aws() -> Iterator[LocalAws]:
    with LocalAws() as local:
        yield local


@pytest.fixture
def code(tmp_path: Path) -> Path:
    (tmp_path / "fn").mkdir()
    (tmp_path / "fn" / "app.py").write_text(textwrap.dedent(APP))
    return tmp_path / "fn"


@pytest.fixture
def lambdas(aws: LocalAws) -> Iterator[LocalLambdaService]:
    with LocalLambdaService(aws, retry_delays_s=(0.05,)) as service:
        yield service


def client(aws: LocalAws, service: LocalLambdaService):  # noqa: ANN201 (a boto3 client)
    return aws.session().client("lambda", endpoint_url=service.endpoint_url,
                                config=Config(retries={"total_max_attempts": 1}))


def test_invoke_runs_the_local_function_and_everything_else_reaches_moto(
    aws: LocalAws, lambdas: LocalLambdaService, code: Path,
) -> None:
    lambdas.register("echo-fn", lambda: LocalLambda(code, function_name="echo-fn", timeout_s=10))
    lam = client(aws, lambdas)

    answer = lam.invoke(FunctionName="echo-fn", Payload=json.dumps({"n": 1}))
    failed = lam.invoke(FunctionName="arn:aws:lambda:us-east-1:123456789012:function:echo-fn",
                        Payload=json.dumps({"fail": "x"}), LogType="Tail")
    layer = io.BytesIO()
    with zipfile.ZipFile(layer, "w") as zf:
        zf.writestr("python/m.py", "X = 1\n")
    published = lam.publish_layer_version(LayerName="through-the-proxy",
                                          Content={"ZipFile": layer.getvalue()})

    assert answer["StatusCode"] == 200 and "FunctionError" not in answer
    assert json.loads(answer["Payload"].read())["echo"] == {"n": 1}
    assert failed["FunctionError"] == "Unhandled"
    document = json.loads(failed["Payload"].read())
    assert document["errorType"] == "RuntimeError" and "failing on purpose" in document["errorMessage"]
    assert "LogResult" in failed
    # moto holds the layer: the request went through unchanged, and so did its answer.
    assert published["Version"] == 1
    versions = aws.client("lambda").list_layer_versions(LayerName="through-the-proxy")
    assert [v["Version"] for v in versions["LayerVersions"]] == [1]
    assert lambdas.stats("echo-fn").invocations == 2


def test_a_synchronous_invoke_over_the_reserved_concurrency_is_throttled(
    aws: LocalAws, lambdas: LocalLambdaService, code: Path,
) -> None:
    lambdas.register("one-at-a-time", lambda: LocalLambda(code, function_name="one", timeout_s=10),
                     reserved=1)
    lambdas.invoke_async("one-at-a-time", {"sleep": 1.5})
    lam = client(aws, lambdas)
    deadline = time.monotonic() + 10
    while lambdas.stats("one-at-a-time").running == 0:
        assert time.monotonic() < deadline
        time.sleep(0.01)

    with pytest.raises(lam.exceptions.TooManyRequestsException):
        lam.invoke(FunctionName="one-at-a-time", Payload=b"{}")
    assert lambdas.wait_idle(30)
    assert lambdas.stats("one-at-a-time").throttled == 1


def test_a_burst_of_async_events_queues_within_the_reserved_concurrency(
    aws: LocalAws, lambdas: LocalLambdaService, code: Path,
) -> None:
    lambdas.register("burst", lambda: LocalLambda(code, function_name="burst", timeout_s=10),
                     reserved=2)
    lam = client(aws, lambdas)
    for n in range(6):
        accepted = lam.invoke(FunctionName="burst", InvocationType="Event",
                              Payload=json.dumps({"n": n, "sleep": 0.3}))
        assert accepted["StatusCode"] == 202

    assert lambdas.wait_idle(60)
    stats = lambdas.stats("burst")
    assert stats.invocations == 6 and stats.errors == 0
    assert stats.max_running == 2  # queued, never more than reserved at once
    assert stats.to_destination == 0


def test_a_failing_async_event_is_retried_then_sent_to_the_failure_queue(
    aws: LocalAws, lambdas: LocalLambdaService, code: Path,
) -> None:
    sqs = aws.client("sqs")
    url = sqs.create_queue(QueueName="failures")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    lambdas.register("flaky", lambda: LocalLambda(code, function_name="flaky", timeout_s=10),
                     max_retries=2, on_failure=arn)

    lambdas.invoke_async("flaky", {"fail": "always"})
    assert lambdas.wait_idle(60)

    messages = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10)["Messages"]
    [record] = [json.loads(m["Body"]) for m in messages]
    assert record["requestContext"]["condition"] == "RetriesExhausted"
    assert record["requestContext"]["approximateInvokeCount"] == 3  # once and two retries
    assert record["requestPayload"] == {"fail": "always"}
    assert record["responseContext"]["functionError"] == "Unhandled"
    assert "failing on purpose" in record["responsePayload"]["errorMessage"]
    assert lambdas.stats("flaky").invocations == 3
