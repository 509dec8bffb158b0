"""Deploy template.yaml into the local AWS stand-in as `sam package` + `sam deploy` would.

1. transform: samtranslator (the library SAM CLI and cfn-lint use) turns the SAM template into
   plain CloudFormation, offline;
2. package: each function's CodeUri directory is zipped into a deployment bucket and CodeUri
   becomes its s3:// location, as `sam package` does;
3. deploy: moto's CloudFormation creates the stack (`create_stack`) from the transformed template.

moto's CloudFormation has gaps, and each one is handled from the *transformed* template, never
from a second hand-written definition (`Deployment` records which, and the demo prints them):
- resource types it lacks (it skips them with a warning) are created here through the service
  APIs, from their transformed and resolved properties (`_CREATE`); a type with no creator stops
  the deployment with its name;
- properties it ignores on types it has (bucket versioning, function layers...) are applied here
  the same way (`_COMPLETE`);
- the S3 bucket notification is deliberately not applied: moto would run the function in Docker
  on every upload. `LocalStack.upload` returns the event S3 would send and the caller delivers it.
- moto splits a CommaDelimitedList parameter only when it is passed, not for its default, so
  every parameter is passed explicitly.

`provision(aws, overrides, stack_name)` keeps the interface the tests and the demo use.
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
import logging
import warnings
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus

from tools.cfn import ROOT, TEMPLATE, load_template
from tools.local_aws import ACCOUNT_ID, LocalAws

EVENTS = ROOT / "events"
# moto warns (in its server thread) of each resource type it lacks; Deployment.lines() says which.
warnings.filterwarnings("ignore", message=r"Tried to parse .* not supported by moto")
logging.getLogger("moto").addFilter(
    lambda record: not record.getMessage().startswith("No Moto CloudFormation support"))
SERVERLESS_FUNCTION = "AWS::Serverless::Function"
#: Not copied into a deployment package (as `sam build` leaves them out).
_SKIP = {"__pycache__", ".pytest_cache", ".venv", "tests"}
_FIXED_TIME = (1980, 1, 1, 0, 0, 0)


class StackError(RuntimeError):
    """The template could not be deployed into the stand-in; the message says which resource."""


class Clients:
    """One client per service for a LocalAws (each new client parses its service model again)."""

    def __init__(self, aws: LocalAws) -> None:
        self.aws, self.region, self._made = aws, aws.region, {}

    def client(self, service: str) -> Any:
        if service not in self._made:
            self._made[service] = self.aws.client(service)
        return self._made[service]


# ----------------------------------------------------------------------------- transform
def parameter_values(template: dict[str, Any], overrides: dict[str, str]) -> dict[str, str]:
    """Every parameter's value: the override, else its default (all passed to create_stack)."""
    unknown = set(overrides) - set(template.get("Parameters", {}))
    if unknown:
        raise StackError(f"template.yaml has no parameter(s) {sorted(unknown)}")
    return {name: str(overrides.get(name, spec.get("Default", "")))
            for name, spec in template.get("Parameters", {}).items()}


def transform(template: dict[str, Any], parameters: dict[str, str], region: str) -> dict[str, Any]:
    """The SAM template as plain CloudFormation (samtranslator, offline, no AWS call)."""
    import boto3
    from samtranslator.parser.parser import Parser
    from samtranslator.translator.translator import Translator

    # samtranslator reads the region from a boto3 session; the managed-policy map is given
    # (empty: the template names managed policies by ARN) so it never calls IAM.
    session = boto3.session.Session(region_name=region, aws_access_key_id="local",
                                    aws_secret_access_key="local")
    translator = Translator(managed_policy_map={}, sam_parser=Parser(), boto_session=session)
    # Its metrics object warns about unpublished metrics when collected; there is nowhere to send them.
    logging.getLogger("samtranslator").setLevel(logging.ERROR)
    values = {**parameters, "AWS::Region": region, "AWS::AccountId": ACCOUNT_ID}
    return translator.translate(copy.deepcopy(template), parameter_values=values)


