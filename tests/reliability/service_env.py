"""The builder Lambda, run in-process against LocalAws (moto over HTTP on 127.0.0.1).

`builder` (a fixture) provisions what template.yaml declares into moto under a stack name and a
layer-name prefix of its own, sets the builder's environment exactly as the template would (plus
CACHE_DIR), and loads a fresh copy of builder_function/app.py, the real handler, as a new
container would. `Builder.deliver(event)` invokes it with a Lambda context whose remaining time
the test chooses.

moto's backends are global to the process and shared with other tests' servers and `mock_aws`,
so nothing here resets them: every test gets its own stack (buckets, table, functions,
parameters) and its own layer names, and leaves the others' alone.

Test modules import the fixtures (pytest finds them among the module's names):

    from tests.reliability.service_env import (  # noqa: F401 (fixtures)
        builder_cache_fixture, builder_fixture, make_builder_fixture, reliability_aws_fixture)

and ask for them as `builder` (a stack and a loaded builder), `make_builder` (the same, with
another dependency cache), `builder_cache` and `reliability_aws`.

Two things make moto behave like AWS where our code relies on it, and speed up the set-up:
- moto applies a DynamoDB conditional write as "check, then write" with no lock, so two threads
  can both pass the same condition. AWS applies each conditional write atomically; the
  idempotency record and the order book rely on that. `_atomic_dynamodb` serialises moto's
  DynamoDB writes (the check and the write stay moto's own).
- Every boto3 session parses the service models again (about 1 s for the builder's five
  clients). The test clients share one session, and each loaded app shares one botocore
  loader (read-only model data); the clients themselves are new for every app.
"""

from __future__ import annotations

import errno
import importlib.util
import io
import json
import os
import shutil
import tarfile
import threading
import time
import uuid
import zipfile
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import count
from pathlib import Path
from types import ModuleType
from typing import Any

import boto3
import boto3.session
import botocore.loaders
import botocore.session
import pytest

from layer_builder.sandbox_local import LocalSandbox

from tests.reliability.awsfaults import FaultInjector, compressed_backoff
from tools.cfn import ROOT
from tools.demo import zip_project
from tools.local_aws import LocalAws
from tools.stack import LocalStack, provision

APP = ROOT / "builder_function" / "app.py"
MIXED = ROOT / "tests" / "fixtures" / "projects" / "mixed"
EMR_LAUNCHER = ROOT / "examples" / "emr-launcher"
#: Lambda's own timeout for the builder (template: 900 s).
FULL_BUDGET_MS = 900_000



def json_reports(s3: Any, bucket: str) -> list[dict]:
    """Every JSON report in the artifact bucket, by key (the HTML report beside each is skipped)."""
    found = s3.list_objects_v2(Bucket=bucket, Prefix="reports/").get("Contents", [])
    return [json.loads(s3.get_object(Bucket=bucket, Key=item["Key"])["Body"].read())
            for item in sorted(found, key=lambda i: i["Key"]) if item["Key"].endswith(".json")]

class _OneSessionAws(LocalAws):
    """LocalAws whose test clients share one boto3 session (parsed service models)."""

    _shared: boto3.session.Session | None = None

    def session(self) -> boto3.session.Session:
        if self._shared is None:
            self._shared = super().session()
        return self._shared


_LOADER = botocore.loaders.create_loader()
_SERVER: dict[str, LocalAws] = {}
_apps = count()


@contextmanager
def _shared_models() -> Iterator[None]:
    """boto3.session.Session() (as the app calls it) reuses the already parsed service models."""
    real = boto3.session.Session

    def session(*args: Any, **kwargs: Any) -> boto3.session.Session:
        if kwargs.get("botocore_session") is None:
            core = botocore.session.get_session()
            core.register_component("data_loader", _LOADER)
            kwargs["botocore_session"] = core
        return real(*args, **kwargs)

    boto3.session.Session = session  # type: ignore[misc]
    try:
        yield
    finally:
        boto3.session.Session = real  # type: ignore[misc]


def load_builder_app() -> ModuleType:
    """A fresh module from builder_function/app.py: a cold start, reading os.environ now."""
    spec = importlib.util.spec_from_file_location(f"builder_app_{next(_apps)}", APP)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    with _shared_models():
        spec.loader.exec_module(module)
    return module


