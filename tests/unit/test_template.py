"""template.yaml and samconfig.toml: lint, least privilege, tenancy, storage safety, observability
and the contract with the functions.

The template is read with tools.cfn, the reader the local stack uses: a YAML loader that keeps
CloudFormation short tags, and a resolver that evaluates intrinsics (and resource conditions) for
given parameter values. IAM checks run on resolved policies, for the defaults and for a set that
takes every Fn::If. The EMR trigger's separation from the builder's table is also shown in moto,
which enforces IAM policies for requests signed with an IAM user's keys.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from itertools import product
from pathlib import Path
from typing import Any
from urllib.parse import unquote_plus

import boto3
import pytest
import yaml
from pip._internal.models.index import PyPI  # the public index's hosts, so this file names none

from tools.cfn import ROOT, TEMPLATE, Resolver, load_template

SAMCONFIG = ROOT / "samconfig.toml"
ACCOUNT = "123456789012"  # the Resolver's account, region us-east-1, stack layer-builder
ALL_RUNTIMES = ("python3.14", "python3.13", "python3.12", "python3.11", "python3.10")
ALL_ARCHITECTURES = ("x86_64", "arm64")
TEAMS = [{"name": "data", "layer_prefix": "acme-data-", "consumers": ["orders"],
          "subscribed_layers": ["emr-launcher"], "share_accounts": [], "share_organization": ""}]
EVERYTHING = {
    "LayerNamePrefix": "acme-",
    "Teams": json.dumps(TEAMS),
    "Runtimes": ",".join(ALL_RUNTIMES),
    "Architectures": ",".join(ALL_ARCHITECTURES),
    "EmrServiceRoleName": "svc-role",
    "EmrJobFlowRoleName": "jobflow-role",
    "EmrLauncherLayerArn": f"arn:aws:lambda:us-east-1:{ACCOUNT}:layer:emr-launcher:3",
    "PackageIndexSecretArn": f"arn:aws:secretsmanager:us-east-1:{ACCOUNT}:secret:index-AbCdEf",
    "PackageIndexKmsKeyArn": f"arn:aws:kms:us-east-1:{ACCOUNT}:key/1234abcd-12ab-34cd-56ef-1234567890ab",
    "AlarmTopicArn": f"arn:aws:sns:us-east-1:{ACCOUNT}:layer-alarms",
    "ShareAccounts": "111122223333,444455556666",
    "ShareOrganizationId": "o-abcdefghij",
    "KeepVersions": "5",
    "BuilderConcurrency": "2",
}
PARAMETER_SETS = pytest.mark.parametrize("overrides", [{}, EVERYTHING], ids=["defaults", "all-set"])
BUILDER_ENV = {
    "AWS_ENDPOINT_URL",  # empty; declared so `sam local invoke --env-vars` can set it (UX)
    "ARTIFACT_BUCKET", "STATE_TABLE", "POINTER_PARAMETER_PREFIX", "SOURCE_PREFIX",
    "LAYER_NAME_PREFIX", "TEAMS", "TARGETS", "CHECK_FUNCTIONS", "PACKAGE_INDEX_SECRET",
    "CACHE_KEY_SECRET", "ALLOW_SDIST", "KEEP_VERSIONS", "SHARE_ACCOUNTS", "SHARE_ORGANIZATION_ID",
    "EVENT_BUS_NAME", "POWERTOOLS_SERVICE_NAME", "POWERTOOLS_METRICS_NAMESPACE",
    "POWERTOOLS_LOG_LEVEL",
}
UPLOAD_RULES = {("incoming/", ".zip"), ("incoming/", ".tar.gz"), ("incoming/", ".tgz")}
GUARDED_SERVICES = ("lambda", "s3", "iam")
#: Lambda actions that support no resource-level permissions (service authorization reference):
#: the maintenance sweep needs them to see every layer and every function's layers.
UNSCOPED_LAMBDA_ACTIONS = {"lambda:ListFunctions", "lambda:ListLayers"}
CONSUMER_TAG = "aws:ResourceTag/layer-builder:consumer"
#: What an index token looks like in a URL: user info, a path segment, a query value.
TOKEN_URLS = ("https://user:s3cr3t@index.example/simple/", "https://index.example/s3cr3t/simple/",
              "https://index.example/simple/?token=s3cr3t")


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return load_template(TEMPLATE)


@pytest.fixture(scope="module")
def resources(template: dict[str, Any]) -> dict[str, Any]:
    return template["Resources"]


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def functions(resolver: Resolver) -> list[str]:
    """The SAM functions CloudFormation would create for these parameters."""
    return [name for name, r in resolver.resources.items()
            if r["Type"] == "AWS::Serverless::Function" and resolver.enabled(name)]


def check_functions(resolver: Resolver) -> list[str]:
    return [name for name in functions(resolver) if name.startswith("Check")]


# ---------------------------------------------------------------- IAM helpers


def policy_documents(resources: dict[str, Any]) -> Iterator[tuple[str, Any]]:
    """Every identity policy document: SAM function policies and IAM roles' inline policies."""
    for name, resource in resources.items():
        props = resource.get("Properties", {})
        if resource["Type"] == "AWS::Serverless::Function":
            for policy in props.get("Policies", []):
                yield name, policy
        elif resource["Type"] == "AWS::IAM::Role":
            for policy in props.get("Policies", []):
                yield name, policy["PolicyDocument"]


def statements_of(template: dict[str, Any], overrides: dict[str, str],
                  effect: str = "Allow") -> list[tuple[str, dict[str, Any]]]:
    """(owner, statement) for every identity statement, resolved for the given parameters."""
    resolver = Resolver(template, overrides=overrides)
    found = []
    for name, document in policy_documents(template["Resources"]):
        if not resolver.enabled(name):
            continue
        for statement in as_list(resolver.resolve(document)["Statement"]):
            if statement["Effect"] == effect:
                found.append((name, statement))
    return found


def allow_statements(template: dict[str, Any],
                     overrides: dict[str, str]) -> list[tuple[str, dict[str, Any]]]:
    return statements_of(template, overrides)


def owned(template: dict[str, Any], overrides: dict[str, str], owner: str) -> list[dict[str, Any]]:
    return [s for name, s in allow_statements(template, overrides) if name == owner]


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


