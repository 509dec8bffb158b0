"""template.yaml and samconfig.toml: lint, least privilege, storage safety and the contract.

The template is read with tools.cfn, the reader the local stack uses: a YAML loader that keeps
CloudFormation short tags, and a resolver that evaluates intrinsics for given parameter values.
IAM checks run on resolved policies, for the defaults and for a set that takes every Fn::If.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote_plus

import pytest
from pip._internal.models.index import PyPI  # the public index's hosts, so this file names none

from tools.cfn import ROOT, TEMPLATE, Resolver, load_template

SAMCONFIG = ROOT / "samconfig.toml"
ACCOUNT = "123456789012"  # the Resolver's account, region us-east-1, stack layer-builder
EVERYTHING = {
    "LayerNamePrefix": "acme-",
    "ConsumerFunctionNames": "orders,billing,c4,c5,c6",
    "EmrServiceRoleName": "svc-role",
    "EmrJobFlowRoleName": "jobflow-role",
    "EmrLauncherLayerArn": f"arn:aws:lambda:us-east-1:{ACCOUNT}:layer:emr-launcher:3",
}
PARAMETER_SETS = pytest.mark.parametrize("overrides", [{}, EVERYTHING], ids=["defaults", "all-set"])
BUILDER_ENV = {
    "AWS_ENDPOINT_URL",  # empty; declared so `sam local invoke --env-vars` can set it (UX)
    "ARTIFACT_BUCKET",
    "SOURCE_PREFIX",
    "LAYER_NAME_PREFIX",
    "CONSUMER_FUNCTIONS",
    "CONSUMER_LAYERS",
    "PACKAGE_INDEX_URL",
    "ALLOW_SDIST",
    "TARGET_RUNTIME",
    "TARGET_ARCH",
    "IDEMPOTENCY_TABLE",
    "POINTER_PARAMETER_PREFIX",
    "EVENT_BUS_NAME",
    "POWERTOOLS_SERVICE_NAME",
    "POWERTOOLS_METRICS_NAMESPACE",
    "POWERTOOLS_LOG_LEVEL",
}
UPLOAD_RULES = {("incoming/", ".zip"), ("incoming/", ".tar.gz"), ("incoming/", ".tgz")}
GUARDED_SERVICES = ("lambda", "s3", "iam")


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return load_template(TEMPLATE)


@pytest.fixture(scope="module")
def resources(template: dict[str, Any]) -> dict[str, Any]:
    return template["Resources"]


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


# ---------------------------------------------------------------- IAM helpers


def policy_documents(resources: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every policy document: SAM function policies, roles, policies and resource policies."""
    for name, resource in resources.items():
        props = resource.get("Properties", {})
        kind = resource["Type"]
        if kind == "AWS::Serverless::Function":
            for policy in props.get("Policies", []):
                yield name, policy
        elif kind == "AWS::IAM::Role":
            for policy in props.get("Policies", []):
                yield name, policy["PolicyDocument"]
        elif "PolicyDocument" in props:
            yield name, props["PolicyDocument"]


def allow_statements(
    template: dict[str, Any], overrides: dict[str, str]
) -> list[tuple[str, dict[str, Any]]]:
    """(owner, statement) for every Allow statement, resolved for the given parameters."""
    resolver = Resolver(template, overrides=overrides)
    found = []
    for name, document in policy_documents(template["Resources"]):
        for statement in as_list(resolver.resolve(document)["Statement"]):
            if statement["Effect"] == "Allow":
                found.append((name, statement))
    return found


def resource_part(arn: str) -> str:
    """What follows arn:partition:service:region:account: ("" if that is not an ARN)."""
    parts = arn.split(":", 5)
    return parts[5] if arn.startswith("arn:") and len(parts) == 6 else ""


def condition_values(statement: dict[str, Any], key: str) -> dict[str, list[Any]]:
    """{operator: values} for one condition key (keys compare case-insensitively)."""
    found = {}
    for operator, block in statement.get("Condition", {}).items():
        for name, values in block.items():
            if name.lower() == key.lower():
                found[operator] = as_list(values)
    return found


