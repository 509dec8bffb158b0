"""The EMR trigger's handler, in-process against moto, with the emr-launcher example as layer."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import boto3
import pytest
from aws_lambda_powertools.utilities.idempotency.exceptions import IdempotencyValidationError
from botocore.stub import Stubber
from moto import mock_aws

ROOT = Path(__file__).resolve().parents[2]
FUNCTION_DIR = ROOT / "emr_function"
LAYER_SOURCE = ROOT / "examples" / "emr-launcher"  # what the built layer puts in /opt/python
EVENTS = ROOT / "events"
TABLE = "emr-trigger-idempotency"
# a refused event fails before it adds a metric; Powertools warns about the empty flush
pytestmark = pytest.mark.filterwarnings("ignore:No application metrics to publish:UserWarning")
ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_LAMBDA_FUNCTION_NAME": "stack-emr-trigger",  # else idempotency keys get a test prefix
    "IDEMPOTENCY_TABLE": TABLE,
    "EMR_SERVICE_ROLE": "stack-EmrServiceRole",
    "EMR_JOB_FLOW_ROLE": "stack-EmrInstanceProfile",
    "EMR_LOG_URI": "s3://stack-emr-logs-123456789012-us-east-1/",
    "JOB_SCRIPT_PREFIX": "s3://example-emr-code/jobs/",
    "POWERTOOLS_SERVICE_NAME": "emr-trigger",
    "POWERTOOLS_METRICS_NAMESPACE": "LayerBuilder",
    "POWERTOOLS_TRACE_DISABLED": "true",  # no X-Ray daemon here
    # EMR makes moto build an EC2 backend per region; skipping its AMI catalogue halves the time
    "MOTO_EC2_LOAD_DEFAULT_AMIS": "false",
}


class Context:
    function_name = "stack-emr-trigger"
    function_version = "$LATEST"
    memory_limit_in_mb = 256
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:stack-emr-trigger"
    aws_request_id = "52fdfc07-2182-154f-163f-5f0f9a621d72"

    @staticmethod
    def get_remaining_time_in_millis() -> int:
        return 60_000


def load_app(name: str) -> ModuleType:
    """emr_function/app.py under its own name: the builder's function has an app.py too."""
    spec = importlib.util.spec_from_file_location(name, FUNCTION_DIR / "app.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # as an import would: dataclasses and pydantic look the module up
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def event(name: str) -> dict:
    return json.loads((EVENTS / f"emr-{name}.json").read_text())


#: The tests' own clients share one session: each new one would load the API models again.
SESSION = boto3.session.Session()


def clusters(region: str) -> list[dict]:
    return SESSION.client("emr", region_name=region).list_clusters()["Clusters"]


@pytest.fixture(scope="module")
def app():
    """Imported once, as Lambda does on a cold start, with the layer's source on sys.path."""
    with pytest.MonkeyPatch.context() as mp:
        for name, value in ENV.items():
            mp.setenv(name, value)
        mp.delenv("AWS_PROFILE", raising=False)
        mp.syspath_prepend(str(LAYER_SOURCE))
        yield load_app("emr_trigger_app")
    sys.modules.pop("emr_trigger_app", None)


@pytest.fixture
def aws(app, monkeypatch):
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    with mock_aws():
        SESSION.client("dynamodb", region_name="us-east-1").create_table(
            TableName=TABLE,
            KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
        yield


def test_direct_invoke_starts_a_cluster_per_region(app, aws):
    result = app.handler(event("direct"), Context())

    assert result["dataset"] == "sales" and result["environment"] == "dev"
    assert sorted(result["clusters"]) == ["us-east-1", "us-west-2"]
    assert result["not_started"] == [] and result["error"] is None
    for region, cluster_id in result["clusters"].items():
        emr = SESSION.client("emr", region_name=region)
        cluster = emr.describe_cluster(ClusterId=cluster_id)["Cluster"]
        assert cluster["Name"] == "dev-sales-2026-11-27"
        # the roles and log bucket come from the function's environment
        assert cluster["ServiceRole"] == "stack-EmrServiceRole"
        assert cluster["Ec2InstanceAttributes"]["IamInstanceProfile"] == "stack-EmrInstanceProfile"
        assert cluster["LogUri"] == ENV["EMR_LOG_URI"] + "sales/2026-11-27/"
        assert {"Key": "Dataset", "Value": "sales"} in cluster["Tags"]
        steps = emr.list_steps(ClusterId=cluster_id)["Steps"]
        assert [s["Name"] for s in steps] == ["Load sales for 2026-11-27"]
        args = steps[0]["Config"]["Args"]
        assert "s3://example-emr-code/jobs/load_dataset.py" in args
        assert args[-2:] == ["--region", region]


def test_scheduled_event_uses_the_detail(app, aws):
    result = app.handler(event("scheduled"), Context())

    assert result["environment"] == "prod"
    assert sorted(result["clusters"]) == ["eu-west-1", "us-east-1"]
    for region, cluster_id in result["clusters"].items():
        assert [c["Id"] for c in clusters(region)] == [cluster_id]
        cluster = SESSION.client("emr", region_name=region).describe_cluster(ClusterId=cluster_id)[
            "Cluster"
        ]
        assert cluster["Name"] == "prod-sales-2026-11-27"


def test_a_repeated_event_starts_no_second_cluster(app, aws, capsys):
    first = app.handler(event("direct"), Context())
    again = app.handler(event("direct"), Context())
    reordered = event("direct")
    reordered["regions"].reverse()
    third = app.handler(reordered, Context())

    assert first == again == third
    for region, cluster_id in first["clusters"].items():
        assert [c["Id"] for c in clusters(region)] == [cluster_id]
    started = [
        line["ClustersStarted"]
        for line in map(json.loads, filter(None, capsys.readouterr().out.splitlines()))
        if "ClustersStarted" in line
    ]
    assert started == [[2.0]]  # only the first invocation launched anything


def test_same_key_with_other_variables_is_refused(app, aws):
    app.handler(event("direct"), Context())
    changed = event("direct")
    changed["variables"]["JOB_SCRIPT"] = "s3://example-emr-code/jobs/other.py"

    with pytest.raises(IdempotencyValidationError):
        app.handler(changed, Context())
    assert len(clusters("us-east-1")) == 1


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda e: e.pop("dataset"), "dataset: Field required"),
        (lambda e: e.update(regions=[]), "regions: List should have at least 1 item"),
        (
            lambda e: e.update(regions=["us-east-1", "us-east-1"]),
            "regions: Value error, list each region once",
        ),
        (lambda e: e.update(regions=["Mars"]), "regions.0: String should match pattern"),
        (lambda e: e.update(environment="qa"), "environment: Input should be 'dev' or 'prod'"),
        (lambda e: e.update(run_date=20261127), "run_date: Value error, use an ISO date"),
        (lambda e: e.update(run_date="2026-13-40"), "run_date: Input should be a valid date"),
        (
            lambda e: e["variables"].update(EMR_SERVICE_ROLE="admin"),
            "EMR_SERVICE_ROLE cannot be set in variables",
        ),
        (lambda e: e.update(surprise=1), "surprise: Extra inputs are not permitted"),
    ],
)
def test_invalid_event_is_refused_clearly(app, aws, change, message):
    bad = event("direct")
    change(bad)

    with pytest.raises(app.InvalidTriggerEvent) as caught:
        app.handler(bad, Context())

    assert message in str(caught.value)
    assert clusters("us-east-1") == []
    assert SESSION.client("dynamodb", region_name="us-east-1").scan(TableName=TABLE)["Count"] == 0


