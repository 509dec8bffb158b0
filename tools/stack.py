"""Create what template.yaml declares inside the local AWS stand-in (moto), and deliver events.

Buckets, table, queue, parameter, IAM role and both functions (with the template's environment,
memory, timeout, layers and async-invoke config) come from the template through
`tools.cfn.Resolver`; nothing here repeats a name. The bucket notification is not configured:
moto would try to run the function in Docker on every upload. `LocalStack.upload` returns the
event S3 would send instead, and the caller delivers it, as issue 3 asks.
"""

from __future__ import annotations

import copy
import io
import json
import zipfile
from datetime import datetime, timezone
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tools.cfn import ROOT, Resolver, load_template
from tools.local_aws import LocalAws

EVENTS = ROOT / "events"
_ASSUME = json.dumps({"Version": "2012-10-17", "Statement": [{
    "Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}]})


def _code_zip(code_dir: Path) -> bytes:
    """A small stand-in for the function's deployment package (moto stores but never runs it)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr("app.py", (code_dir / "app.py").read_text(encoding="utf-8"))
    return buffer.getvalue()


@dataclass
class LocalStack:
    aws: LocalAws
    resolver: Resolver

    def name(self, logical_id: str) -> str:
        return self.resolver.physical_name(logical_id)

    def code_dir(self, logical_id: str) -> Path:
        return ROOT / self.resolver.resources[logical_id]["Properties"]["CodeUri"]

    def environment(self, logical_id: str) -> dict[str, str]:
        """What the function sees in Lambda: the template's variables plus the stand-in's access."""
        return {**self.resolver.function_environment(logical_id), **self.aws.env(),
                "AWS_LAMBDA_FUNCTION_NAME": self.name(logical_id),
                "POWERTOOLS_TRACE_DISABLED": "true", "POWERTOOLS_METRICS_NAMESPACE":
                self.resolver.function_environment(logical_id).get("POWERTOOLS_METRICS_NAMESPACE", "LayerBuilder")}

    def function_settings(self, logical_id: str) -> dict[str, Any]:
        return {"timeout_s": float(self.resolver.function_property(logical_id, "Timeout") or 3),
                "memory_mb": int(self.resolver.function_property(logical_id, "MemorySize") or 128),
                "function_name": self.name(logical_id), "region": self.aws.region}

    def s3_event(self, key: str, version_id: str, size: int, etag: str, sequencer: str,
                 template: str = "s3-put.json") -> dict[str, Any]:
        """An S3 notification in exactly the shape of events/<template>, for this upload."""
        from urllib.parse import quote_plus

        event = copy.deepcopy(json.loads((EVENTS / template).read_text(encoding="utf-8")))
        record = event["Records"][0]
        record["awsRegion"] = self.aws.region
        record["eventTime"] = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
        record["s3"]["bucket"]["name"] = self.name("SourceBucket")
        record["s3"]["bucket"]["arn"] = f"arn:aws:s3:::{self.name('SourceBucket')}"
        record["s3"]["object"].update(key=quote_plus(key, safe="/"), size=size, eTag=etag,
                                      versionId=version_id, sequencer=sequencer)
        event["Records"] = [record]
        return event

    def upload(self, path: Path, key: str) -> dict[str, Any]:
        """Put an archive into the source bucket; returns the S3 event that S3 would send."""
        s3 = self.aws.client("s3")
        body = path.read_bytes()
        response = s3.put_object(Bucket=self.name("SourceBucket"), Key=key, Body=body)
        head = s3.head_object(Bucket=self.name("SourceBucket"), Key=key,
                              VersionId=response["VersionId"])
        sequencer = f"{int(head['LastModified'].timestamp() * 1e6):016X}"
        return self.s3_event(key, response["VersionId"], len(body), response["ETag"].strip('"'),
                             sequencer)


def provision(aws: LocalAws, overrides: dict[str, str] | None = None,
              stack_name: str = "layer-builder") -> LocalStack:
    resolver = Resolver(load_template(), stack_name=stack_name, region=aws.region,
                        overrides=overrides or {})
    stack = LocalStack(aws, resolver)
    s3, ddb, sqs, ssm = (aws.client(s) for s in ("s3", "dynamodb", "sqs", "ssm"))
    lam, iam = aws.client("lambda"), aws.client("iam")
    role = iam.create_role(RoleName=f"{stack_name}-functions",
                           AssumeRolePolicyDocument=_ASSUME)["Role"]["Arn"]
    functions = []
    for logical_id, resource in resolver.resources.items():
        kind, props = resource["Type"], resource.get("Properties", {})
        name = resolver.physical_name(logical_id)
        if kind == "AWS::S3::Bucket":
            s3.create_bucket(Bucket=name)
            if props.get("VersioningConfiguration", {}).get("Status") == "Enabled":
                s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
            rules = [{"ApplyServerSideEncryptionByDefault": rule["ServerSideEncryptionByDefault"]}
                     for rule in props["BucketEncryption"]["ServerSideEncryptionConfiguration"]]
            s3.put_bucket_encryption(Bucket=name, ServerSideEncryptionConfiguration={"Rules": rules})
            s3.put_public_access_block(Bucket=name, PublicAccessBlockConfiguration=props[
                "PublicAccessBlockConfiguration"])
        elif kind == "AWS::DynamoDB::Table":
            ddb.create_table(TableName=name, BillingMode=props["BillingMode"],
                             AttributeDefinitions=props["AttributeDefinitions"], KeySchema=props["KeySchema"])
            ttl = props.get("TimeToLiveSpecification")
            if ttl:
                ddb.update_time_to_live(TableName=name, TimeToLiveSpecification=ttl)
        elif kind == "AWS::SQS::Queue":
            sqs.create_queue(QueueName=name)
        elif kind == "AWS::SSM::Parameter":
            ssm.put_parameter(Name=name, Value=resolver.resolve(props["Value"]), Type=props["Type"])
        elif kind == "AWS::Serverless::Function":
            functions.append(logical_id)
    for logical_id in functions:
        props = resolver.resources[logical_id]["Properties"]
        args: dict[str, Any] = {
            "FunctionName": stack.name(logical_id), "Role": role,
            "Runtime": resolver.function_property(logical_id, "Runtime"),
            "Handler": resolver.function_property(logical_id, "Handler"),
            "Architectures": resolver.function_property(logical_id, "Architectures"),
            "Code": {"ZipFile": _code_zip(stack.code_dir(logical_id))},
            "Environment": {"Variables": resolver.function_environment(logical_id)},
            "MemorySize": int(resolver.function_property(logical_id, "MemorySize") or 128),
            "Timeout": int(resolver.function_property(logical_id, "Timeout") or 3),
        }
        if "EphemeralStorage" in props:
            args["EphemeralStorage"] = props["EphemeralStorage"]
        layers = resolver.resolve(props.get("Layers", []))
        if layers:
            args["Layers"] = layers
        lam.create_function(**args)
        invoke = props.get("EventInvokeConfig")
        if invoke:
            config: dict[str, Any] = {"MaximumRetryAttempts": invoke["MaximumRetryAttempts"],
                                      "MaximumEventAgeInSeconds": invoke["MaximumEventAgeInSeconds"]}
            if "DestinationConfig" in invoke:
                destination = resolver.resolve(invoke["DestinationConfig"]["OnFailure"]["Destination"])
                config["DestinationConfig"] = {"OnFailure": {"Destination": destination}}
            lam.put_function_event_invoke_config(FunctionName=stack.name(logical_id), **config)
    return stack