def actions(statement: dict[str, Any]) -> list[str]:
    return as_list(statement["Action"])


# ---------------------------------------------------------------- lint


def test_cfn_lint_passes():
    cfn_lint = Path(sys.executable).parent / "cfn-lint"
    result = subprocess.run(
        [str(cfn_lint), str(TEMPLATE)], capture_output=True, text=True, timeout=180, check=False
    )
    assert result.returncode == 0, f"cfn-lint findings:\n{result.stdout}{result.stderr}"


# ---------------------------------------------------------------- least privilege


def test_function_policies_are_inline_statements(resources):
    # Managed policies and SAM policy templates could not be checked below, so none are allowed.
    for name, resource in resources.items():
        if resource["Type"] == "AWS::Serverless::Function":
            for policy in resource["Properties"].get("Policies", []):
                assert isinstance(policy, dict) and "Statement" in policy, (
                    f"{name}: Policies entry {policy!r} is not an inline policy document"
                )


@PARAMETER_SETS
def test_guarded_actions_have_no_wildcard(template, overrides):
    checked = 0
    for name, statement in allow_statements(template, overrides):
        guarded = [a for a in actions(statement) if a.split(":")[0] in GUARDED_SERVICES or a == "*"]
        if not guarded:
            continue
        for action in guarded:
            assert "*" not in action, f"{name} {statement.get('Sid')}: wildcard action {action}"
        for arn in as_list(statement["Resource"]):
            checked += 1
            part = resource_part(arn)
            assert part and part != "*" and not part.startswith("*"), (
                f"{name} {statement.get('Sid')}: {guarded} on {arn!r} is a wildcard resource"
            )
    assert checked > 10, "expected the functions' lambda/s3/iam statements to be found"


def test_triggered_function_policies_never_reference_their_bucket(resources):
    # Naming the triggering bucket (Ref, GetAtt, ${Bucket.Arn}) in the function's own policies
    # is SAM's circular dependency: bucket -> notification -> function -> role -> bucket.
    checked = 0
    for name, resource in resources.items():
        if resource["Type"] != "AWS::Serverless::Function":
            continue
        policies = json.dumps(resource["Properties"].get("Policies", []))
        for event in resource["Properties"].get("Events", {}).values():
            if event["Type"] == "S3":
                bucket = event["Properties"]["Bucket"]["Ref"]
                checked += 1
                assert not re.search(rf'"{bucket}"|\$\{{{bucket}[.}}]', policies), (
                    f"{name}'s policies reference {bucket}; build its ARN with !Sub from the name"
                )
    assert checked


@PARAMETER_SETS
def test_builder_cannot_write_to_the_source_bucket(template, overrides):
    # Anything it wrote under incoming/ would start another build: the builder must only read there.
    source = Resolver(template, overrides=overrides).arn("SourceBucket")
    for name, statement in allow_statements(template, overrides):
        writes = [
            a
            for a in actions(statement)
            if a.startswith("s3:") and not a.startswith(("s3:Get", "s3:List"))
        ]
        if name == "BuilderFunction" and writes:
            for arn in as_list(statement["Resource"]):
                assert not arn.startswith(source), f"{statement.get('Sid')}: {writes} on {arn}"


def test_pass_role_only_for_emr_roles_and_services(template):
    role = f"arn:aws:iam::{ACCOUNT}:role/"
    expected = {
        role + EVERYTHING["EmrServiceRoleName"]: "elasticmapreduce.amazonaws.com",
        role + EVERYTHING["EmrJobFlowRoleName"]: "ec2.amazonaws.com",
    }
    seen = set()
    for name, statement in allow_statements(template, EVERYTHING):
        if "iam:PassRole" not in actions(statement):
            continue
        services = condition_values(statement, "iam:PassedToService")
        assert services and set(services) <= {"StringEquals", "StringLike"}, (
            f"{name} {statement.get('Sid')}: iam:PassRole without an iam:PassedToService condition"
        )
        allowed = [value for values in services.values() for value in values]
        for arn in as_list(statement["Resource"]):
            assert arn in expected, f"{name}: iam:PassRole on {arn!r}"
            assert all(value.startswith(expected[arn]) for value in allowed), (
                f"{arn} may be passed to {allowed}, expected only {expected[arn]}"
            )
            seen.add(arn)
    assert seen == set(expected)