# ------------------------------------------------------------------------------- package
@cache
def _code_zip(code_dir: Path) -> bytes:
    """The CodeUri directory as a deployment package: reproducible, like `sam package`'s."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(code_dir.rglob("*")):
            rel = path.relative_to(code_dir)
            if path.is_file() and not _SKIP.intersection(rel.parts):
                info = zipfile.ZipInfo(rel.as_posix(), _FIXED_TIME)
                info.external_attr = 0o644 << 16
                info.compress_type = zipfile.ZIP_DEFLATED
                zf.writestr(info, path.read_bytes())
    return buffer.getvalue()


def package(template: dict[str, Any], aws: Clients, bucket: str,
            code_dirs: dict[str, Path]) -> dict[str, Any]:
    """Upload each function's code and point its CodeUri at it, as `sam package` does (a copy)."""
    packaged = copy.deepcopy(template)
    s3 = aws.client("s3")
    for logical_id, code_dir in code_dirs.items():
        body = _code_zip(code_dir.resolve())
        key = f"{hashlib.sha256(body).hexdigest()}.zip"  # sam package names objects by content
        s3.put_object(Bucket=bucket, Key=key, Body=body)
        packaged["Resources"][logical_id]["Properties"]["CodeUri"] = f"s3://{bucket}/{key}"
    return packaged


# -------------------------------------------------------------------- moto's missing parts
def _resolver(aws: Clients, stack_name: str) -> Callable[[Any], Any]:
    """Resolve intrinsics as moto's CloudFormation did for this stack (its own resource map).

    LocalAws runs moto in this process, so its CloudFormation backend is at hand.
    """
    from moto.cloudformation.models import cloudformation_backends
    from moto.cloudformation.parsing import clean_json

    backend = cloudformation_backends[ACCOUNT_ID][aws.region]
    stack = next((s for s in backend.stacks.values() if s.name == stack_name
                  and s.status == "CREATE_COMPLETE"), None)
    if stack is None:
        raise StackError(f"moto has no created stack {stack_name}")
    return lambda value: _drop_no_value(clean_json(copy.deepcopy(value), stack.resource_map))


def _drop_no_value(value: Any) -> Any:
    """moto's clean_json turns AWS::NoValue into None; CloudFormation drops the item instead."""
    if isinstance(value, list):
        return [_drop_no_value(v) for v in value if v is not None]
    if isinstance(value, dict):
        return {k: _drop_no_value(v) for k, v in value.items() if v is not None}
    return value


@contextmanager
def _cloudformation_semantics(numbers: set[str]) -> Iterator[None]:
    """Two intrinsics moto evaluates otherwise than CloudFormation, corrected while it creates
    the stack (the template relies on both):
    - AWS::NoValue in a list removes the item, in Fn::Join's list too (moto keeps a None, which
      Fn::Join writes as "None"; the removal is validated against AWS in localstack#12163);
    - Ref to a Number parameter (`numbers`) gives its string, as every parameter's (moto gives a
      number, so that `Fn::Equals [!Ref N, "0"]` never holds).
    moto's clean_json recurses through its module global, so the wrapper sees every level.
    """
    from moto.cloudformation import parsing

    real_clean = parsing.clean_json

    def clean(value: Any, resources_map: Any) -> Any:
        if isinstance(value, list):
            return [v for v in (clean(item, resources_map) for item in value) if v is not None]
        result = real_clean(value, resources_map)
        if isinstance(value, dict) and list(value) == ["Ref"] and value["Ref"] in numbers \
                and isinstance(result, int | float):
            return str(result)
        return result

    parsing.clean_json = clean
    try:
        yield
    finally:
        parsing.clean_json = real_clean


def _bucket_policy(aws: Clients, props: dict[str, Any]) -> str | tuple[str, list[str]]:
    """Only the statements without a Condition: moto evaluates bucket policies but ignores their
    conditions, so `Deny unless aws:SecureTransport` would deny every request, the builder's too."""
    document = props["PolicyDocument"]
    statements = document["Statement"] if isinstance(document["Statement"], list) \
        else [document["Statement"]]
    kept = [st for st in statements if "Condition" not in st]
    skipped = [st.get("Sid", "(no Sid)") for st in statements if "Condition" in st]
    if kept:
        aws.client("s3").put_bucket_policy(Bucket=props["Bucket"],
                                           Policy=json.dumps({**document, "Statement": kept}))
    notes = [f"conditional statements {', '.join(skipped)} (moto would apply them without "
             "their Condition)"] if skipped else []
    return props["Bucket"], notes