def arn_matches(pattern: str, arn: str) -> bool:
    """IAM's ARN matching: * and ? are wildcards (within and across segments)."""
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, arn) is not None


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
        for action in guarded:
            assert "*" not in action, f"{name} {statement.get('Sid')}: wildcard action {action}"
        if not guarded or set(guarded) <= UNSCOPED_LAMBDA_ACTIONS:
            continue
        assert not set(guarded) & UNSCOPED_LAMBDA_ACTIONS, f"{statement.get('Sid')}: mixed"
        for arn in as_list(statement["Resource"]):
            checked += 1
            part = resource_part(arn)
            assert part and part != "*" and not part.startswith("*"), (
                f"{name} {statement.get('Sid')}: {guarded} on {arn!r} is a wildcard resource"
            )
            if part == "function:*":  # any function, narrowed to the stack's consumers by tag
                assert condition_values(statement, CONSUMER_TAG) == {"StringEquals": ["layer-builder"]}
    assert checked > 20, "expected the functions' lambda/s3/iam statements to be found"


def test_unscoped_lambda_actions_are_only_the_sweeps_reads(template):
    for name, statement in allow_statements(template, EVERYTHING):
        if set(actions(statement)) & UNSCOPED_LAMBDA_ACTIONS:
            assert name == "LayerMaintenanceFunction", name
            assert set(actions(statement)) == UNSCOPED_LAMBDA_ACTIONS
            assert as_list(statement["Resource"]) == ["*"]


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
        if writes:
            for arn in as_list(statement["Resource"]):
                assert not arn.startswith(source), f"{name} {statement.get('Sid')}: {writes} on {arn}"


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
        assert name == "EmrTriggerFunction", name
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


# ---------------------------------------------------------------- consumers (issue 9)


@PARAMETER_SETS
def test_consumers_get_only_layer_lists_of_this_accounts_layers(template, overrides):
    """ForAllValues holds when lambda:Layer is absent (a call changing only the environment,
    handler or VPC), so every grant also requires the key (Null: false)."""
    prefix = overrides.get("LayerNamePrefix") or "layer-builder-"
    own = f"arn:aws:lambda:us-east-1:{ACCOUNT}:layer:"
    repoint = [(n, s) for n, s in allow_statements(template, overrides)
               if "lambda:UpdateFunctionConfiguration" in actions(s)]
    assert {n for n, _ in repoint} == {"BuilderFunction", "LayerMaintenanceFunction"}
    for name, statement in repoint:
        assert actions(statement) == ["lambda:UpdateFunctionConfiguration"]
        assert condition_values(statement, "lambda:Layer")["Null"] == ["false"], statement["Sid"]
        patterns = condition_values(statement, "lambda:Layer")["ForAllValues:StringLike"]
        assert all(p.startswith(own) for p in patterns), patterns
        assert own + prefix + "*:*" in patterns
    # the maintenance function re-points (rollbacks) under exactly the builder's conditions
    by_owner = {name: sorted(json.dumps(s, sort_keys=True) for n, s in repoint if n == name)
                for name in ("BuilderFunction", "LayerMaintenanceFunction")}
    assert by_owner["BuilderFunction"] == by_owner["LayerMaintenanceFunction"]


@PARAMETER_SETS
def test_consumer_functions_are_named_or_tagged(template, overrides):
    function = f"arn:aws:lambda:us-east-1:{ACCOUNT}:function:"
    for name, statement in allow_statements(template, overrides):
        touched = [a for a in actions(statement)
                   if a.startswith(("lambda:GetFunction", "lambda:UpdateFunction", "lambda:ListTags"))]
        if not touched:
            continue
        for arn in as_list(statement["Resource"]):
            if arn == function + "*":
                assert condition_values(statement, CONSUMER_TAG) == {"StringEquals": ["layer-builder"]}
            else:
                assert arn == function + "layer-builder-emr-trigger", f"{statement['Sid']}: {arn}"


def test_emr_trigger_carries_the_consumer_tag(template, resources):
    tags = Resolver(template).resolve(resources["EmrTriggerFunction"]["Properties"]["Tags"])
    assert tags == {"layer-builder:consumer": "layer-builder"}
    # no role of the stack may tag functions, or it could enrol any function as a consumer
    for _, statement in allow_statements(template, EVERYTHING):
        assert not {"lambda:TagResource", "lambda:UntagResource"} & set(actions(statement))


# ---------------------------------------------------------------- tenancy (issue 8)


@pytest.mark.parametrize("stack", ["layer-builder", "acme"])
def test_layer_name_prefix_can_never_be_empty(template, stack):
    resolver = Resolver(template, stack_name=stack, overrides={"LayerNamePrefix": ""})
    prefix = f"{stack}-"
    assert resolver.function_environment("BuilderFunction")["LAYER_NAME_PREFIX"] == prefix
    assert resolver.function_environment("LayerMaintenanceFunction")["LAYER_NAME_PREFIX"] == prefix
    [team] = json.loads(resolver.function_environment("BuilderFunction")["TEAMS"])
    assert team["layer_prefix"] == prefix
    # every right on layers (but reading this account's layers, which attach needs) is scoped
    layer_rights = 0
    for name, document in policy_documents(resolver.resources):
        for statement in as_list(resolver.resolve(document)["Statement"]):
            for arn in as_list(statement.get("Resource", [])):
                part = resource_part(arn)
                if not part.startswith("layer:"):
                    continue
                layer_rights += 1
                if actions(statement) != ["lambda:GetLayerVersion"]:
                    assert part.startswith(f"layer:{prefix}"), f"{name} {statement['Sid']}: {arn}"
    assert layer_rights >= 6


def test_an_explicit_layer_name_prefix_is_used(template):
    resolver = Resolver(template, overrides={"LayerNamePrefix": "acme-"})
    assert resolver.function_environment("BuilderFunction")["LAYER_NAME_PREFIX"] == "acme-"
    assert resolver.physical_name("LayerPointerParameter") == "/layer-builder/layers/acme-emr-launcher"


def test_default_team_is_derived_from_the_stack(template):
    env = Resolver(template).function_environment("BuilderFunction")
    assert json.loads(env["TEAMS"]) == [{
        "name": "default", "layer_prefix": "layer-builder-",
        "consumers": ["layer-builder-emr-trigger"], "subscribed_layers": ["emr-launcher"],
        "share_accounts": [], "share_organization": "",
    }]


def test_teams_parameter_reaches_builder_and_maintenance_verbatim(template):
    resolver = Resolver(template, overrides=EVERYTHING)
    for function in ("BuilderFunction", "LayerMaintenanceFunction"):
        assert json.loads(resolver.function_environment(function)["TEAMS"]) == TEAMS


def test_teams_parameter_holds_no_url(template):
    pattern = template["Parameters"]["Teams"]["AllowedPattern"]
    assert re.fullmatch(pattern, json.dumps(TEAMS))
    for url in TOKEN_URLS:
        assert not re.fullmatch(pattern, json.dumps([{**TEAMS[0], "consumers": [url]}])), url


TARGET_SETS = [
    ("python3.13", "x86_64"),
    ("python3.12", "arm64"),
    ("python3.13,python3.12", "x86_64,arm64"),
    ("python3.10,python3.14", "arm64,x86_64"),
    (",".join(ALL_RUNTIMES), ",".join(ALL_ARCHITECTURES)),
]