def test_consumers_are_repointed_only_to_this_accounts_layers(template):
    repoint = [
        statement
        for _, statement in allow_statements(template, EVERYTHING)
        if "lambda:UpdateFunctionConfiguration" in actions(statement)
    ]
    assert repoint, "the builder needs lambda:UpdateFunctionConfiguration on its consumers"
    for statement in repoint:
        layers = condition_values(statement, "lambda:Layer")
        assert layers and all(op.startswith("ForAllValues:") for op in layers), (
            f"{statement.get('Sid')}: no ForAllValues condition on lambda:Layer"
        )
        patterns = [pattern for values in layers.values() for pattern in values]
        own = f"arn:aws:lambda:us-east-1:{ACCOUNT}:layer:"
        assert all(p.startswith(own) for p in patterns), patterns
        assert own + EVERYTHING["LayerNamePrefix"] + "*:*" in patterns


@PARAMETER_SETS
def test_consumer_functions_are_named_not_wildcarded(template, overrides):
    for _, statement in allow_statements(template, overrides):
        if not any(
            a.startswith(("lambda:GetFunction", "lambda:UpdateFunction"))
            for a in actions(statement)
        ):
            continue
        for arn in as_list(statement["Resource"]):
            assert re.fullmatch(r"function:[^*:]+", resource_part(arn)), (
                f"{statement.get('Sid')}: {arn}"
            )


@pytest.mark.parametrize(
    "names",
    [[], ["orders"], ["a", "b", "c", "d", "e"], ["a", "b", "c", "d", "e", "f"]],
    ids=["none", "one", "five", "six"],
)
def test_consumer_grants_follow_consumer_function_names(template, resources, names):
    resolver = Resolver(template, overrides={"ConsumerFunctionNames": ",".join(names)})
    builder = resources["BuilderFunction"]["Properties"]
    [repoint] = [
        s for s in builder["Policies"][0]["Statement"] if s.get("Sid") == "RepointConsumerLayers"
    ]
    prefix = f"arn:aws:lambda:us-east-1:{ACCOUNT}:function:"
    # IAM covers the EMR trigger plus at most five extra names (see ConsumerFunctionNames).
    assert resolver.resolve(repoint["Resource"]) == [
        prefix + "layer-builder-emr-trigger",
        *(prefix + name for name in names[:5]),
    ]
    env = resolver.function_environment("BuilderFunction")
    assert env["CONSUMER_FUNCTIONS"] == ",".join(["layer-builder-emr-trigger", *names])


# ---------------------------------------------------------------- storage


@pytest.mark.parametrize("bucket", ["SourceBucket", "ArtifactBucket"])
def test_bucket_is_private_encrypted_and_tls_only(template, resources, bucket):
    props = resources[bucket]["Properties"]
    assert props["PublicAccessBlockConfiguration"] == {
        "BlockPublicAcls": True,
        "BlockPublicPolicy": True,
        "IgnorePublicAcls": True,
        "RestrictPublicBuckets": True,
    }
    [rule] = props["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert rule["ServerSideEncryptionByDefault"]["SSEAlgorithm"] in {
        "AES256",
        "aws:kms",
        "aws:kms:dsse",
    }

    resolver = Resolver(template)
    policies = [
        resolver.resolve(r["Properties"]["PolicyDocument"])
        for r in resources.values()
        if r["Type"] == "AWS::S3::BucketPolicy" and r["Properties"]["Bucket"] == {"Ref": bucket}
    ]
    assert len(policies) == 1, f"{bucket} needs exactly one bucket policy"
    bucket_arn = resolver.arn(bucket)
    tls_only = [
        s
        for s in as_list(policies[0]["Statement"])
        if s["Effect"] == "Deny"
        and s["Principal"] in ("*", {"AWS": "*"})
        and "s3:*" in actions(s)
        and condition_values(s, "aws:SecureTransport").get("Bool") in (["false"], [False])
        and set(as_list(s["Resource"])) >= {bucket_arn, bucket_arn + "/*"}
    ]
    assert tls_only, f"{bucket}: no Deny of s3:* on bucket and objects without aws:SecureTransport"