def test_invalid_scheduled_detail_names_the_nested_field(app, aws):
    bad = event("scheduled")
    del bad["detail"]["dataset"]

    with pytest.raises(app.InvalidTriggerEvent, match="detail.dataset: Field required"):
        app.handler(bad, Context())


def test_schedule_without_run_date_loads_the_day_it_fired(app, aws):
    nightly = event("scheduled")
    del nightly["detail"]["run_date"]

    result = app.handler(nightly, Context())

    assert result["run_date"] == nightly["time"][:10]
    assert set(result["clusters"]) == set(nightly["detail"]["regions"])


def test_unknown_placeholder_starts_nothing_and_can_be_retried(app, aws):
    bad = event("direct")
    bad["variables"] = {}

    with pytest.raises(
        Exception, match=r"\$\{JOB_SCRIPT\} at Emr.Steps\[0\].Args\[3\] in default.yaml"
    ):
        app.handler(bad, Context())
    assert clusters("us-east-1") == [] and clusters("us-west-2") == []
    # the failed run left no record, so the corrected event runs
    assert app.handler(event("direct"), Context())["clusters"]


def test_partial_failure_is_kept_so_a_retry_starts_nothing_twice(app, aws, monkeypatch):
    real_client = boto3.session.Session.client

    def client(self, service_name, *args, region_name=None, **kwargs):
        made = real_client(self, service_name, *args, region_name=region_name, **kwargs)
        if service_name == "emr" and region_name == "us-west-2":
            stubber = Stubber(made)
            stubber.add_client_error(
                "run_job_flow", "ValidationException", "Subnet is in another VPC"
            )
            stubber.activate()
        return made

    with monkeypatch.context() as patch:
        patch.setattr(boto3.session.Session, "client", client)
        first = app.handler(event("direct"), Context())
    retry = app.handler(event("direct"), Context())

    assert list(first["clusters"]) == ["us-east-1"]
    assert first["not_started"] == ["us-west-2"]
    assert "Subnet is in another VPC" in first["error"]
    assert retry == first
    assert len(clusters("us-east-1")) == 1 and clusters("us-west-2") == []