def _event_invoke_config(aws: Clients, props: dict[str, Any]) -> str:
    args = {k: props[k] for k in ("MaximumRetryAttempts", "MaximumEventAgeInSeconds",
                                  "DestinationConfig") if k in props}
    aws.client("lambda").put_function_event_invoke_config(
        FunctionName=props["FunctionName"], Qualifier=props.get("Qualifier", "$LATEST"), **args)
    return f"{props['FunctionName']}:{props.get('Qualifier', '$LATEST')}"


def _secret(aws: Clients, props: dict[str, Any]) -> str:
    secrets = aws.client("secretsmanager")
    value = props.get("SecretString")
    if value is None:  # GenerateSecretString: Secrets Manager makes the value, as it would in AWS
        generate = props.get("GenerateSecretString", {})
        value = secrets.get_random_password(
            PasswordLength=int(generate.get("PasswordLength", 32)),
            ExcludePunctuation=bool(generate.get("ExcludePunctuation", True)))["RandomPassword"]
    args = {k: props[k] for k in ("Description", "KmsKeyId", "Tags") if k in props}
    return secrets.create_secret(Name=props["Name"], SecretString=value, **args)["ARN"]


def _secret_policy(aws: Clients, props: dict[str, Any]) -> str:
    args = {"BlockPublicPolicy": bool(props["BlockPublicPolicy"])} \
        if "BlockPublicPolicy" in props else {}
    aws.client("secretsmanager").put_resource_policy(
        SecretId=props["SecretId"], ResourcePolicy=json.dumps(props["ResourcePolicy"]), **args)
    return props["SecretId"]


def _alarm(aws: Clients, props: dict[str, Any]) -> str:
    args = {k: v for k, v in props.items() if k not in ("AlarmName",)}
    for key in ("Period", "EvaluationPeriods", "DatapointsToAlarm"):
        if key in args:
            args[key] = int(args[key])
    if "Threshold" in args:
        args["Threshold"] = float(args["Threshold"])
    aws.client("cloudwatch").put_metric_alarm(AlarmName=props["AlarmName"], **args)
    return props["AlarmName"]


def _layer_permission(aws: Clients, props: dict[str, Any]) -> str:
    arn = props["LayerVersionArn"]
    name, version = arn.split(":")[-2], int(arn.split(":")[-1])
    args = {"OrganizationId": props["OrganizationId"]} if props.get("OrganizationId") else {}
    aws.client("lambda").add_layer_version_permission(
        LayerName=name, VersionNumber=version, StatementId=props.get("StatementId", "cfn"),
        Action=props["Action"], Principal=props["Principal"], **args)
    return arn


#: Resource types moto's CloudFormation lacks: created here from their transformed properties.
_CREATE: dict[str, Callable[[Clients, dict[str, Any]], str | tuple[str, list[str]]]] = {
    "AWS::S3::BucketPolicy": _bucket_policy,
    "AWS::Lambda::EventInvokeConfig": _event_invoke_config,
    "AWS::SecretsManager::Secret": _secret,
    "AWS::SecretsManager::ResourcePolicy": _secret_policy,
    "AWS::CloudWatch::Alarm": _alarm,
    "AWS::Lambda::LayerVersionPermission": _layer_permission,
}


def _complete_bucket(aws: Clients, name: str, props: dict[str, Any]) -> list[str]:
    s3, done = aws.client("s3"), []
    if "VersioningConfiguration" in props:
        s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={
            "Status": props["VersioningConfiguration"]["Status"]})
        done.append("VersioningConfiguration")
    if "PublicAccessBlockConfiguration" in props:
        s3.put_public_access_block(Bucket=name, PublicAccessBlockConfiguration=props[
            "PublicAccessBlockConfiguration"])
        done.append("PublicAccessBlockConfiguration")
    if "OwnershipControls" in props:
        s3.put_bucket_ownership_controls(Bucket=name, OwnershipControls=props["OwnershipControls"])
        done.append("OwnershipControls")
    if "LifecycleConfiguration" in props:
        rules = [_lifecycle_rule(rule) for rule in props["LifecycleConfiguration"]["Rules"]]
        s3.put_bucket_lifecycle_configuration(Bucket=name,
                                              LifecycleConfiguration={"Rules": rules})
        done.append("LifecycleConfiguration")
    return done