def test_source_bucket_is_versioned(resources):
    versioning = resources["SourceBucket"]["Properties"]["VersioningConfiguration"]
    assert versioning == {"Status": "Enabled"}


def test_artifact_lifecycle_expires_zips_and_cache_and_keeps_reports_longer(resources):
    rules = resources["ArtifactBucket"]["Properties"]["LifecycleConfiguration"]["Rules"]
    days = {
        r["Prefix"]: r["ExpirationInDays"]
        for r in rules
        if r["Status"] == "Enabled" and "Prefix" in r
    }
    assert {"layers/", "cache/", "reports/"} <= set(days)
    assert days["reports/"] > max(days["layers/"], days["cache/"])


def test_idempotency_table_matches_powertools_defaults(resources):
    props = resources["IdempotencyTable"]["Properties"]
    assert props["KeySchema"] == [{"AttributeName": "id", "KeyType": "HASH"}]
    assert props["AttributeDefinitions"] == [{"AttributeName": "id", "AttributeType": "S"}]
    assert props["TimeToLiveSpecification"] == {"AttributeName": "expiration", "Enabled": True}
    assert props["BillingMode"] == "PAY_PER_REQUEST"
    assert props["SSESpecification"]["SSEEnabled"] is True
    assert props["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"] is True


def test_layer_pointer_parameter(template, resources):
    props = resources["LayerPointerParameter"]["Properties"]
    assert (props["Type"], props["Value"]) == ("String", "none")
    name = Resolver(template).physical_name("LayerPointerParameter")
    assert name == "/layer-builder/layers/emr-launcher"
    prefixed = Resolver(template, overrides={"LayerNamePrefix": "acme-"})
    assert (
        prefixed.physical_name("LayerPointerParameter") == "/layer-builder/layers/acme-emr-launcher"
    )


# ---------------------------------------------------------------- events and async invocation


def upload_rules(resources: dict[str, Any]) -> set[tuple[str, str]]:
    found = set()
    for event in resources["BuilderFunction"]["Properties"]["Events"].values():
        assert event["Type"] == "S3"
        props = event["Properties"]
        assert props["Bucket"] == {"Ref": "SourceBucket"}
        assert as_list(props["Events"]) == ["s3:ObjectCreated:*"]
        rules = {r["Name"]: r["Value"] for r in props["Filter"]["S3Key"]["Rules"]}
        found.add((rules["prefix"], rules["suffix"]))
    return found


def test_uploads_under_incoming_trigger_the_builder(resources):
    assert upload_rules(resources) == UPLOAD_RULES
    env = resources["BuilderFunction"]["Properties"]["Environment"]["Variables"]
    assert {prefix for prefix, _ in UPLOAD_RULES} == {env["SOURCE_PREFIX"]}


def test_sample_s3_events_would_trigger_the_builder(template, resources):
    bucket = Resolver(template).physical_name("SourceBucket")
    rules = upload_rules(resources)
    samples = sorted((ROOT / "events").glob("s3-*.json"))
    assert samples
    for sample in samples:
        for record in json.loads(sample.read_text(encoding="utf-8"))["Records"]:
            assert record["s3"]["bucket"]["name"] == bucket, sample.name
            key = unquote_plus(record["s3"]["object"]["key"])
            assert any(key.startswith(p) and key.endswith(s) for p, s in rules), (
                f"{sample.name}: {key}"
            )