@pytest.mark.parametrize(("runtimes", "architectures"), TARGET_SETS)
def test_one_check_function_per_enabled_target(template, runtimes, architectures):
    resolver = Resolver(template, overrides={"Runtimes": runtimes, "Architectures": architectures})
    wanted = {f"{r}/{a}" for r, a in product(runtimes.split(","), architectures.split(","))}
    deployed = {}
    for name in check_functions(resolver):
        runtime = resolver.function_property(name, "Runtime")
        [arch] = resolver.function_property(name, "Architectures")
        digits = runtime.removeprefix("python").replace(".", "")
        assert resolver.physical_name(name) == f"layer-builder-check-py{digits}-{arch}"
        assert resolver.function_property(name, "CodeUri") == "check_function/"
        assert resolver.function_property(name, "Handler") == "app.handler"
        deployed[f"{runtime}/{arch}"] = resolver.physical_name(name)
    assert set(deployed) == wanted

    env = resolver.function_environment("BuilderFunction")
    targets = env["TARGETS"].split(",")
    # newest runtime first, x86_64 before arm64: the first is the primary target
    order = [f"{r}/{a}" for r, a in product(ALL_RUNTIMES, ALL_ARCHITECTURES)]
    assert targets == [t for t in order if t in wanted]
    assert json.loads(env["CHECK_FUNCTIONS"]) == deployed

    [invoke] = [s for _, s in allow_statements(template, {"Runtimes": runtimes,
                                                          "Architectures": architectures})
                if "lambda:InvokeFunction" in actions(s)]
    prefix = f"arn:aws:lambda:us-east-1:{ACCOUNT}:function:"
    assert sorted(as_list(invoke["Resource"])) == sorted(prefix + n for n in deployed.values())


def test_all_ten_targets_can_be_declared(resources):
    declared = {(r["Properties"]["Runtime"], tuple(r["Properties"]["Architectures"]))
                for r in resources.values()
                if r["Type"] == "AWS::Serverless::Function" and "Condition" in r}
    assert declared == {(r, (a,)) for r, a in product(ALL_RUNTIMES, ALL_ARCHITECTURES)}


def test_target_parameters_refuse_unknown_values(template):
    params = template["Parameters"]
    for value in ("python3.9", "python3.15", " python3.12", ""):
        assert not re.fullmatch(params["Runtimes"]["AllowedPattern"], value), value
    for value in ("aarch64", "amd64", ""):
        assert not re.fullmatch(params["Architectures"]["AllowedPattern"], value), value


@PARAMETER_SETS
def test_check_functions_may_write_their_logs_and_nothing_else(template, resources, overrides):
    resolver = Resolver(template, overrides=overrides)
    names = check_functions(resolver)
    assert names
    role = resources["CheckFunctionRole"]["Properties"]
    assert role["AssumeRolePolicyDocument"]["Statement"] == [{
        "Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"},
        "Action": "sts:AssumeRole"}]
    assert "ManagedPolicyArns" not in role and "PermissionsBoundary" not in role
    statements = [s for n, s in allow_statements(template, overrides) if n == "CheckFunctionRole"]
    assert statements and not statements_of(template, overrides, effect="Deny")
    log_groups = {resolver.physical_name(f"{n}Logs") for n in names}
    for statement in statements:
        assert set(actions(statement)) <= {"logs:CreateLogStream", "logs:PutLogEvents"}
        for arn in as_list(statement["Resource"]):
            assert all(arn_matches(arn, f"arn:aws:logs:us-east-1:{ACCOUNT}:log-group:{group}:log-stream:x")
                       for group in log_groups)
            assert not arn_matches(arn, f"arn:aws:logs:us-east-1:{ACCOUNT}:log-group:/aws/lambda/"
                                        "layer-builder-builder:log-stream:x")
    for name in names:
        props = resources[name]["Properties"]
        assert resolver.resolve(props["Role"]) == resolver.arn("CheckFunctionRole"), name
        # no environment at all, so no secret; no X-Ray (its writes would need a grant)
        assert resolver.function_environment(name) == {}, name
        assert resolver.function_property(name, "Tracing") in (None, "PassThrough"), name
        assert "Policies" not in props and "Layers" not in props and "VpcConfig" not in props


def test_check_functions_are_built_for_their_own_runtime_and_machine(resources):
    # sam build runs `make build-<LogicalId>` (check_function/Makefile) for each check function
    makefile = (ROOT / "check_function" / "Makefile").read_text(encoding="utf-8")
    rules = dict(re.findall(r"^build-(\w+): ; \$\(call bundle,([\d.]+,\w+)\)$", makefile, re.M))
    machines = {"x86_64": "x86_64", "arm64": "aarch64"}
    built = set()
    for name, resource in resources.items():
        if name.startswith("Check") and resource["Type"] == "AWS::Serverless::Function":
            props = resource["Properties"]
            assert resource["Metadata"]["BuildMethod"] == "makefile", name
            assert props["CodeUri"] == "check_function/", name
            [arch] = props["Architectures"]
            assert rules[name] == f"{props['Runtime'].removeprefix('python')},{machines[arch]}"
            built.add(name)
    assert built == set(rules) and len(built) == 10


def test_state_is_separate_for_the_builder_and_the_emr_trigger(template, resources):
    resolver = Resolver(template)
    builder_table = resolver.arn("BuilderStateTable")
    emr_table = resolver.arn("EmrIdempotencyTable")
    assert builder_table != emr_table
    assert resolver.function_environment("BuilderFunction")["STATE_TABLE"] == (
        resolver.physical_name("BuilderStateTable"))
    assert resolver.function_environment("EmrTriggerFunction")["IDEMPOTENCY_TABLE"] == (
        resolver.physical_name("EmrIdempotencyTable"))
    granted: dict[str, set[str]] = {}
    for name, statement in allow_statements(template, EVERYTHING):
        if not any(a.startswith("dynamodb:") or a == "*" for a in actions(statement)):
            continue
        for arn in as_list(statement["Resource"]):
            granted.setdefault(name, set()).add(arn)
            # no wildcard or pattern of any other role reaches the builder's table
            if name != "BuilderFunction" and arn_matches(arn, builder_table):
                pytest.fail(f"{name} {statement['Sid']} reaches the builder's table: {arn}")
    assert granted == {"BuilderFunction": {builder_table}, "EmrTriggerFunction": {emr_table}}