def _lifecycle_rule(rule: dict[str, Any]) -> dict[str, Any]:
    """CloudFormation's lifecycle rule shape → the S3 API's."""
    api: dict[str, Any] = {"ID": rule.get("Id", ""), "Status": rule["Status"],
                           "Filter": {"Prefix": rule.get("Prefix", "")}}
    if "ExpirationInDays" in rule:
        api["Expiration"] = {"Days": int(rule["ExpirationInDays"])}
    if "NoncurrentVersionExpiration" in rule:
        api["NoncurrentVersionExpiration"] = {
            "NoncurrentDays": int(rule["NoncurrentVersionExpiration"]["NoncurrentDays"])}
    if "AbortIncompleteMultipartUpload" in rule:
        api["AbortIncompleteMultipartUpload"] = {"DaysAfterInitiation": int(
            rule["AbortIncompleteMultipartUpload"]["DaysAfterInitiation"])}
    return api


def _complete_function(aws: Clients, name: str, props: dict[str, Any]) -> list[str]:
    if not props.get("Layers"):
        return []
    lam = aws.client("lambda")
    lam.update_function_configuration(FunctionName=name, Layers=props["Layers"])
    lam.get_waiter("function_updated_v2").wait(FunctionName=name)
    return ["Layers"]


def _complete_table(aws: Clients, name: str, props: dict[str, Any]) -> list[str]:
    ttl = props.get("TimeToLiveSpecification")
    if not ttl:
        return []
    aws.client("dynamodb").update_time_to_live(TableName=name, TimeToLiveSpecification={
        "AttributeName": ttl["AttributeName"], "Enabled": bool(ttl["Enabled"])})
    return ["TimeToLiveSpecification"]


def _complete_rule(aws: Clients, name: str, props: dict[str, Any]) -> list[str]:
    """A schedule rule never matches PutEvents in AWS; moto gives it an empty pattern, which
    matches every event and then fails on its Lambda target (NotImplementedError, HTTP 500)."""
    if "ScheduleExpression" not in props or "EventPattern" in props:
        return []
    from moto.events.models import EventPattern, events_backends

    backend = events_backends[ACCOUNT_ID][aws.region]
    rule = backend.describe_rule(name.split("|")[-1], None)
    rule.event_pattern = EventPattern.load(json.dumps({"source": ["local.never-matches"]}))
    return ["ScheduleExpression (matches no PutEvents)"]


#: Properties moto's CloudFormation ignores on types it has: applied here.
_COMPLETE: dict[str, Callable[[Clients, str, dict[str, Any]], list[str]]] = {
    "AWS::S3::Bucket": _complete_bucket,
    "AWS::Lambda::Function": _complete_function,
    "AWS::DynamoDB::Table": _complete_table,
    "AWS::Events::Rule": _complete_rule,
}
#: Properties deliberately left out, and why.
_KEEPS_DEFAULT = "moto's Lambda stores no other value, neither from CloudFormation nor an update"
NOT_EMULATED = {("AWS::S3::Bucket", "NotificationConfiguration"):
                "moto would run the function in Docker on every upload; the caller delivers "
                "the event S3 would send (LocalStack.upload)",
                ("AWS::Lambda::Function", "EphemeralStorage"): _KEEPS_DEFAULT,
                ("AWS::Lambda::Function", "TracingConfig"): _KEEPS_DEFAULT}


