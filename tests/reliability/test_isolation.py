"""Isolation: the builder and its check function each run as their own local Lambda (the real
awslambdaric bootstrap, a user of their own, a private /tmp) behind the local Lambda endpoint
(tools/local_lambda_service.py), with moto for everything else; and a burst of uploads queues
within the builder's reserved concurrency instead of failing (issue 9).
"""

from __future__ import annotations

import json
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.reliability.service_env import (  # noqa: F401 (fixtures)
    MIXED,
    json_reports,
    reliability_aws_fixture,
)
from tests.reliability.table import record
from tools.cfn import load_template
from tools.demo import BUILDER_PACKAGES, zip_project
from tools.lambda_isolation import isolation_available
from tools.local_aws import LocalAws
from tools.local_lambda_service import LocalLambdaService
from tools.stack import LocalStack, provision

pytestmark = [
    pytest.mark.network,
    pytest.mark.skipif(not isolation_available(),
                       reason="each local function needs a user of its own: run as root"),
]
#: The builder's reserved concurrency for the burst: the template's BuilderConcurrency parameter
#: (its ReservedConcurrentExecutions), or this value directly where the template has none.
RESERVED = 2
#: Uploads at once: more than the reserved concurrency, so some must wait.
BURST = RESERVED + 2


@dataclass
class LocalService:
    """A stack of its own in moto, and its functions behind the local Lambda endpoint."""

    aws: LocalAws
    stack: LocalStack
    lambdas: LocalLambdaService
    work: Path
    prefix: str  # LayerNamePrefix of this stack

    @property
    def builder(self) -> str:
        return self.stack.name("BuilderFunction")

    def archive(self, name: str, marker: str, extra: dict[str, str] | None = None) -> Path:
        """MIXED with its own code marked (so its layer differs) as <name>-1.0.0.zip."""
        project = self.work / f"{name}-{uuid.uuid4().hex[:6]}" / "mixed"
        shutil.copytree(MIXED, project, ignore=shutil.ignore_patterns("__pycache__", ".venv"))
        (project / "build_marker.py").write_text(f"MARKER = {marker!r}\n")
        for relative, text in (extra or {}).items():
            (project / relative).parent.mkdir(parents=True, exist_ok=True)
            (project / relative).write_text(text)
        return zip_project(project, project.parent / f"{name}-1.0.0.zip")

    def event(self, archive: Path) -> dict[str, Any]:
        return self.stack.upload(archive, self.stack.upload_key(archive.name))

    def reports(self) -> list[dict[str, Any]]:
        return json_reports(self.aws.client("s3"), self.stack.name("ArtifactBucket"))

    def failure_queue(self) -> list[dict[str, Any]]:
        sqs = self.aws.client("sqs")
        url = sqs.get_queue_url(QueueName=self.stack.name("BuildFailureQueue"))["QueueUrl"]
        messages = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10,
                                       WaitTimeSeconds=0).get("Messages", [])
        return [json.loads(m["Body"]) for m in messages]


@pytest.fixture
def service(reliability_aws: LocalAws, tmp_path: Path) -> Iterator[LocalService]:
    unique = uuid.uuid4().hex[:8]
    prefix = f"i{unique}-"
    overrides = {"LayerNamePrefix": prefix}
    if "BuilderConcurrency" in load_template().get("Parameters", {}):
        overrides["BuilderConcurrency"] = str(RESERVED)
    stack = provision(reliability_aws, overrides=overrides, stack_name=f"iso-{unique}")
    with LocalLambdaService(reliability_aws, retry_delays_s=(1.0, 2.0)) as lambdas:
        yield LocalService(reliability_aws, stack, lambdas, tmp_path, prefix)


def test_a_burst_of_uploads_queues_within_the_builders_reserved_concurrency(
    service: LocalService,
) -> None:
    lam = service.aws.client("lambda")
    configured = lam.get_function_concurrency(FunctionName=service.builder)
    reserved = configured.get("ReservedConcurrentExecutions")  # as the stack deployed it
    service.lambdas.register_check_functions(service.stack)  # where the builder's checks run
    service.lambdas.register_from_stack(
        service.stack, "BuilderFunction", packages=BUILDER_PACKAGES,
        env={"CACHE_DIR": "/tmp/layer-builder-cache"},
        reserved=None if reserved is not None else RESERVED)
    limit = int(reserved or RESERVED)
    events = [service.event(service.archive(f"burst{n}", f"burst-{n}")) for n in range(BURST)]

    for event in events:  # as S3 delivers them: asynchronously, all at once
        service.lambdas.invoke_async(service.builder, event)
    finished = service.lambdas.wait_idle(timeout_s=600)

    stats = service.lambdas.stats(service.builder)
    failures = service.failure_queue()
    published = sorted(r["layer_name"] for r in service.reports() if r["status"] == "published")
    assert finished
    assert len(published) == BURST, service.reports()
    assert stats.max_running == limit  # queued: never more than the reserved concurrency
    assert stats.invocations == BURST and stats.errors == 0  # all ran, none failed or retried
    assert stats.to_destination == 0 and failures == []
    source = ("the template's ReservedConcurrentExecutions" if reserved is not None
              else "passed: the template sets none")
    record(f"burst: {BURST} uploads at once, reserved concurrency {limit}",
           f"survived: at most {stats.max_running} builds ran at once ({source}); all {BURST} "
           f"finished, none failed, the failure queue is empty")