def denies(statement: dict[str, Any], principal: str, action: str, resource: str) -> bool:
    """Does this resource-policy Deny (Principal "*", an ArnLike on aws:PrincipalArn) apply?"""
    if statement["Effect"] != "Deny" or statement["Principal"] != "*":
        return False
    if not any(arn_matches(a, action) for a in as_list(statement["Action"])):
        return False
    if not any(arn_matches(r, resource) for r in as_list(statement["Resource"])):
        return False
    patterns = statement["Condition"]["ArnLike"]["aws:PrincipalArn"]
    return any(arn_matches(p, principal) for p in as_list(patterns))


@pytest.mark.parametrize("overrides", [{}, {"EmrJobFlowRoleName": "analytics-emr-ec2"}])
def test_the_emr_roles_can_never_write_the_builders_state_or_upload_a_project(template, overrides):
    """Whatever IAM grants them (the job-flow role's usual managed policy allows s3:* and
    dynamodb:* on everything): the resources' own policies deny them, and only them."""
    resolver = Resolver(template, overrides=overrides)
    job_flow = overrides.get("EmrJobFlowRoleName", "EMR_EC2_DefaultRole")
    emr = [resolver.arn("EmrTriggerFunctionRole"), f"arn:aws:iam::{ACCOUNT}:role/{job_flow}",
           f"arn:aws:iam::{ACCOUNT}:role/service-role/{job_flow}"]
    others = [resolver.arn("BuilderFunctionRole"), f"arn:aws:iam::{ACCOUNT}:role/data-team-ci"]
    table = resolver.resolve(template["Resources"]["BuilderStateTable"]["Properties"])
    [deny_state] = table["ResourcePolicy"]["PolicyDocument"]["Statement"]
    bucket = resolver.resolve(template["Resources"]["SourceBucketPolicy"]["Properties"])
    [deny_upload] = [s for s in bucket["PolicyDocument"]["Statement"]
                     if s["Sid"] == "TheEmrRolesNeverUpload"]
    state, upload = resolver.arn("BuilderStateTable"), f"{resolver.arn('SourceBucket')}/incoming/data/x.zip"

    for principal in emr:
        for action in ("dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:GetItem",
                       "dynamodb:DeleteItem", "dynamodb:PartiQLUpdate"):
            assert denies(deny_state, principal, action, state), (principal, action)
        assert denies(deny_upload, principal, "s3:PutObject", upload), principal
    for principal in others:
        assert not denies(deny_state, principal, "dynamodb:PutItem", state), principal
        assert not denies(deny_upload, principal, "s3:PutObject", upload), principal


@pytest.mark.parametrize("table", ["BuilderStateTable", "EmrIdempotencyTable"])
def test_tables_match_powertools_defaults(resources, table):
    props = resources[table]["Properties"]
    assert props["KeySchema"] == [{"AttributeName": "id", "KeyType": "HASH"}]
    assert props["AttributeDefinitions"] == [{"AttributeName": "id", "AttributeType": "S"}]
    assert props["TimeToLiveSpecification"] == {"AttributeName": "expiration", "Enabled": True}
    assert props["BillingMode"] == "PAY_PER_REQUEST"
    assert props["SSESpecification"]["SSEEnabled"] is True
    assert props["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"] is True


def test_moto_denies_the_emr_role_the_builders_table(template, monkeypatch):
    """The EMR trigger's resolved policy, attached to an IAM user, in moto with IAM enforced.

    moto authorizes DynamoDB requests against the resource "*" only, so no table-scoped grant
    could ever match; it is told the table each request names (as AWS authorizes PutItem on the
    table's ARN) for this test. Without that, both writes are denied and nothing is shown.
    """
    from moto.core.authorization import enable_iam_authentication
    from moto.dynamodb.responses import DynamoHandler

    from tools.local_aws import LocalAws

    monkeypatch.setattr(DynamoHandler, "_determine_resource", lambda self: (
        f"arn:aws:dynamodb:{self.region}:{self.current_account}:table/{self.body['TableName']}"),
        raising=False)
    resolver = Resolver(template)
    [document] = resolver.resolve(template["Resources"]["EmrTriggerFunction"]["Properties"]["Policies"])
    with LocalAws() as aws:
        ddb, iam = aws.client("dynamodb"), aws.client("iam")
        for table in ("BuilderStateTable", "EmrIdempotencyTable"):
            props = template["Resources"][table]["Properties"]
            ddb.create_table(TableName=resolver.physical_name(table), BillingMode="PAY_PER_REQUEST",
                             AttributeDefinitions=props["AttributeDefinitions"],
                             KeySchema=props["KeySchema"])
        iam.create_user(UserName="emr-trigger")
        iam.put_user_policy(UserName="emr-trigger", PolicyName="emr-trigger",
                            PolicyDocument=json.dumps(document))
        key = iam.create_access_key(UserName="emr-trigger")["AccessKey"]
        as_emr = boto3.session.Session(
            aws_access_key_id=key["AccessKeyId"], aws_secret_access_key=key["SecretAccessKey"],
            region_name=aws.region).client("dynamodb", endpoint_url=aws.endpoint_url)
        forged = {"id": {"S": "layer-order#layer-builder-emr-launcher"}, "newest": {"N": "99999"}}
        with enable_iam_authentication():
            as_emr.put_item(TableName=resolver.physical_name("EmrIdempotencyTable"), Item=forged)
            with pytest.raises(as_emr.exceptions.ClientError) as denied:
                as_emr.put_item(TableName=resolver.physical_name("BuilderStateTable"), Item=forged)
            with pytest.raises(as_emr.exceptions.ClientError):
                as_emr.get_item(TableName=resolver.physical_name("BuilderStateTable"),
                                Key={"id": forged["id"]})
        # moto answers in IAM's XML, which the DynamoDB (JSON) client shows as text
        assert "is not authorized to perform: dynamodb:PutItem" in str(denied.value)
        builder_items = ddb.scan(TableName=resolver.physical_name("BuilderStateTable"))["Items"]
        assert builder_items == []


# ---------------------------------------------------------------- storage


@pytest.mark.parametrize("bucket", ["SourceBucket", "ArtifactBucket", "EmrLogBucket"])
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
    [policy] = bucket_policies(resolver, bucket)
    bucket_arn = resolver.arn(bucket)
    tls_only = [
        s
        for s in as_list(policy["Statement"])
        if s["Effect"] == "Deny"
        and s["Principal"] in ("*", {"AWS": "*"})
        and "s3:*" in actions(s)
        and condition_values(s, "aws:SecureTransport").get("Bool") in (["false"], [False])
        and set(as_list(s["Resource"])) >= {bucket_arn, bucket_arn + "/*"}
    ]
    assert tls_only, f"{bucket}: no Deny of s3:* on bucket and objects without aws:SecureTransport"