@contextmanager
def _atomic_dynamodb() -> Iterator[None]:
    from moto.dynamodb.models import DynamoDBBackend

    lock = threading.RLock()
    originals = {name: getattr(DynamoDBBackend, name)
                 for name in ("put_item", "update_item", "delete_item", "get_item")}

    def serialised(method: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            with lock:
                return method(*args, **kwargs)
        return call

    for name, method in originals.items():
        setattr(DynamoDBBackend, name, serialised(method))
    try:
        yield
    finally:
        for name, method in originals.items():
            setattr(DynamoDBBackend, name, method)


@pytest.fixture(scope="session", name="reliability_aws")
def reliability_aws_fixture(request: pytest.FixtureRequest) -> LocalAws:
    """One moto server per test process, shared by every module that imports this fixture."""
    if "aws" not in _SERVER:
        atomic = _atomic_dynamodb()
        atomic.__enter__()
        aws = _OneSessionAws().start()
        _SERVER["aws"] = aws

        def stop() -> None:
            _SERVER.pop("aws", None)
            aws.stop()
            atomic.__exit__(None, None, None)

        request.addfinalizer(stop)
    return _SERVER["aws"]


@pytest.fixture(scope="session", name="builder_cache")
def builder_cache_fixture(tmp_path_factory: pytest.TempPathFactory,
                          make_cache_dir: Callable[[Path], Path]) -> Path:
    """The builder's CACHE_DIR for the whole session: dependencies are installed once."""
    return make_cache_dir(tmp_path_factory.mktemp("builder") / "cache")


@dataclass
class FakeContext:
    """The parts of Lambda's context the handler and Powertools read."""

    remaining_ms: int = FULL_BUDGET_MS
    function_name: str = "layer-builder-builder"
    memory_limit_in_mb: int = 3008
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    started: float = field(default_factory=time.monotonic)

    @property
    def invoked_function_arn(self) -> str:
        return f"arn:aws:lambda:us-east-1:123456789012:function:{self.function_name}"

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int(self.remaining_ms - (time.monotonic() - self.started) * 1000))