# -------------------------------------------------------------------------------- deploy
@dataclass
class Deployment:
    """What was deployed, and how each resource of the transformed template came to exist."""

    template: dict[str, Any]  # transformed and packaged
    physical_ids: dict[str, str] = field(default_factory=dict)  # every resource: logical → physical
    by_cloudformation: list[str] = field(default_factory=list)
    created_here: dict[str, str] = field(default_factory=dict)  # logical id → type moto lacks
    completed: dict[str, list[str]] = field(default_factory=dict)  # logical id → properties
    not_emulated: dict[str, list[str]] = field(default_factory=dict)
    #: Resources whose Condition is false: CloudFormation creates them nowhere either.
    not_in_this_stack: list[str] = field(default_factory=list)

    def missing(self) -> list[str]:
        """Resources of the transformed template that exist nowhere in the stand-in."""
        return sorted(set(self.template["Resources"]) - set(self.physical_ids)
                      - set(self.not_in_this_stack))

    def lines(self) -> list[str]:
        """How the stack was made, for the demo's output."""
        types = sorted(set(self.created_here.values()))
        out = [f"{len(self.by_cloudformation)} resources created by moto's CloudFormation "
               f"(create_stack of the samtranslator output)"]
        if types:
            out.append(f"moto lacks {', '.join(types)}: {len(self.created_here)} created from the "
                       "transformed template through the service APIs")
        props = sorted({p for ps in self.completed.values() for p in ps})
        if props:
            out.append(f"properties moto's CloudFormation ignores, applied from the template: "
                       f"{', '.join(props)}")
        for (kind, prop), why in NOT_EMULATED.items():
            if any(prop in ps for ps in self.not_emulated.values()):
                out.append(f"not emulated: {kind} {prop} ({why})")
        for logical_id, notes in sorted(self.not_emulated.items()):
            out += [f"not emulated: {logical_id} {note}" for note in notes
                    if note not in {prop for _, prop in NOT_EMULATED}]
        return out


@cache
def _source_template(path: Path, mtime_ns: int) -> dict[str, Any]:
    return load_template(path)


def source_template(path: Path = TEMPLATE) -> dict[str, Any]:
    """template.yaml as read (a fresh copy; parsed once per change of the file)."""
    return copy.deepcopy(_source_template(path, path.stat().st_mtime_ns))


def deploy(aws: LocalAws, stack_name: str, overrides: dict[str, str] | None = None,
           code_dirs: dict[str, Path] | None = None, template_path: Path = TEMPLATE
           ) -> Deployment:
    """transform → package → create_stack, then fill moto's gaps; see the module's docstring."""
    source = source_template(template_path)
    parameters = parameter_values(source, overrides or {})
    functions = {lid: ROOT / res["Properties"]["CodeUri"] for lid, res in source["Resources"].items()
                 if res["Type"] == SERVERLESS_FUNCTION}
    functions.update(code_dirs or {})
    clients = Clients(aws)
    bucket = f"{stack_name}-sam-package-{ACCOUNT_ID}-{aws.region}"
    clients.client("s3").create_bucket(Bucket=bucket)
    template = transform(package(source, clients, bucket, functions), parameters, aws.region)
    cfn = clients.client("cloudformation")
    numbers = {name for name, spec in source.get("Parameters", {}).items()
               if spec.get("Type") == "Number"}
    with _cloudformation_semantics(numbers):
        cfn.create_stack(StackName=stack_name, TemplateBody=json.dumps(template),
                         Parameters=[{"ParameterKey": k, "ParameterValue": v}
                                     for k, v in parameters.items()],
                         Capabilities=["CAPABILITY_IAM", "CAPABILITY_NAMED_IAM",
                                       "CAPABILITY_AUTO_EXPAND"])
    status = cfn.describe_stacks(StackName=stack_name)["Stacks"][0]
    if status["StackStatus"] != "CREATE_COMPLETE":
        raise StackError(f"{stack_name}: {status['StackStatus']} "
                         f"{status.get('StackStatusReason', '')}")
    deployment = Deployment(template)
    for row in cfn.describe_stack_resources(StackName=stack_name)["StackResources"]:
        if row.get("LogicalResourceId") and row.get("ResourceType"):  # moto lists skipped ones bare
            deployment.by_cloudformation.append(row["LogicalResourceId"])
            deployment.physical_ids[row["LogicalResourceId"]] = row.get("PhysicalResourceId") or ""
    with _cloudformation_semantics(numbers):
        _fill_gaps(clients, deployment, _resolver(clients, stack_name))
    return deployment