@pytest.mark.parametrize("bucket", ["SourceBucket", "ArtifactBucket"])
def test_the_buckets_teams_and_the_builder_use_refuse_tls_below_1_2(template, bucket):
    resolver = Resolver(template)
    [policy] = bucket_policies(resolver, bucket)
    bucket_arn = resolver.arn(bucket)
    old_tls = [
        s
        for s in as_list(policy["Statement"])
        if s["Effect"] == "Deny"
        and s["Principal"] in ("*", {"AWS": "*"})
        and "s3:*" in actions(s)
        and condition_values(s, "s3:TlsVersion").get("NumericLessThan") in (["1.2"], [1.2])
        and set(as_list(s["Resource"])) >= {bucket_arn, bucket_arn + "/*"}
    ]
    assert old_tls, f"{bucket}: no Deny of s3:* for s3:TlsVersion below 1.2"


def bucket_policies(resolver: Resolver, bucket: str) -> list[dict[str, Any]]:
    return [resolver.resolve(r["Properties"]["PolicyDocument"])
            for r in resolver.resources.values()
            if r["Type"] == "AWS::S3::BucketPolicy" and r["Properties"]["Bucket"] == {"Ref": bucket}]


@PARAMETER_SETS
def test_only_the_builder_writes_layers_cache_and_checks(template, resources, overrides):
    resolver = Resolver(template, overrides=overrides)
    [policy] = bucket_policies(resolver, "ArtifactBucket")
    [deny] = [s for s in policy["Statement"] if s.get("Sid") == "OnlyTheBuilderWritesLayersCacheAndChecks"]
    bucket = resolver.arn("ArtifactBucket")
    assert deny["Effect"] == "Deny" and deny["Principal"] == "*"
    # multipart parts and completion are authorized as s3:PutObject; aborting is its own action
    assert {"s3:PutObject", "s3:DeleteObject", "s3:DeleteObjectVersion",
            "s3:AbortMultipartUpload"} <= set(actions(deny))
    assert set(deny["Resource"]) == {f"{bucket}/layers/*", f"{bucket}/cache/*", f"{bucket}/checks/*"}
    # every principal but the builder's role (the SAM-generated one, by GetAtt: no name to forge)
    assert deny["Condition"] == {"ArnNotEquals": {"aws:PrincipalArn": resolver.arn("BuilderFunctionRole")}}
    raw = resources["ArtifactBucketPolicy"]["Properties"]["PolicyDocument"]["Statement"]
    assert raw[-1]["Condition"]["ArnNotEquals"]["aws:PrincipalArn"] == {
        "Fn::GetAtt": ["BuilderFunctionRole", "Arn"]}
    # and only the builder is granted those writes in the first place
    for name, statement in allow_statements(template, overrides):
        if any(a in ("s3:PutObject", "s3:DeleteObject") for a in actions(statement)):
            for arn in as_list(statement["Resource"]):
                if arn.startswith(bucket + "/") and not arn.startswith(f"{bucket}/reports/"):
                    assert name == "BuilderFunction", f"{name}: {arn}"


def test_source_bucket_is_versioned(resources):
    versioning = resources["SourceBucket"]["Properties"]["VersioningConfiguration"]
    assert versioning == {"Status": "Enabled"}


def test_artifact_lifecycle_expires_zips_cache_checks_and_keeps_reports_longer(resources):
    rules = resources["ArtifactBucket"]["Properties"]["LifecycleConfiguration"]["Rules"]
    days = {r["Prefix"]: r["ExpirationInDays"] for r in rules
            if r["Status"] == "Enabled" and "Prefix" in r}
    assert set(days) == {"layers/", "cache/", "checks/", "reports/"}
    assert days["checks/"] == 1
    assert days["reports/"] > max(days["layers/"], days["cache/"])


def test_emr_logs_go_to_their_own_bucket(template):
    resolver = Resolver(template)
    uri = resolver.function_environment("EmrTriggerFunction")["EMR_LOG_URI"]
    assert uri == f"s3://{resolver.physical_name('EmrLogBucket')}/"
    assert resolver.physical_name("EmrLogBucket") not in {
        resolver.physical_name("ArtifactBucket"), resolver.physical_name("SourceBucket")}
    # and no function is granted anything on the EMR log bucket (the clusters' own role writes)
    for name, statement in allow_statements(template, EVERYTHING):
        for arn in as_list(statement["Resource"]):
            assert resolver.physical_name("EmrLogBucket") not in arn, name


def test_layer_pointer_parameter(template, resources):
    props = resources["LayerPointerParameter"]["Properties"]
    assert (props["Type"], props["Value"]) == ("String", "none")
    name = Resolver(template).physical_name("LayerPointerParameter")
    assert name == "/layer-builder/layers/layer-builder-emr-launcher"


# ---------------------------------------------------------------- secrets (issues 8 and 9)


def test_cache_key_is_generated_and_readable_by_the_builder_only(template, resources):
    secret = resources["CacheKeySecret"]["Properties"]
    assert secret["GenerateSecretString"]["PasswordLength"] >= 32
    resolver = Resolver(template, overrides=EVERYTHING)
    # named by its fixed name everywhere; its ARN adds a random 6-character suffix
    name = resolver.physical_name("CacheKeySecret")
    arn = f"arn:aws:secretsmanager:us-east-1:{ACCOUNT}:secret:{name}-AbCdEf"
    assert resolver.function_environment("BuilderFunction")["CACHE_KEY_SECRET"] == name
    readers = [(n, s["Resource"]) for n, s in allow_statements(template, EVERYTHING)
               if "secretsmanager:GetSecretValue" in actions(s)
               and any(arn_matches(r, arn) for r in as_list(s["Resource"]))]
    assert readers == [("BuilderFunction", arn.removesuffix("AbCdEf") + "??????")]
    assert not arn_matches(readers[0][1], arn.replace("cache-key", "cache-key-other"))
    [policy] = [resolver.resolve(r["Properties"]) for r in resources.values()
                if r["Type"] == "AWS::SecretsManager::ResourcePolicy"]
    assert policy["SecretId"] == name and policy["BlockPublicPolicy"] is True
    [deny] = policy["ResourcePolicy"]["Statement"]
    assert (deny["Effect"], deny["Principal"], deny["Action"]) == (
        "Deny", "*", "secretsmanager:GetSecretValue")
    assert deny["Condition"] == {"ArnNotEquals": {"aws:PrincipalArn": resolver.arn("BuilderFunctionRole")}}