@pytest.mark.parametrize(
    "script",
    [
        "s3://other-bucket/jobs/load_dataset.py",
        "s3://example-emr-code/jobs-other/load_dataset.py",  # a sibling of the prefix
        "s3://example-emr-code/jobs/../admin/steal.py",  # Hadoop would normalise the ".."
        "s3://example-emr-code/jobs/./load_dataset.py",
        "s3://example-emr-code/jobs//load_dataset.py",
        "s3://example-emr-code/jobs/",
        "s3://example-emr-code/jobs/load dataset.py --conf x",
        "https://example-emr-code/jobs/load_dataset.py",
        "s3://example-emr-code/JOBS/load_dataset.py",
    ],
)
def test_job_script_outside_the_configured_prefix_is_refused(app, aws, script):
    bad = event("direct")
    bad["variables"]["JOB_SCRIPT"] = script

    with pytest.raises(app.InvalidTriggerEvent) as caught:
        app.handler(bad, Context())

    message = str(caught.value)
    assert repr(script) in message
    assert "s3://example-emr-code/jobs/" in message and "JobScriptPrefix" in message
    assert clusters("us-east-1") == []
    assert SESSION.client("dynamodb", region_name="us-east-1").scan(TableName=TABLE)["Count"] == 0


def test_job_script_in_a_folder_under_the_prefix_runs(app, aws):
    nested = event("direct")
    nested["variables"]["JOB_SCRIPT"] = "s3://example-emr-code/jobs/daily/load.v2.py"

    result = app.handler(nested, Context())

    emr = SESSION.client("emr", region_name="us-east-1")
    [step] = emr.list_steps(ClusterId=result["clusters"]["us-east-1"])["Steps"]
    assert "s3://example-emr-code/jobs/daily/load.v2.py" in step["Config"]["Args"]


@pytest.mark.parametrize("prefix", ["s3://example-emr-code/jobs", "example-emr-code/jobs/", "s3://"])
def test_job_script_prefix_must_be_an_s3_folder(monkeypatch, prefix):
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("JOB_SCRIPT_PREFIX", prefix)
    monkeypatch.syspath_prepend(str(LAYER_SOURCE))

    with pytest.raises(RuntimeError, match="JOB_SCRIPT_PREFIX must be an s3://bucket/prefix/ URI"):
        load_app("emr_trigger_app_bad_prefix")


def test_missing_layer_is_named(monkeypatch):
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    # whatever earlier tests imported, emrlauncher is now not importable, as without the layer
    for name in [m for m in sys.modules if m == "emrlauncher" or m.startswith("emrlauncher.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "emrlauncher", None)

    with pytest.raises(ImportError, match="attach the emr-launcher layer") as caught:
        load_app("emr_trigger_app_without_layer")
    assert type(caught.value).__name__ == "LayerMissingError"


def test_missing_settings_fail_at_import(monkeypatch):
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("IDEMPOTENCY_TABLE")
    monkeypatch.setenv("EMR_JOB_FLOW_ROLE", " ")
    monkeypatch.syspath_prepend(str(LAYER_SOURCE))

    with pytest.raises(
        RuntimeError, match="Missing environment variable.*IDEMPOTENCY_TABLE, EMR_JOB_FLOW_ROLE"
    ):
        load_app("emr_trigger_app_without_settings")


def test_function_ships_config_for_every_environment_and_no_library(app):
    environments = app.TriggerCriteria.model_fields["environment"].annotation.__args__
    for name in ("default.yaml", "configurations.json", *(f"{env}.yaml" for env in environments)):
        assert (FUNCTION_DIR / "config" / name).is_file(), name
    # the library and its dependency come from the layer only
    assert not list(FUNCTION_DIR.rglob("emrlauncher")) and not list(FUNCTION_DIR.rglob("yaml"))
    # Powertools with its parser and tracer extras, boto3 and botocore locked together (see
    # tests/unit/test_requirements.py), and nothing the layer provides
    lines = (FUNCTION_DIR / "requirements.txt").read_text().lower().splitlines()
    pinned = {line.split("==")[0] for line in lines if "==" in line and not line.startswith(" ")}
    assert {"aws-lambda-powertools", "pydantic", "aws-xray-sdk", "boto3", "botocore"} <= pinned
    assert not pinned & {"pyyaml", "emrlauncher", "emr-launcher"}