def _fill_gaps(clients: Clients, deployment: Deployment, resolve: Callable[[Any], Any]) -> None:
    for logical_id, resource in deployment.template["Resources"].items():
        condition = resource.get("Condition")
        if condition and not resolve({"Fn::If": [condition, True, False]}):
            deployment.not_in_this_stack.append(logical_id)
            continue
        kind = resource["Type"]
        props = resolve(resource.get("Properties", {}))
        if logical_id not in deployment.physical_ids:
            if kind not in _CREATE:
                raise StackError(f"moto's CloudFormation lacks {kind} ({logical_id}) and "
                                 "tools/stack.py has no creator for it: add one to _CREATE")
            created = _CREATE[kind](clients, props)
            physical, notes = created if isinstance(created, tuple) else (created, [])
            deployment.physical_ids[logical_id] = physical
            deployment.created_here[logical_id] = kind
            if notes:
                deployment.not_emulated.setdefault(logical_id, []).extend(notes)
        elif kind in _COMPLETE:
            done = _COMPLETE[kind](clients, deployment.physical_ids[logical_id], props)
            if done:
                deployment.completed[logical_id] = done
        skipped = [prop for (k, prop) in NOT_EMULATED if k == kind and prop in props]
        if skipped:
            deployment.not_emulated[logical_id] = skipped


# --------------------------------------------------------------------------- the stack
@dataclass
class LocalStack:
    aws: LocalAws
    stack_name: str
    deployment: Deployment
    code_dirs: dict[str, Path]

    def __post_init__(self) -> None:
        self.clients = Clients(self.aws)

    def missing(self) -> list[str]:
        """Resources of the transformed template.yaml that are not in the stand-in, checked
        through the service APIs ("LogicalId (Type)"; a type with no check counts as missing)."""
        gone = [f"{lid} (not created)" for lid in self.deployment.missing()]
        for logical_id, physical in self.deployment.physical_ids.items():
            kind = self.deployment.template["Resources"][logical_id]["Type"]
            found = _exists(self.clients, kind, physical, logical_id)
            if not found:
                gone.append(f"{logical_id} ({kind}{'' if found is False else ': no check'})")
        return gone

    def name(self, logical_id: str) -> str:
        """The resource's physical name (a queue's is its URL's last part)."""
        physical = self.deployment.physical_ids[logical_id]
        return physical.rsplit("/", 1)[-1] if physical.startswith("https://") else physical

    def code_dir(self, logical_id: str) -> Path:
        return self.code_dirs[logical_id]

    def configuration(self, logical_id: str) -> dict[str, Any]:
        """The function as the stand-in's Lambda holds it (what CloudFormation created)."""
        return self.clients.client("lambda").get_function_configuration(
            FunctionName=self.name(logical_id))

    def upload_key(self, filename: str, team: str | None = None) -> str:
        """Where a team uploads: `<SOURCE_PREFIX><team>/<filename>`, the first team by default
        (the template's one team when its Teams parameter is empty)."""
        env = self.template_environment("BuilderFunction")
        team = team or json.loads(env["TEAMS"])[0]["name"]
        return f"{env['SOURCE_PREFIX']}{team}/{filename}"

    def template_environment(self, logical_id: str) -> dict[str, str]:
        return dict(self.configuration(logical_id).get("Environment", {}).get("Variables", {}))

    def environment(self, logical_id: str) -> dict[str, str]:
        """What the function sees in Lambda: its deployed variables plus the stand-in's access."""
        variables = self.template_environment(logical_id)
        return {**variables, **self.aws.env(), "AWS_LAMBDA_FUNCTION_NAME": self.name(logical_id),
                "POWERTOOLS_TRACE_DISABLED": "true",
                "POWERTOOLS_METRICS_NAMESPACE": variables.get("POWERTOOLS_METRICS_NAMESPACE",
                                                              "LayerBuilder")}

    def handler(self, logical_id: str) -> str:
        return str(self.configuration(logical_id)["Handler"])

    def function_settings(self, logical_id: str) -> dict[str, Any]:
        config = self.configuration(logical_id)
        return {"timeout_s": float(config.get("Timeout") or 3),
                "memory_mb": int(config.get("MemorySize") or 128),
                "function_name": config["FunctionName"], "region": self.aws.region}

    def s3_event(self, key: str, version_id: str, size: int, etag: str, sequencer: str,
                 template: str = "s3-put.json") -> dict[str, Any]:
        """An S3 notification in exactly the shape of events/<template>, for this upload."""
        event = copy.deepcopy(json.loads((EVENTS / template).read_text(encoding="utf-8")))
        record = event["Records"][0]
        record["awsRegion"] = self.aws.region
        record["eventTime"] = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
        record["s3"]["bucket"]["name"] = self.name("SourceBucket")
        record["s3"]["bucket"]["arn"] = f"arn:aws:s3:::{self.name('SourceBucket')}"
        record["s3"]["object"].update(key=quote_plus(key, safe="/"), size=size, eTag=etag,
                                      versionId=version_id, sequencer=sequencer)
        event["Records"] = [record]
        return event

    def upload(self, path: Path, key: str) -> dict[str, Any]:
        """Put an archive into the source bucket; returns the S3 event that S3 would send."""
        s3 = self.clients.client("s3")
        body = path.read_bytes()
        response = s3.put_object(Bucket=self.name("SourceBucket"), Key=key, Body=body)
        head = s3.head_object(Bucket=self.name("SourceBucket"), Key=key,
                              VersionId=response["VersionId"])
        sequencer = f"{int(head['LastModified'].timestamp() * 1e6):016X}"
        return self.s3_event(key, response["VersionId"], len(body), response["ETag"].strip('"'),
                             sequencer)