def test_failed_builds_are_bounded_and_kept(resources):
    config = resources["BuilderFunction"]["Properties"]["EventInvokeConfig"]
    assert 0 <= config["MaximumRetryAttempts"] <= 2
    assert 60 <= config["MaximumEventAgeInSeconds"] < 6 * 3600  # below Lambda's 6 h default
    assert config["DestinationConfig"]["OnFailure"] == {
        "Type": "SQS",
        "Destination": {"Fn::GetAtt": ["BuildFailureQueue", "Arn"]},
    }
    queue = resources["BuildFailureQueue"]["Properties"]
    assert queue.get("SqsManagedSseEnabled") is True or "KmsMasterKeyId" in queue
    assert queue["MessageRetentionPeriod"] >= 7 * 24 * 3600


def test_emr_schedule_is_optional_and_carries_criteria(resources):
    [event] = resources["EmrTriggerFunction"]["Properties"]["Events"].values()
    assert event["Type"] == "Schedule"
    assert event["Properties"]["State"] == "DISABLED"
    # the Input is a direct invoke's criteria, shaped like the EMR trigger's sample, without
    # run_date: each night loads the day it runs, once (idempotency on the date)
    direct = json.loads((ROOT / "events" / "emr-direct.json").read_text(encoding="utf-8"))
    assert set(json.loads(event["Properties"]["Input"])) == set(direct) - {"run_date"}


# ---------------------------------------------------------------- the contract


def test_builder_environment_is_exactly_the_contract(template, resources):
    raw = {
        **template["Globals"]["Function"]["Environment"]["Variables"],
        **resources["BuilderFunction"]["Properties"]["Environment"]["Variables"],
    }
    assert set(raw) == BUILDER_ENV
    assert raw["IDEMPOTENCY_TABLE"] == {"Ref": "IdempotencyTable"}
    resolver = Resolver(template, overrides={"LayerNamePrefix": "acme-", "Architecture": "arm64"})
    assert resolver.function_environment("BuilderFunction") == {
        "AWS_ENDPOINT_URL": "",
        "ARTIFACT_BUCKET": f"layer-builder-artifacts-{ACCOUNT}-us-east-1",
        "SOURCE_PREFIX": "incoming/",
        "LAYER_NAME_PREFIX": "acme-",
        "CONSUMER_FUNCTIONS": "layer-builder-emr-trigger",
        "CONSUMER_LAYERS": "emr-launcher",
        "PACKAGE_INDEX_URL": "",
        "ALLOW_SDIST": "",
        "TARGET_RUNTIME": "python3.13",
        "TARGET_ARCH": "arm64",
        "IDEMPOTENCY_TABLE": resolver.physical_name("IdempotencyTable"),
        "POINTER_PARAMETER_PREFIX": "/layer-builder/layers",
        "EVENT_BUS_NAME": "default",
        "POWERTOOLS_SERVICE_NAME": "layer-builder",
        "POWERTOOLS_METRICS_NAMESPACE": "LayerBuilder",
        "POWERTOOLS_LOG_LEVEL": "INFO",
    }


def test_emr_trigger_environment_follows_the_contract(template):
    resolver = Resolver(template)
    env = resolver.function_environment("EmrTriggerFunction")
    expected = {
        "IDEMPOTENCY_TABLE": resolver.physical_name("IdempotencyTable"),
        "EMR_SERVICE_ROLE": "EMR_DefaultRole",
        "EMR_JOB_FLOW_ROLE": "EMR_EC2_DefaultRole",
        "EMR_LOG_URI": f"s3://layer-builder-artifacts-{ACCOUNT}-us-east-1/emr-logs/",
        "POWERTOOLS_SERVICE_NAME": "emr-trigger",
        "POWERTOOLS_METRICS_NAMESPACE": "LayerBuilder",
    }
    assert expected.items() <= env.items(), env