@pytest.mark.parametrize(
    ("arn", "service_action"),
    [
        ("", None),
        (f"arn:aws:secretsmanager:us-east-1:{ACCOUNT}:secret:team/index-AbCdEf",
         "secretsmanager:GetSecretValue"),
        (f"arn:aws:ssm:us-east-1:{ACCOUNT}:parameter/layer-builder/index-url", "ssm:GetParameter"),
    ],
    ids=["none", "secrets-manager", "ssm"],
)
def test_index_secret_is_read_from_the_one_secret_named(template, arn, service_action):
    overrides = {"PackageIndexSecretArn": arn}
    env = Resolver(template, overrides=overrides).function_environment("BuilderFunction")
    assert env["PACKAGE_INDEX_SECRET"] == arn
    reads = [(n, a, as_list(s["Resource"])) for n, s in allow_statements(template, overrides)
             for a in actions(s)
             if a in ("secretsmanager:GetSecretValue", "ssm:GetParameter") and arn
             and any(arn_matches(r, arn) for r in as_list(s["Resource"]))]
    assert reads == ([("BuilderFunction", service_action, [arn])] if arn else [])
    assert not any(a == "kms:Decrypt" for _, s in allow_statements(template, overrides)
                   for a in actions(s))


def test_a_customer_key_is_decrypted_only_through_the_two_services(template):
    [decrypt] = [(n, s) for n, s in allow_statements(template, EVERYTHING) if "kms:Decrypt" in actions(s)]
    name, statement = decrypt
    assert name == "BuilderFunction"
    assert as_list(statement["Resource"]) == [EVERYTHING["PackageIndexKmsKeyArn"]]
    assert condition_values(statement, "kms:ViaService") == {"StringEquals": [
        "secretsmanager.us-east-1.amazonaws.com", "ssm.us-east-1.amazonaws.com"]}


def env_parameters(value: Any, parameters: set[str]) -> set[str]:
    """The template parameters an (unresolved) environment value reads."""
    if isinstance(value, list):
        return set().union(*(env_parameters(v, parameters) for v in value)) if value else set()
    if isinstance(value, dict):
        found = set()
        for key, arg in value.items():
            if key == "Ref" and arg in parameters:
                found.add(arg)
            elif key == "Fn::Sub":
                text = arg[0] if isinstance(arg, list) else arg
                found |= set(re.findall(r"\$\{([^}.!]+)\}", text)) & parameters
                if isinstance(arg, list):
                    found |= env_parameters(arg[1], parameters)
            else:
                found |= env_parameters(arg, parameters)
        return found
    return set()


def test_no_parameter_that_could_hold_a_token_reaches_an_environment(template, resources):
    params = template["Parameters"]
    assert not [n for n, spec in params.items() if spec.get("NoEcho")], "NoEcho means a secret value"
    flows: dict[str, set[str]] = {}
    for name, resource in resources.items():
        if resource["Type"] != "AWS::Serverless::Function":
            continue
        variables = resource["Properties"].get("Environment", {}).get("Variables", {})
        for variable, value in variables.items():
            if re.search(r"URL|TOKEN|PASSWORD|KEY$", variable):  # AWS_ENDPOINT_URL: empty
                assert value == "", f"{name}: {variable} = {value!r}"
            for parameter in env_parameters(value, set(params)):
                flows.setdefault(parameter, set()).add(f"{name}.{variable}")
    assert flows["PackageIndexSecretArn"] == {"BuilderFunction.PACKAGE_INDEX_SECRET"}
    for parameter in flows:
        spec = params[parameter]
        if spec["Type"] == "Number" or "AllowedValues" in spec:
            continue
        pattern = spec.get("AllowedPattern")
        assert pattern, f"{parameter} reaches {flows[parameter]} unconstrained"
        for url in TOKEN_URLS:
            assert not re.fullmatch(pattern, url), f"{parameter} would accept {url}"


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
    # a throttled burst waits up to Lambda's 6 h; the builder's idempotency records live 24 h
    assert 3600 <= config["MaximumEventAgeInSeconds"] <= 6 * 3600
    assert "expires_after_seconds=24 * 3600" in (ROOT / "builder_function" / "app.py").read_text()
    assert config["DestinationConfig"]["OnFailure"] == {
        "Type": "SQS",
        "Destination": {"Fn::GetAtt": ["BuildFailureQueue", "Arn"]},
    }
    queue = resources["BuildFailureQueue"]["Properties"]
    assert queue.get("SqsManagedSseEnabled") is True or "KmsMasterKeyId" in queue
    assert queue["MessageRetentionPeriod"] >= 7 * 24 * 3600


@pytest.mark.parametrize(("value", "reserved"), [(None, 4), ("1", 1), ("0", None)])
def test_builder_concurrency_is_reserved_from_a_parameter(template, value, reserved):
    overrides = {} if value is None else {"BuilderConcurrency": value}
    resolver = Resolver(template, overrides=overrides)
    props = resolver.resolve(template["Resources"]["BuilderFunction"]["Properties"])
    assert props.get("ReservedConcurrentExecutions") == (None if reserved is None else str(reserved))


def test_emr_schedule_is_optional_and_carries_criteria(resources, template):
    [event] = resources["EmrTriggerFunction"]["Properties"]["Events"].values()
    assert event["Type"] == "Schedule"
    assert event["Properties"]["State"] == "DISABLED"
    # the Input is a direct invoke's criteria, shaped like the EMR trigger's sample, without
    # run_date: each night loads the day it runs, once (idempotency on the date)
    direct = json.loads((ROOT / "events" / "emr-direct.json").read_text(encoding="utf-8"))
    criteria = json.loads(event["Properties"]["Input"])
    assert set(criteria) == set(direct) - {"run_date"}
    # and its script (like the sample's) lies under the default JobScriptPrefix
    prefix = template["Parameters"]["JobScriptPrefix"]["Default"]
    assert criteria["variables"]["JOB_SCRIPT"].startswith(prefix)
    assert direct["variables"]["JOB_SCRIPT"].startswith(prefix)


def test_emr_role_starts_and_tags_clusters_only(template):
    emr = owned(template, EVERYTHING, "EmrTriggerFunction")
    emr_actions = {a for s in emr for a in actions(s) if a.startswith("elasticmapreduce:")}
    # app.py and the emr-launcher library call RunJobFlow only (the steps travel in it)
    assert emr_actions == {"elasticmapreduce:RunJobFlow", "elasticmapreduce:AddTags"}
    [tags] = [s for s in emr if "elasticmapreduce:AddTags" in actions(s)]
    config = yaml.safe_load((ROOT / "emr_function" / "config" / "default.yaml").read_text())
    keys = {tag["Key"] for tag in config["Emr"]["Tags"]}
    tag_keys = condition_values(tags, "aws:TagKeys")
    assert set(tag_keys) == {"Null", "ForAllValues:StringEquals"} and tag_keys["Null"] == ["false"]
    assert set(tag_keys["ForAllValues:StringEquals"]) == keys
    environments = set(re.findall(r'"(\w+)"', re.search(
        r"environment: Literal\[(.*?)\]", (ROOT / "emr_function" / "app.py").read_text()).group(1)))
    assert set(condition_values(tags, "aws:RequestTag/Environment")["StringEquals"]) == environments
    for name, statement in allow_statements(template, EVERYTHING):
        assert not {"elasticmapreduce:AddJobFlowSteps", "elasticmapreduce:DescribeCluster"} & set(
            actions(statement)), name