def _exists(clients: Clients, kind: str, physical: str, logical_id: str) -> bool | None:
    """Does the resource exist in the stand-in? None when there is no check for its type."""
    from botocore.exceptions import ClientError

    checks: dict[str, Callable[[], Any]] = {
        "AWS::S3::Bucket": lambda: clients.client("s3").head_bucket(Bucket=physical),
        "AWS::S3::BucketPolicy": lambda: clients.client("s3").head_bucket(Bucket=physical),
        "AWS::Lambda::Function": lambda: clients.client("lambda").get_function(
            FunctionName=physical),
        "AWS::Lambda::EventInvokeConfig": lambda: clients.client("lambda")
        .get_function_event_invoke_config(FunctionName=physical.split(":")[0]),
        "AWS::Lambda::Permission": lambda: True,  # moto gives permissions no id to look up
        "AWS::DynamoDB::Table": lambda: clients.client("dynamodb").describe_table(
            TableName=physical),
        "AWS::SQS::Queue": lambda: clients.client("sqs").get_queue_url(
            QueueName=physical.rsplit("/", 1)[-1]),
        "AWS::SSM::Parameter": lambda: clients.client("ssm").get_parameter(Name=physical),
        "AWS::IAM::Role": lambda: clients.client("iam").get_role(RoleName=physical),
        "AWS::Events::Rule": lambda: clients.client("events").describe_rule(
            Name=physical.split("|")[-1]),
        "AWS::SecretsManager::Secret": lambda: clients.client("secretsmanager").describe_secret(
            SecretId=physical),
        "AWS::SecretsManager::ResourcePolicy": lambda: clients.client("secretsmanager")
        .get_resource_policy(SecretId=physical)["ResourcePolicy"],
        "AWS::CloudWatch::Alarm": lambda: clients.client("cloudwatch").describe_alarms(
            AlarmNames=[physical])["MetricAlarms"][0],
        "AWS::Logs::LogGroup": lambda: next(
            g for g in clients.client("logs").describe_log_groups(
                logGroupNamePrefix=physical)["logGroups"] if g["logGroupName"] == physical),
    }
    if kind not in checks:
        return None
    try:
        checks[kind]()
    except (ClientError, IndexError, StopIteration):
        return False
    return True


def provision(aws: LocalAws, overrides: dict[str, str] | None = None,
              stack_name: str = "layer-builder", code_dirs: dict[str, Path] | None = None
              ) -> LocalStack:
    """Deploy template.yaml as stack `stack_name` (see deploy); code_dirs replaces CodeUri dirs
    (e.g. with `sam build` output)."""
    deployment = deploy(aws, stack_name, overrides, code_dirs=code_dirs)
    source = source_template()
    dirs = {lid: ROOT / res["Properties"]["CodeUri"] for lid, res in source["Resources"].items()
            if res["Type"] == SERVERLESS_FUNCTION}
    dirs.update(code_dirs or {})
    # Only the functions this stack has: a function whose Condition is false exists nowhere.
    return LocalStack(aws, stack_name, deployment, {k: Path(v) for k, v in dirs.items()
                                                    if k in deployment.physical_ids})


if __name__ == "__main__":  # a quick look: python -m tools.stack
    with LocalAws() as _aws:
        print("\n".join(provision(_aws).deployment.lines()))
