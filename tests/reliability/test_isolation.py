"""Isolation: the builder and its check function each run as their own local Lambda (the real
awslambdaric bootstrap, a user of their own, a private /tmp) behind the local Lambda endpoint
(tools/local_lambda_service.py), with moto for everything else; and a burst of uploads queues
within the builder's reserved concurrency instead of failing (issue 9).
"""

from __future__ import annotations

import json
import shutil
import uuid
import zipfile
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
from tools.lambda_isolation import alive, isolation_available, shared_dir
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


# --------------------------------------------------------------------------------------------
# A hostile upload's survivor (issue 8): the builder imports the upload's code only in the
# check function, a Lambda of its own; here each function is a user of its own with a private
# /tmp, as each is its own execution environment in Lambda.
# --------------------------------------------------------------------------------------------
SURVIVOR = """
import http.client, os, time

REPORT, TARGETS = {report!r}, {targets!r}


def note(line):
    with open(os.path.join(REPORT, "log"), "a") as log:
        log.write(line + "\\n")


def attempt(what, action):
    try:
        action()
        note(f"{{what}}: DONE")
    except Exception as exc:
        note(f"{{what}}: denied ({{type(exc).__name__}})")


def write(path):
    if os.path.isdir(path):
        with open(os.path.join(path, "poison"), "w") as f:
            f.write("from another team")
    else:
        with open(path, "ab") as f:
            f.write(b"poison")


def read_other_environments():
    mine, read = os.getuid(), []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if os.stat(f"/proc/{{pid}}").st_uid == mine:
                continue
            with open(f"/proc/{{pid}}/environ", "rb") as f:
                if f.read():
                    read.append(pid)
        except OSError:
            pass
    if read:
        raise SystemExit(0)  # DONE: some other process's environment was readable
    raise PermissionError("no other process's environment")


def next_event():
    host, port = os.environ["AWS_LAMBDA_RUNTIME_API"].split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=1)
    conn.request("GET", "/2018-06-01/runtime/invocation/next")
    if conn.getresponse().status == 200:
        raise SystemExit(0)
    raise PermissionError("no event")


if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:  # a daemon in a session of its own
        note(f"pid {{os.getpid()}}")
        for what, path in TARGETS.items():
            attempt(f"write {{what}}", lambda path=path: write(path))
        for what, action in (("read other environments", read_other_environments),
                             ("take the next event", next_event)):
            try:
                action()
                note(f"{{what}}: denied ({{action.__name__}} raised nothing)")
            except SystemExit:
                note(f"{{what}}: DONE")
            except Exception as exc:
                note(f"{{what}}: denied ({{type(exc).__name__}})")
        note("attempts done")
        while True:  # stay, for the next build
            time.sleep(0.05)
    os._exit(0)
deadline = time.time() + 20
while time.time() < deadline and "attempts done" not in open(os.path.join(REPORT, "log")).read():
    time.sleep(0.05)
"""


def same_content_new_bytes(archive: Path, dest: Path) -> Path:
    """The archive again with a zip comment: a new upload (no memo), the same project."""
    with zipfile.ZipFile(archive) as src, zipfile.ZipFile(dest, "w") as out:
        for info in src.infolist():
            out.writestr(info, src.read(info))
        out.comment = b"uploaded again"
    return dest


@pytest.fixture
def two_teams(reliability_aws: LocalAws, tmp_path: Path) -> Iterator[LocalService]:
    unique = uuid.uuid4().hex[:8]
    prefix = f"s{unique}-"
    teams = [{"name": "data", "layer_prefix": f"{prefix}data-"},
             {"name": "ops", "layer_prefix": f"{prefix}ops-"}]
    stack = provision(reliability_aws, stack_name=f"surv-{unique}",
                      overrides={"LayerNamePrefix": prefix, "Teams": json.dumps(teams)})
    with LocalLambdaService(reliability_aws) as lambdas:
        yield LocalService(reliability_aws, stack, lambdas, tmp_path, prefix)


def test_a_survivor_forked_by_one_teams_import_cannot_touch_the_builder_or_the_next_build(
    two_teams: LocalService,
) -> None:
    service = two_teams
    checks = service.lambdas.register_check_functions(service.stack)
    builder = service.lambdas.register_from_stack(
        service.stack, "BuilderFunction", packages=BUILDER_PACKAGES,
        env={"CACHE_DIR": "/tmp/layer-builder-cache"})
    assert checks, "this machine runs no check function of the stack"
    victim = service.archive("victim", "clean")

    def build(archive: Path, team: str) -> dict[str, Any]:
        event = service.stack.upload(archive, service.stack.upload_key(archive.name, team))
        result = service.lambdas.invoke(builder, event)
        assert result is not None and result.ok, result and (result.error, result.logs[-3000:])
        return result.payload["results"][0]

    clean = build(victim, "data")
    [environment] = service.lambdas.environments(builder)  # one warm container throughout
    cache = environment.tmpdir / "layer-builder-cache"
    report = shared_dir("survivor-")
    report.chmod(0o1777)
    (report / "log").touch(mode=0o666)
    (report / "log").chmod(0o666)
    targets = {"the builder's cache": str(cache),
               **{f"the builder's cache/{p.name}": str(p) for p in sorted(cache.iterdir())},
               "the builder's /tmp": str(environment.tmpdir),
               "the builder's code": str(environment.task_root),
               **{f"the builder's {p.name}": str(p) for entry in environment.python_path[1:]
                  for p in sorted(Path(entry).glob("uv*"))[:2]}}
    hostile = service.archive("hostile", "evil", extra={"evil/__init__.py": SURVIVOR.format(
        report=str(report), targets=targets)})

    attacked = build(hostile, "ops")
    log = (report / "log").read_text().splitlines()
    daemon = int(next(line for line in log if line.startswith("pid ")).split()[1])
    survived = alive(daemon)
    (service.work / "again").mkdir()
    again = build(same_content_new_bytes(victim, service.work / "again" / victim.name), "data")

    attempts = [line for line in log if ": " in line]
    assert "attempts done" in log, log  # the daemon ran (in the check function) before the answer
    assert len(attempts) == len(targets) + 2 and not [a for a in attempts if ": DONE" in a], log
    assert not survived  # ended with the check's environment, before the next build
    assert not list(cache.rglob("poison"))
    assert clean["status"] == "published" and again["layer_name"] == clean["layer_name"]
    assert again["content_hash"] == clean["content_hash"]  # byte-identical to the clean build
    assert again["status"] == "reused", again  # same content as the latest: no new version
    record("survivor: team ops's import forks a setsid daemon (check function)",
           f"survived: {len(attempts)} attempts all denied ({'; '.join(attempts)}); the daemon "
           f"was gone before the next build; team data's next layer has the clean build's "
           f"content hash (the upload published {attacked['status']})")