# ---------------------------------------------------------------- observability


@PARAMETER_SETS
def test_every_function_logs_json_to_its_own_group_with_retention(template, overrides):
    resolver = Resolver(template, overrides={**overrides, "LogRetentionDays": "14"})
    names = functions(resolver)
    assert {"BuilderFunction", "EmrTriggerFunction", "LayerMaintenanceFunction"} <= set(names)
    globals_logging = template["Globals"]["Function"]["LoggingConfig"]
    for name in names:
        logging = {**globals_logging, **template["Resources"][name]["Properties"]["LoggingConfig"]}
        assert logging["LogFormat"] == "JSON", name
        group = logging["LogGroup"]["Ref"]
        resource = template["Resources"][group]
        assert resource["Type"] == "AWS::Logs::LogGroup"
        assert resource.get("Condition") == template["Resources"][name].get("Condition")
        assert resolver.physical_name(group) == f"/aws/lambda/{resolver.physical_name(name)}"
        assert resolver.resolve(resource["Properties"]["RetentionInDays"]) == "14"


def alarms(resolver: Resolver) -> dict[str, dict[str, Any]]:
    return {name: resolver.resolve(r["Properties"]) for name, r in resolver.resources.items()
            if r["Type"] == "AWS::CloudWatch::Alarm"}


def test_alarms_watch_the_failure_queue_failed_builds_and_builder_errors(template):
    resolver = Resolver(template)
    found = {(a["Namespace"], a["MetricName"], json.dumps(a["Dimensions"], sort_keys=True))
             for a in alarms(resolver).values()}
    env = resolver.function_environment("BuilderFunction")
    expected = [
        ("AWS/SQS", "ApproximateNumberOfMessagesVisible",
         [{"Name": "QueueName", "Value": resolver.physical_name("BuildFailureQueue")}]),
        # one metric Build with a Status dimension; Powertools adds the service dimension
        (env["POWERTOOLS_METRICS_NAMESPACE"], "Build",
         [{"Name": "service", "Value": env["POWERTOOLS_SERVICE_NAME"]},
          {"Name": "Status", "Value": "failed"}]),
        ("AWS/Lambda", "Errors", [{"Name": "FunctionName", "Value": "layer-builder-builder"}]),
    ]
    for namespace, metric, dimensions in expected:
        assert (namespace, metric, json.dumps(dimensions, sort_keys=True)) in found, metric
    for alarm in alarms(resolver).values():
        assert alarm["Threshold"] == 1 and alarm["ComparisonOperator"] == "GreaterThanOrEqualToThreshold"
        assert alarm["TreatMissingData"] == "notBreaching"


@pytest.mark.parametrize("topic", ["", EVERYTHING["AlarmTopicArn"]], ids=["no-topic", "topic"])
def test_alarms_notify_the_topic_when_one_is_given(template, topic):
    for name, alarm in alarms(Resolver(template, overrides={"AlarmTopicArn": topic})).items():
        assert alarm.get("AlarmActions") == ([topic] if topic else None), name
        assert alarm.get("OKActions") == ([topic] if topic else None), name


# ---------------------------------------------------------------- layer lifecycle (issue 11)


def test_maintenance_sweeps_daily_with_least_privilege(template, resources):
    props = resources["LayerMaintenanceFunction"]["Properties"]
    assert (props["CodeUri"], props["Handler"]) == ("builder_function/", "maintenance.handler")
    [event] = props["Events"].values()
    assert event["Type"] == "Schedule" and event["Properties"]["Schedule"].startswith("cron(")
    assert "State" not in event["Properties"]  # enabled
    assert json.loads(event["Properties"]["Input"]) == {"action": "sweep"}
    env = Resolver(template, overrides=EVERYTHING).function_environment("LayerMaintenanceFunction")
    assert env["KEEP_VERSIONS"] == "5" and env["LAYER_NAME_PREFIX"] == "acme-"
    assert env["SHARE_ACCOUNTS"] == EVERYTHING["ShareAccounts"]
    granted = {a for s in owned(template, EVERYTHING, "LayerMaintenanceFunction") for a in actions(s)}
    assert granted == {
        "lambda:ListFunctions", "lambda:ListLayers", "lambda:GetLayerVersion",
        "lambda:ListLayerVersions", "lambda:DeleteLayerVersion", "lambda:AddLayerVersionPermission",
        "lambda:RemoveLayerVersionPermission", "lambda:GetLayerVersionPolicy",
        "lambda:GetFunction", "lambda:GetFunctionConfiguration", "lambda:ListTags",
        "lambda:UpdateFunctionConfiguration", "ssm:GetParameter", "ssm:GetParametersByPath",
        "ssm:PutParameter",
    }


@PARAMETER_SETS
def test_layers_are_deleted_and_shared_only_under_the_prefix(template, overrides):
    prefix = overrides.get("LayerNamePrefix") or "layer-builder-"
    for name, statement in allow_statements(template, overrides):
        risky = {"lambda:DeleteLayerVersion", "lambda:AddLayerVersionPermission",
                 "lambda:RemoveLayerVersionPermission", "lambda:PublishLayerVersion"}
        if risky & set(actions(statement)):
            for arn in as_list(statement["Resource"]):
                assert resource_part(arn).startswith(f"layer:{prefix}"), f"{name}: {arn}"


def test_retention_and_sharing_reach_the_builder(template):
    defaults = Resolver(template).function_environment("BuilderFunction")
    assert (defaults["KEEP_VERSIONS"], defaults["SHARE_ACCOUNTS"], defaults["SHARE_ORGANIZATION_ID"]) == (
        "0", "", "")
    env = Resolver(template, overrides=EVERYTHING).function_environment("BuilderFunction")
    assert env["KEEP_VERSIONS"] == "5"
    assert env["SHARE_ACCOUNTS"] == "111122223333,444455556666"
    assert env["SHARE_ORGANIZATION_ID"] == "o-abcdefghij"


# ---------------------------------------------------------------- the contract