@dataclass
class Builder:
    """The builder Lambda of one test's stack, loaded in this process, and what AWS holds."""

    aws: LocalAws
    stack: LocalStack
    app: ModuleType
    cache_dir: Path
    work: Path
    #: The stack's TEAMS (as the builder reads them); uploads go to the first team by default.
    teams: list[dict[str, Any]]
    _projects: Iterator[int] = field(default_factory=count)

    @property
    def team(self) -> str:
        return self.teams[0]["name"]

    @property
    def stack_prefix(self) -> str:
        """LAYER_NAME_PREFIX: every team's layer prefix starts with it."""
        return self.app.settings.layer_name_prefix

    @property
    def prefix(self) -> str:
        """The first team's layer prefix: every layer it builds is named prefix + name."""
        return self.teams[0]["layer_prefix"]

    def layer(self, name: str = "mixed", team: str | None = None) -> str:
        prefix = next(t["layer_prefix"] for t in self.teams if t["name"] == (team or self.team))
        return prefix + name

    def key(self, archive: Path | str, team: str | None = None) -> str:
        """Where a team uploads: incoming/<team>/<file>."""
        return f"incoming/{team or self.team}/{getattr(archive, 'name', archive)}"

    # -- the function ---------------------------------------------------------------------
    @property
    def consumer(self) -> str:
        return self.stack.name("EmrTriggerFunction")

    @property
    def function_name(self) -> str:
        return self.stack.name("BuilderFunction")

    def deliver(self, event: dict, remaining_ms: int = FULL_BUDGET_MS) -> dict:
        """One invocation, as Lambda makes it; raises what the handler raises."""
        return self.app.handler(event, FakeContext(remaining_ms, function_name=self.function_name))

    def attempt(self, event: dict, remaining_ms: int = FULL_BUDGET_MS) -> dict | Exception:
        try:
            return self.deliver(event, remaining_ms)
        except Exception as exc:  # what Lambda would see as a function error
            return exc

    def clients(self) -> list[Any]:
        """Every boto3 client the loaded builder uses (the idempotency store shares dynamodb)."""
        c = self.app.clients
        assert self.app.persistence.client is c.dynamodb
        return c.all()

    @contextmanager
    def faults(self) -> Iterator[FaultInjector]:
        """A fault injector on the builder's clients, with botocore's backoff recorded/shortened."""
        with FaultInjector() as injector, compressed_backoff(injector):
            injector.attach(*self.clients())
            yield injector

    # -- uploads ----------------------------------------------------------------------------
    def project(self, marker: str, source: Path = MIXED,
                broken: dict[str, str] | None = None) -> Path:
        """A copy of a fixture project whose own code carries `marker` (so its layer differs).

        `broken` overwrites files (relative path → text) to make a bad project.
        """
        where = self.work / f"p{next(self._projects)}"
        project = Path(shutil.copytree(source, where / source.name,
                                       ignore=shutil.ignore_patterns(".venv", "__pycache__")))
        (project / "build_marker.py").write_text(f"MARKER = {marker!r}\n", encoding="utf-8")
        for relative, text in (broken or {}).items():
            (project / relative).write_text(text, encoding="utf-8")
        return project

    def archive(self, marker: str, filename: str = "mixed-1.0.0.zip", source: Path = MIXED,
                broken: dict[str, str] | None = None) -> Path:
        """A .zip / .tar.gz of `project(marker)` named `filename` (the layer is named after it)."""
        project = self.project(marker, source, broken)
        dest = project.parent / filename
        if filename.endswith(".zip"):
            return zip_project(project, dest)
        with tarfile.open(dest, "w:gz") as tf:
            tf.add(project, arcname=project.name,
                   filter=lambda info: None if "__pycache__" in info.name else info)
        return dest

    def upload(self, archive: Path, key: str | None = None, template: str = "s3-put.json",
               team: str | None = None) -> dict:
        """Put the archive under incoming/<team>/ and return the S3 event S3 would send."""
        key = key or self.key(archive, team)
        s3 = self.aws.client("s3")
        body = archive.read_bytes()
        put = s3.put_object(Bucket=self.stack.name("SourceBucket"), Key=key, Body=body)
        # S3's sequencer grows per key; a nanosecond clock stands in for it (moto has none).
        sequencer = f"{time.time_ns():020X}"
        return self.stack.s3_event(key, put["VersionId"], len(body), put["ETag"].strip('"'),
                                   sequencer, template=template)

    # -- what AWS holds now -------------------------------------------------------------------
    def versions(self, layer_name: str) -> list[int]:
        lam = self.aws.client("lambda")
        try:
            found = lam.list_layer_versions(LayerName=layer_name)["LayerVersions"]
        except lam.exceptions.ResourceNotFoundException:
            return []
        return sorted(v["Version"] for v in found)

    def layers_of(self, function: str | None = None) -> list[str]:
        lam = self.aws.client("lambda")
        config = lam.get_function_configuration(FunctionName=function or self.consumer)
        return [layer["Arn"] for layer in config.get("Layers", [])]

    def pointer(self, layer_name: str) -> str | None:
        ssm = self.aws.client("ssm")
        prefix = self.stack.environment("BuilderFunction")["POINTER_PARAMETER_PREFIX"].rstrip("/")
        try:
            return ssm.get_parameter(Name=f"{prefix}/{layer_name}")["Parameter"]["Value"]
        except ssm.exceptions.ParameterNotFound:
            return None

    def reports(self) -> list[dict]:
        return json_reports(self.aws.client("s3"), self.stack.name("ArtifactBucket"))

    def report(self, key: str) -> dict:
        s3 = self.aws.client("s3")
        body = s3.get_object(Bucket=self.stack.name("ArtifactBucket"), Key=key)["Body"].read()
        return json.loads(body)

    def table_items(self) -> list[dict]:
        ddb = self.aws.client("dynamodb")
        return ddb.scan(TableName=self.app.settings.state_table, ConsistentRead=True)["Items"]

    def idempotency_records(self) -> list[dict]:
        """Powertools' records (the table also holds the order book and the build memo)."""
        return [item for item in self.table_items() if "status" in item]

    def publish_other_layer(self, name: str) -> str:
        """A layer someone else owns, for the consumer to already use."""
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as zf:
            zf.writestr(f"python/{name.replace('-', '_')}.py", "X = 1\n")
        lam = self.aws.client("lambda")
        return lam.publish_layer_version(LayerName=name, Content={"ZipFile": buffer.getvalue()},
                                         CompatibleRuntimes=["python3.13"])["LayerVersionArn"]

    def create_function(self, name: str, runtime: str = "python3.13", arch: str = "x86_64",
                        layers: list[str] | None = None) -> str:
        """Another consumer function (moto stores it; nothing runs it)."""
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as zf:
            zf.writestr("app.py", "def handler(event, context):\n    return event\n")
        lam = self.aws.client("lambda")
        role = lam.get_function_configuration(FunctionName=self.consumer)["Role"]
        lam.create_function(FunctionName=name, Runtime=runtime, Architectures=[arch], Role=role,
                            Handler="app.handler", Code={"ZipFile": buffer.getvalue()},
                            Layers=layers or [])
        return name

    def set_layers(self, layers: list[str], function: str | None = None) -> None:
        lam = self.aws.client("lambda")
        lam.update_function_configuration(FunctionName=function or self.consumer, Layers=layers)