@pytest.mark.parametrize(
    ("name", "code_uri", "function_name"),
    [
        ("BuilderFunction", "builder_function/", "layer-builder-builder"),
        ("EmrTriggerFunction", "emr_function/", "layer-builder-emr-trigger"),
    ],
)
def test_functions_follow_the_contract(template, name, code_uri, function_name):
    resolver = Resolver(template, overrides={"Architecture": "arm64"})
    assert resolver.function_property(name, "CodeUri") == code_uri
    assert resolver.function_property(name, "Runtime") == "python3.13"
    assert resolver.function_property(name, "Handler") == "app.handler"
    assert resolver.function_property(name, "Architectures") == ["arm64"]
    assert resolver.function_property(name, "Tracing") == "Active"
    assert resolver.physical_name(name) == function_name


def test_emr_trigger_layer_is_optional(template):
    arn = EVERYTHING["EmrLauncherLayerArn"]
    assert Resolver(template).function_property("EmrTriggerFunction", "Layers") == []
    with_layer = Resolver(template, overrides={"EmrLauncherLayerArn": arn})
    assert with_layer.function_property("EmrTriggerFunction", "Layers") == [arn]
    assert re.fullmatch(template["Parameters"]["EmrLauncherLayerArn"]["AllowedPattern"], arn)


def test_parameters_follow_the_contract(template):
    params = template["Parameters"]
    defaults = {name: spec.get("Default") for name, spec in params.items()}
    assert defaults == {
        "Architecture": "x86_64",
        "LayerNamePrefix": "",
        "ConsumerFunctionNames": "",
        "ConsumerLayerNames": "emr-launcher",
        "PackageIndexUrl": "",
        "AllowSdist": "",
        "EmrServiceRoleName": "EMR_DefaultRole",
        "EmrJobFlowRoleName": "EMR_EC2_DefaultRole",
        "EmrLauncherLayerArn": "",
    }
    assert set(params["Architecture"]["AllowedValues"]) == {"x86_64", "arm64"}
    assert params["ConsumerFunctionNames"]["Type"] == "CommaDelimitedList"
    assert params["PackageIndexUrl"]["NoEcho"] is True
    for name, spec in params.items():  # a pattern that refused its own default would block deploys
        if "AllowedPattern" in spec:
            assert re.fullmatch(spec["AllowedPattern"], spec["Default"]), name


def test_outputs_name_every_contract_resource(template):
    referenced = json.dumps(template["Outputs"])
    for name in (
        "SourceBucket",
        "ArtifactBucket",
        "BuilderFunction",
        "EmrTriggerFunction",
        "BuildFailureQueue",
        "IdempotencyTable",
        "LayerPointerParameter",
    ):
        assert f'"{name}"' in referenced, f"no output for {name}"


@pytest.mark.parametrize("path", [TEMPLATE, SAMCONFIG], ids=lambda p: p.name)
def test_no_public_package_index(path):
    text = path.read_text(encoding="utf-8").lower()
    for host in (PyPI.netloc, PyPI.file_storage_domain):
        assert host.lower() not in text, f"{path.name} names the public package index"


# ---------------------------------------------------------------- samconfig.toml


def test_samconfig_deploys_the_template_safely(template):
    config = tomllib.loads(SAMCONFIG.read_text(encoding="utf-8"))
    assert config["version"] == 0.1
    deploy = config["default"]["deploy"]["parameters"]
    assert deploy["stack_name"] == "layer-builder"
    assert deploy["resolve_s3"] is True and deploy["confirm_changeset"] is True
    assert deploy["capabilities"] in ("CAPABILITY_IAM", "CAPABILITY_NAMED_IAM")
    overrides = dict(re.findall(r'(\w+)="([^"]*)"', deploy["parameter_overrides"]))
    assert set(overrides) == {"Architecture", "LayerNamePrefix"}
    assert overrides["Architecture"] in template["Parameters"]["Architecture"]["AllowedValues"]
    prefix_pattern = template["Parameters"]["LayerNamePrefix"]["AllowedPattern"]
    assert re.fullmatch(prefix_pattern, overrides["LayerNamePrefix"])
    assert config["default"]["validate"]["parameters"]["lint"] is True
    build = config["default"]["build"]["parameters"]
    assert build["cached"] is True and build["parallel"] is True