def test_builder_environment_is_exactly_the_contract(template, resources):
    assert "Environment" not in template["Globals"]["Function"]  # the check functions get none
    raw = resources["BuilderFunction"]["Properties"]["Environment"]["Variables"]
    assert set(raw) == BUILDER_ENV
    resolver = Resolver(template, overrides={"LayerNamePrefix": "acme-", "Architecture": "arm64"})
    env = resolver.function_environment("BuilderFunction")
    assert env == {
        "AWS_ENDPOINT_URL": "",
        "ARTIFACT_BUCKET": f"layer-builder-artifacts-{ACCOUNT}-us-east-1",
        "STATE_TABLE": resolver.physical_name("BuilderStateTable"),
        "POINTER_PARAMETER_PREFIX": "/layer-builder/layers",
        "SOURCE_PREFIX": "incoming/",
        "LAYER_NAME_PREFIX": "acme-",
        "TEAMS": env["TEAMS"],
        "TARGETS": "python3.13/x86_64",
        "CHECK_FUNCTIONS": '{"python3.13/x86_64": "layer-builder-check-py313-x86_64"}',
        "PACKAGE_INDEX_SECRET": "",
        "CACHE_KEY_SECRET": resolver.physical_name("CacheKeySecret"),
        "ALLOW_SDIST": "",
        "KEEP_VERSIONS": "0",
        "SHARE_ACCOUNTS": "",
        "SHARE_ORGANIZATION_ID": "",
        "EVENT_BUS_NAME": "default",
        "POWERTOOLS_SERVICE_NAME": "layer-builder",
        "POWERTOOLS_METRICS_NAMESPACE": "LayerBuilder",
        "POWERTOOLS_LOG_LEVEL": "INFO",
    }


def test_emr_trigger_environment_follows_the_contract(template):
    resolver = Resolver(template)
    assert resolver.function_environment("EmrTriggerFunction") == {
        "AWS_ENDPOINT_URL": "",
        "IDEMPOTENCY_TABLE": resolver.physical_name("EmrIdempotencyTable"),
        "EMR_SERVICE_ROLE": "EMR_DefaultRole",
        "EMR_JOB_FLOW_ROLE": "EMR_EC2_DefaultRole",
        "EMR_LOG_URI": f"s3://layer-builder-emr-logs-{ACCOUNT}-us-east-1/",
        "JOB_SCRIPT_PREFIX": "s3://example-emr-code/jobs/",
        "POWERTOOLS_SERVICE_NAME": "emr-trigger",
        "POWERTOOLS_METRICS_NAMESPACE": "LayerBuilder",
        "POWERTOOLS_LOG_LEVEL": "INFO",
    }


def test_job_script_prefix_is_an_s3_folder(template):
    pattern = template["Parameters"]["JobScriptPrefix"]["AllowedPattern"]
    for good in ("s3://example-emr-code/jobs/", "s3://my.bucket/", "s3://b-1/a/b=c/"):
        assert re.fullmatch(pattern, good), good
    for bad in ("s3://bucket/jobs", "s3://bucket/../", "s3://bucket/a/./", "https://bucket/jobs/",
                "s3://Bucket/x/", "s3://bucket/a b/"):
        assert not re.fullmatch(pattern, bad), bad


@pytest.mark.parametrize(
    ("name", "code_uri", "handler", "function_name"),
    [
        ("BuilderFunction", "builder_function/", "app.handler", "layer-builder-builder"),
        ("EmrTriggerFunction", "emr_function/", "app.handler", "layer-builder-emr-trigger"),
        ("LayerMaintenanceFunction", "builder_function/", "maintenance.handler",
         "layer-builder-layer-maintenance"),
    ],
)
def test_functions_follow_the_contract(template, name, code_uri, handler, function_name):
    resolver = Resolver(template, overrides={"Architecture": "arm64"})
    assert resolver.function_property(name, "CodeUri") == code_uri
    assert resolver.function_property(name, "Runtime") == "python3.13"
    assert resolver.function_property(name, "Handler") == handler
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
        "Teams": "",
        "LayerNamePrefix": "",
        "Runtimes": "python3.13",
        "Architectures": "x86_64",
        "Architecture": "x86_64",
        "KeepVersions": 0,
        "ShareAccounts": "",
        "ShareOrganizationId": "",
        "PackageIndexSecretArn": "",
        "PackageIndexKmsKeyArn": "",
        "AllowSdist": "",
        "BuilderConcurrency": 4,
        "LogRetentionDays": 30,
        "AlarmTopicArn": "",
        "EmrServiceRoleName": "EMR_DefaultRole",
        "EmrJobFlowRoleName": "EMR_EC2_DefaultRole",
        "EmrLauncherLayerArn": "",
        "JobScriptPrefix": "s3://example-emr-code/jobs/",
    }
    assert {params[p]["Type"] for p in ("Runtimes", "Architectures", "ShareAccounts")} == {
        "CommaDelimitedList"}
    for name, spec in params.items():  # a pattern that refused its own default would block deploys
        if "AllowedPattern" in spec:
            for item in str(spec["Default"]).split(","):
                assert re.fullmatch(spec["AllowedPattern"], item), name
    for name in ("PackageIndexSecretArn", "PackageIndexKmsKeyArn", "AlarmTopicArn"):
        assert re.fullmatch(params[name]["AllowedPattern"], EVERYTHING[name]), name
    interface = template["Metadata"]["AWS::CloudFormation::Interface"]["ParameterGroups"]
    assert sorted(p for group in interface for p in group["Parameters"]) == sorted(params)


def test_outputs_name_every_contract_resource(template):
    referenced = json.dumps(template["Outputs"])
    for name in (
        "SourceBucket",
        "ArtifactBucket",
        "EmrLogBucket",
        "BuilderFunction",
        "BuilderLogs",
        "LayerMaintenanceFunction",
        "EmrTriggerFunction",
        "BuildFailureQueue",
        "BuilderStateTable",
        "EmrIdempotencyTable",
        "LayerPointerParameter",
    ):
        assert f'"{name}' in referenced, f"no output for {name}"
    assert Resolver(template).resolve(template["Outputs"]["LayerNamePrefix"]["Value"]) == "layer-builder-"


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
    assert overrides and set(overrides) <= set(template["Parameters"])
    # account-specific ARNs (the index secret, its key) are the operator's to give at deploy time
    assert not {"PackageIndexSecretArn", "PackageIndexKmsKeyArn"} & set(overrides)
    assert {"LayerNamePrefix", "Runtimes", "Architectures"} <= set(overrides)
    for name, value in overrides.items():  # `sam deploy --guided` offers these as defaults
        spec = template["Parameters"][name]
        for item in value.split(",") if spec["Type"] == "CommaDelimitedList" else [value]:
            if "AllowedPattern" in spec:
                assert re.fullmatch(spec["AllowedPattern"], item), name
            if "AllowedValues" in spec:
                assert item in [str(v) for v in spec["AllowedValues"]], name
    assert config["default"]["validate"]["parameters"]["lint"] is True
    build = config["default"]["build"]["parameters"]
    assert build["cached"] is True and build["parallel"] is True