def temp_entries(root: Path, exclude: Path | None = None) -> list[str]:
    """Every file and directory under root, except `exclude` and what it holds."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if exclude is None or Path(dirpath, d) != exclude]
        found += [os.path.join(dirpath, name) for name in dirnames + filenames]
    return sorted(found)


def fd_targets() -> dict[int, str]:
    """This process's open descriptors and what each is (`anon_inode:[eventpoll]`, a path…)."""
    targets = {}
    for fd in os.listdir("/proc/self/fd"):
        try:
            targets[int(fd)] = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:  # the descriptor listdir itself used, closed by now
            continue
    return targets


def open_fds() -> Counter[str]:
    """This process's open descriptors by kind: socket, pipe, anon_inode or file."""
    kinds: Counter[str] = Counter()
    for target in fd_targets().values():
        kind = target.split(":", 1)[0]
        kinds[kind if kind in ("socket", "pipe", "anon_inode") else "file"] += 1
    return kinds


def child_processes() -> list[int]:
    """Processes whose parent is this one (uv, compileall, import checks must all be gone)."""
    me, found = os.getpid(), []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == me:
                found.append(int(entry))
    return found


def enospc() -> OSError:
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


BuilderFactory = Callable[..., Builder]


@pytest.fixture(name="make_builder")
def make_builder_fixture(reliability_aws: LocalAws, builder_cache: Path, tmp_path: Path,
                         monkeypatch: pytest.MonkeyPatch) -> BuilderFactory:
    """Provision a stack of its own, set the builder's environment, load a fresh builder.

    os.environ is restored after the test (monkeypatch).
    """

    def make(cache_dir: Path | None = None, teams: list[dict[str, Any]] | None = None,
             environment: dict[str, str] | None = None) -> Builder:
        """`teams`: TEAMS without the stack's prefix in layer_prefix (it is added); by default one
        team "data" with the stack's own prefix, the EMR trigger as consumer, subscribed to the
        layers these tests build."""
        unique = uuid.uuid4().hex[:8]
        prefix = f"t{unique}-"
        stack_name = f"lb-{unique}"
        consumer = f"{stack_name}-emr-trigger"
        teams = [{**team, "layer_prefix": prefix + team.get("layer_prefix", "")}
                 for team in teams or [{"name": "data", "consumers": [consumer], "subscribed_layers":
                                        ["mixed", "emr-launcher", "data-tools"]}]]
        stack = provision(reliability_aws, overrides={"LayerNamePrefix": prefix,
                                                      "Teams": json.dumps(teams)},
                          stack_name=stack_name)
        cache = cache_dir or builder_cache
        variables = stack.environment("BuilderFunction") | {
            "CACHE_DIR": str(cache), "LAYER_NAME_PREFIX": prefix, "TEAMS": json.dumps(teams),
            **(environment or {})}
        for name, value in variables.items():
            monkeypatch.setenv(name, value)
        work = tmp_path / "work"
        work.mkdir(exist_ok=True)
        app = load_builder_app()
        # moto cannot run the check functions: uploaded code runs in LocalSandbox's subprocesses
        # here (tests/integration/test_check_function.py and tests/e2e run the real one).
        app.adapters.sandbox = LocalSandbox()
        return Builder(reliability_aws, stack, app, cache, work, teams)

    return make


@pytest.fixture(name="builder")
def builder_fixture(make_builder: BuilderFactory) -> Builder:
    return make_builder()
