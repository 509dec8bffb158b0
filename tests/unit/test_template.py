"""template.yaml and samconfig.toml: lint, least privilege, storage safety and the contract."""

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
import yaml
from pip._internal.models.index import PyPI  # the public index's hosts, so this file names none

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "template.yaml"
SAMCONFIG = ROOT / "samconfig.toml"

# What CloudFormation would substitute for the sample stack in events/.
PSEUDO = {
    "AWS::Partition": "aws",
    "AWS::Region": "us-east-1",
    "AWS::AccountId": "123456789012",
    "AWS::StackName": "layer-builder",
}
BUILDER_ENV = {
    "ARTIFACT_BUCKET",
    "SOURCE_PREFIX",
    "LAYER_NAME_PREFIX",
    "CONSUMER_FUNCTIONS",
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


# ---------------------------------------------------------------- loading


class CfnLoader(yaml.SafeLoader):
    """SafeLoader that turns CloudFormation short tags (!Sub, !Ref ...) into their long form."""


def _construct_intrinsic(loader: CfnLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    value: Any
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    if suffix in ("Ref", "Condition"):
        return {suffix: value}
    if suffix == "GetAtt" and isinstance(value, str):
        value = value.split(".", 1)
    return {f"Fn::{suffix}": value}


CfnLoader.add_multi_constructor("!", _construct_intrinsic)


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return yaml.load(TEMPLATE.read_text(encoding="utf-8"), Loader=CfnLoader)


@pytest.fixture(scope="module")
def resources(template: dict[str, Any]) -> dict[str, Any]:
    return template["Resources"]


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


# ---------------------------------------------------------------- a small CloudFormation model

_NO_VALUE = object()


def evaluate(value: Any, params: dict[str, Any], conditions: dict[str, bool]) -> Any:
    """Resolve the intrinsics this template uses, for given parameter values."""

    def ev(v: Any) -> Any:
        return evaluate(v, params, conditions)

    if isinstance(value, list):
        return [item for item in map(ev, value) if item is not _NO_VALUE]
    if not isinstance(value, dict):
        return value
    if len(value) != 1:
        return {key: ev(v) for key, v in value.items()}
    ((fn, arg),) = value.items()
    names = {**PSEUDO, **params}
    match fn:
        case "Ref":
            return _NO_VALUE if arg == "AWS::NoValue" else names[arg]
        case "Fn::Sub":
            text, extra = (arg, {}) if isinstance(arg, str) else arg
            names |= {key: ev(v) for key, v in extra.items()}
            return re.sub(r"\$\{([^}!]+)\}", lambda m: names[m[1]], text)
        case "Fn::Join":
            return arg[0].join(ev(arg[1]))
        case "Fn::Split":
            return ev(arg[1]).split(arg[0])
        case "Fn::Select":
            return ev(arg[1])[int(arg[0])]
        case "Fn::If":
            return ev(arg[1] if conditions[arg[0]] else arg[2])
        case "Fn::Equals":
            return ev(arg[0]) == ev(arg[1])
        case "Fn::Not":
            return not ev(arg[0])
    return {fn: ev(arg)}


def resolve(template: dict[str, Any], value: Any, **overrides: Any) -> Any:
    params: dict[str, Any] = {}
    for name, spec in template["Parameters"].items():
        default = spec.get("Default", "")
        params[name] = default.split(",") if spec["Type"] == "CommaDelimitedList" else default
    params |= {name: f"<{name}>" for name in template["Resources"]}  # Ref of a resource
    params |= overrides
    conditions: dict[str, bool] = {}
    for name, expr in template["Conditions"].items():
        conditions[name] = evaluate(expr, params, conditions)
    return evaluate(value, params, conditions)


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


def statements(
    resources: dict[str, Any], effect: str = "Allow"
) -> list[tuple[str, dict[str, Any]]]:
    found = []
    for name, document in policy_documents(resources):
        for statement in as_list(document["Statement"]):
            if statement["Effect"] == effect:
                found.append((name, statement))
    return found


def resource_strings(value: Any) -> list[str]:
    """Every string a Resource entry can become, with ${...} placeholders left in."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [text for item in value for text in resource_strings(item)]
    ((fn, arg),) = value.items()
    if fn == "Fn::Sub":
        return [arg if isinstance(arg, str) else arg[0]]
    if fn == "Fn::If":
        return resource_strings(arg[1]) + resource_strings(arg[2])
    if fn == "Ref" and arg == "AWS::NoValue":
        return []
    if fn == "Fn::GetAtt":
        return [f"<{'.'.join(arg)}>"]  # the ARN of one resource of this template
    raise AssertionError(f"Resource uses {fn}; teach resource_strings() what it can become")


def resource_part(arn: str) -> str:
    """What follows arn:partition:service:region:account: (placeholders count as names)."""
    text = re.sub(r"\$\{[^}]*\}", "X", arn)
    if not text.startswith("arn:"):
        return text
    parts = text.split(":", 5)
    return parts[5] if len(parts) == 6 else ""


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


def test_guarded_actions_have_no_wildcard(resources):
    checked = 0
    for name, statement in statements(resources):
        guarded = [a for a in actions(statement) if a.split(":")[0] in GUARDED_SERVICES or a == "*"]
        if not guarded:
            continue
        for action in guarded:
            assert "*" not in action, f"{name} {statement.get('Sid')}: wildcard action {action}"
        for arn in resource_strings(statement["Resource"]):
            checked += 1
            part = resource_part(arn)
            assert arn != "*" and part not in ("", "*") and not part.startswith("*"), (
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


def test_builder_cannot_write_to_the_source_bucket(resources):
    # Anything it wrote under incoming/ would start another build: the builder must only read there.
    for name, statement in statements(resources):
        if name != "BuilderFunction":
            continue
        writes = [
            a
            for a in actions(statement)
            if a.startswith("s3:") and not a.startswith(("s3:Get", "s3:List"))
        ]
        for arn in resource_strings(statement["Resource"]) if writes else []:
            assert "-source-" not in arn, f"{statement.get('Sid')}: {writes} on the source bucket"


def test_pass_role_only_for_emr_roles_and_services(resources):
    expected = {
        "${EmrServiceRoleName}": "elasticmapreduce.amazonaws.com",
        "${EmrJobFlowRoleName}": "ec2.amazonaws.com",
    }
    seen = set()
    for name, statement in statements(resources):
        if "iam:PassRole" not in actions(statement):
            continue
        services = condition_values(statement, "iam:PassedToService")
        assert set(services) <= {"StringEquals", "StringLike"} and services, (
            f"{name} {statement.get('Sid')}: iam:PassRole without an iam:PassedToService condition"
        )
        allowed = [value for values in services.values() for value in values]
        for arn in resource_strings(statement["Resource"]):
            role = re.fullmatch(
                r"arn:\$\{AWS::Partition\}:iam::\$\{AWS::AccountId\}:role/(\$\{\w+\})", arn
            )
            assert role and role[1] in expected, f"{name}: iam:PassRole on {arn!r}"
            assert all(value.startswith(expected[role[1]]) for value in allowed), (
                f"{role[1]} may be passed to {allowed}, expected only {expected[role[1]]}"
            )
            seen.add(role[1])
    assert seen == set(expected)


def test_consumers_are_repointed_only_to_this_accounts_layers(resources):
    repoint = [
        statement
        for name, statement in statements(resources)
        if "lambda:UpdateFunctionConfiguration" in actions(statement)
    ]
    assert repoint, "the builder needs lambda:UpdateFunctionConfiguration on its consumers"
    for statement in repoint:
        layers = condition_values(statement, "lambda:Layer")
        assert layers and all(op.startswith("ForAllValues:") for op in layers), (
            f"{statement.get('Sid')}: no ForAllValues condition on lambda:Layer"
        )
        patterns = [resource_strings(value)[0] for values in layers.values() for value in values]
        assert all(":${AWS::AccountId}:layer:" in p for p in patterns), patterns
        assert any("layer:${LayerNamePrefix}" in p for p in patterns), patterns


def test_consumer_functions_are_named_not_wildcarded(resources):
    for _, statement in statements(resources):
        if not any(
            a.startswith(("lambda:GetFunction", "lambda:UpdateFunction"))
            for a in actions(statement)
        ):
            continue
        for arn in resource_strings(statement["Resource"]):
            assert re.fullmatch(r"function:[^*:]+", resource_part(arn)), (
                f"{statement.get('Sid')}: {arn}"
            )


@pytest.mark.parametrize(
    "names",
    [[""], ["orders"], ["a", "b", "c", "d", "e"], ["a", "b", "c", "d", "e", "f"]],
    ids=["none", "one", "five", "six"],
)
def test_consumer_grants_follow_consumer_function_names(template, resources, names):
    builder = resources["BuilderFunction"]["Properties"]
    [repoint] = [
        s for s in builder["Policies"][0]["Statement"] if s.get("Sid") == "RepointConsumerLayers"
    ]
    arns = resolve(template, repoint["Resource"], ConsumerFunctionNames=names)
    env = resolve(
        template,
        builder["Environment"]["Variables"]["CONSUMER_FUNCTIONS"],
        ConsumerFunctionNames=names,
    )

    given = [n for n in names if n]
    prefix = "arn:aws:lambda:us-east-1:123456789012:function:"
    # IAM covers the EMR trigger plus at most five extra names (see ConsumerFunctionNames).
    assert arns == [f"{prefix}layer-builder-emr-trigger"] + [prefix + n for n in given[:5]]
    assert env == ",".join(["layer-builder-emr-trigger", *given])


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

    policies = [
        r["Properties"]["PolicyDocument"]
        for r in resources.values()
        if r["Type"] == "AWS::S3::BucketPolicy" and r["Properties"]["Bucket"] == {"Ref": bucket}
    ]
    assert len(policies) == 1, f"{bucket} needs exactly one bucket policy"
    bucket_arn = "arn:${AWS::Partition}:s3:::" + props["BucketName"]["Fn::Sub"]
    tls_only = [
        s
        for s in as_list(policies[0]["Statement"])
        if s["Effect"] == "Deny"
        and s["Principal"] in ("*", {"AWS": "*"})
        and "s3:*" in actions(s)
        and condition_values(s, "aws:SecureTransport").get("Bool") in (["false"], [False])
        and set(resource_strings(s["Resource"])) >= {bucket_arn, bucket_arn + "/*"}
    ]
    assert tls_only, f"{bucket}: no Deny of s3:* on bucket and objects without aws:SecureTransport"


def test_source_bucket_is_versioned(resources):
    assert resources["SourceBucket"]["Properties"]["VersioningConfiguration"] == {
        "Status": "Enabled"
    }


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
    assert resolve(template, props["Name"]) == "/layer-builder/layers/emr-launcher"
    prefixed = resolve(template, props["Name"], LayerNamePrefix="acme-")
    assert prefixed == "/layer-builder/layers/acme-emr-launcher"


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
    bucket = resolve(template, resources["SourceBucket"]["Properties"]["BucketName"])
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
    assert "criteria" in json.loads(event["Properties"]["Input"])


# ---------------------------------------------------------------- the contract


def function_env(template: dict[str, Any], name: str) -> dict[str, Any]:
    shared = template["Globals"]["Function"].get("Environment", {}).get("Variables", {})
    own = template["Resources"][name]["Properties"]["Environment"]["Variables"]
    return {**shared, **own}


def test_builder_environment_is_exactly_the_contract(template):
    env = function_env(template, "BuilderFunction")
    assert set(env) == BUILDER_ENV
    fixed = {key: value for key, value in env.items() if key != "CONSUMER_FUNCTIONS"}
    assert resolve(template, fixed, LayerNamePrefix="acme-", Architecture="arm64") == {
        "ARTIFACT_BUCKET": "layer-builder-artifacts-123456789012-us-east-1",
        "SOURCE_PREFIX": "incoming/",
        "LAYER_NAME_PREFIX": "acme-",
        "PACKAGE_INDEX_URL": "",
        "ALLOW_SDIST": "",
        "TARGET_RUNTIME": "python3.13",
        "TARGET_ARCH": "arm64",
        "IDEMPOTENCY_TABLE": "<IdempotencyTable>",
        "POINTER_PARAMETER_PREFIX": "/layer-builder/layers",
        "EVENT_BUS_NAME": "default",
        "POWERTOOLS_SERVICE_NAME": "layer-builder",
        "POWERTOOLS_METRICS_NAMESPACE": "LayerBuilder",
        "POWERTOOLS_LOG_LEVEL": "INFO",
    }


def test_emr_trigger_environment_follows_the_contract(template):
    env = resolve(template, function_env(template, "EmrTriggerFunction"))
    expected = {
        "IDEMPOTENCY_TABLE": "<IdempotencyTable>",
        "EMR_SERVICE_ROLE": "EMR_DefaultRole",
        "EMR_JOB_FLOW_ROLE": "EMR_EC2_DefaultRole",
        "EMR_LOG_URI": "s3://layer-builder-artifacts-123456789012-us-east-1/emr-logs/",
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
    props = template["Globals"]["Function"] | template["Resources"][name]["Properties"]
    assert props["CodeUri"] == code_uri
    assert (props["Runtime"], props["Handler"]) == ("python3.13", "app.handler")
    assert props["Architectures"] == [{"Ref": "Architecture"}]
    assert props["Tracing"] == "Active"
    assert resolve(template, props["FunctionName"]) == function_name


def test_emr_trigger_layer_is_optional(template, resources):
    layers = resources["EmrTriggerFunction"]["Properties"]["Layers"]
    arn = "arn:aws:lambda:us-east-1:123456789012:layer:emr-launcher:3"
    assert resolve(template, layers) == []
    assert resolve(template, layers, EmrLauncherLayerArn=arn) == [arn]


def test_parameters_follow_the_contract(template):
    params = template["Parameters"]
    defaults = {name: spec.get("Default") for name, spec in params.items()}
    assert defaults == {
        "Architecture": "x86_64",
        "LayerNamePrefix": "",
        "ConsumerFunctionNames": "",
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
