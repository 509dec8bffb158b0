"""boto3 adapters behind lifecycle.py's protocols, and the session the CLI commands share.

Kept apart from aws.py (the builder's upload flow) so each file stays readable in one sitting;
the error mapping, retry configuration and the SSM pointer are aws.py's own.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import boto3
from botocore.exceptions import ClientError

from ..errors import InputError
from .aws import (
    RETRY_CONFIG,
    LambdaFunctions,
    LambdaLayers,
    S3Artifacts,
    SsmPointer,
    aws_errors,
    error_code,
)
from .lifecycle import LATEST, FunctionVersion, LayerVersion


class LambdaLayerStore:
    def __init__(self, client: Any) -> None:
        self.client = client

    def layer_names(self) -> list[str]:
        with aws_errors("Listing layers"):
            pages = self.client.get_paginator("list_layers").paginate()
            return [layer["LayerName"] for page in pages for layer in page["Layers"]]

    @staticmethod
    def _version(layer_name: str, item: dict) -> LayerVersion:
        content = item.get("Content", {})
        return LayerVersion(
            layer_name=layer_name,
            number=item["Version"],
            arn=item["LayerVersionArn"],
            created=datetime.fromisoformat(item["CreatedDate"]),
            code_sha256=content.get("CodeSha256", ""),
            code_size=content.get("CodeSize", 0),
            runtimes=tuple(item.get("CompatibleRuntimes", ())),
            architectures=tuple(item.get("CompatibleArchitectures", ())),
            description=item.get("Description", ""),
        )

    def versions(self, layer_name: str) -> list[LayerVersion]:
        with aws_errors(f"Listing versions of layer {layer_name}"):
            try:
                pages = self.client.get_paginator("list_layer_versions").paginate(
                    LayerName=layer_name
                )
                items = [item for page in pages for item in page["LayerVersions"]]
            except self.client.exceptions.ResourceNotFoundException:
                return []
        # ListLayerVersions items carry no Content; moto adds it, AWS does not: never rely on it.
        listed = [
            self._version(layer_name, {k: v for k, v in item.items() if k != "Content"})
            for item in items
        ]
        return sorted(listed, key=lambda v: v.number, reverse=True)

    def version(self, layer_name: str, number: int) -> LayerVersion | None:
        with aws_errors(f"Reading version {number} of layer {layer_name}"):
            try:
                item = self.client.get_layer_version(LayerName=layer_name, VersionNumber=number)
            except self.client.exceptions.ResourceNotFoundException:
                return None
        return self._version(layer_name, item)

    def delete(self, version: LayerVersion) -> None:
        with aws_errors(f"Deleting {version.arn}"):
            self.client.delete_layer_version(
                LayerName=version.layer_name, VersionNumber=version.number
            )

    def statements(self, layer_name: str, number: int) -> list[dict]:
        with aws_errors(f"Reading the policy of version {number} of layer {layer_name}"):
            try:
                policy = self.client.get_layer_version_policy(
                    LayerName=layer_name, VersionNumber=number
                )["Policy"]
            except self.client.exceptions.ResourceNotFoundException:
                return []  # a version without a policy
        return json.loads(policy).get("Statement", [])

    def grant(
        self, layer_name: str, number: int, sid: str, principal: str, organization: str
    ) -> None:
        args = {
            "LayerName": layer_name,
            "VersionNumber": number,
            "StatementId": sid,
            "Action": "lambda:GetLayerVersion",
            "Principal": principal,
        }
        if organization:
            args["OrganizationId"] = organization
        with aws_errors(f"Sharing version {number} of layer {layer_name}"):
            try:
                self.client.add_layer_version_permission(**args)
            except ClientError as exc:
                if error_code(exc) != "ResourceConflictException":  # the same sid, added meanwhile
                    raise

    def revoke(self, layer_name: str, number: int, sid: str) -> None:
        with aws_errors(f"Unsharing version {number} of layer {layer_name}"):
            try:
                self.client.remove_layer_version_permission(
                    LayerName=layer_name, VersionNumber=number, StatementId=sid
                )
            except self.client.exceptions.ResourceNotFoundException:
                return  # removed meanwhile: the outcome wanted


class LambdaFunctionCatalog:
    def __init__(self, client: Any) -> None:
        self.client = client

    @staticmethod
    def _config(item: dict) -> FunctionVersion:
        return FunctionVersion(
            name=item["FunctionName"],
            version=item.get("Version", LATEST),
            arn=item["FunctionArn"],
            runtime=item.get("Runtime", ""),  # container images have none
            arch=(item.get("Architectures") or ["x86_64"])[0],
            layers=tuple(layer["Arn"] for layer in item.get("Layers", ())),
        )

    def all_versions(self) -> list[FunctionVersion]:
        # FunctionVersion=ALL: $LATEST and every published version (see lifecycle.py's note).
        with aws_errors("Listing the region's functions"):
            pages = self.client.get_paginator("list_functions").paginate(FunctionVersion="ALL")
            return [self._config(item) for page in pages for item in page["Functions"]]

    def latest(self, name: str) -> FunctionVersion | None:
        with aws_errors(f"Reading function {name}"):
            try:
                return self._config(self.client.get_function_configuration(FunctionName=name))
            except self.client.exceptions.ResourceNotFoundException:
                return None


class NamedPointer(SsmPointer):
    """The SSM pointer under one given parameter name (the CLI's --ssm-parameter)."""

    def __init__(self, client: Any, parameter: str) -> None:
        super().__init__(client, prefix="")
        self.parameter = parameter

    def name(self, layer_name: str) -> str:
        return self.parameter


@dataclass
class LifecycleAdapters:
    layers: LambdaLayerStore
    catalog: LambdaFunctionCatalog
    functions: LambdaFunctions
    registry: LambdaLayers
    session: boto3.session.Session
    ssm: Any
    s3: Any

    @classmethod
    def create(cls, region: str | None = None) -> LifecycleAdapters:
        """The standard AWS environment (credentials, profile, AWS_ENDPOINT_URL), plus --region."""
        session = boto3.session.Session(region_name=region or None)
        if not session.region_name:
            raise InputError(
                "No AWS region is set: pass --region, or set AWS_REGION "
                "(or AWS_DEFAULT_REGION, or a region in the AWS profile)."
            )
        lam = session.client("lambda", config=RETRY_CONFIG)
        return cls(
            LambdaLayerStore(lam),
            LambdaFunctionCatalog(lam),
            LambdaFunctions(lam),
            LambdaLayers(lam),
            session,
            session.client("ssm", config=RETRY_CONFIG),
            session.client("s3", config=RETRY_CONFIG),
        )

    def require_bucket(self, bucket: str) -> None:
        """The artifact bucket exists, and in this region: PublishLayerVersion reads its S3
        content from a bucket in the function's region only."""
        region = self.session.region_name
        with aws_errors(f"Reading bucket {bucket}"):
            try:
                response = self.s3.head_bucket(Bucket=bucket)
            except ClientError as exc:
                if error_code(exc) in {"404", "NoSuchBucket", "NotFound"}:
                    raise InputError(
                        f"Bucket {bucket} does not exist: create it in {region}, or "
                        "name another with --bucket."
                    ) from None
                raise
        where = response.get("BucketRegion") or response["ResponseMetadata"].get(
            "HTTPHeaders", {}
        ).get("x-amz-bucket-region", region)
        if where != region:
            raise InputError(
                f"Bucket {bucket} is in {where}, but Lambda takes layer content only "
                f"from a bucket in its own region ({region}): use a bucket there, "
                "or --region."
            )

    def pointer(self, parameter: str | None) -> NamedPointer | None:
        return NamedPointer(self.ssm, parameter) if parameter else None

    def artifacts(self, bucket: str) -> S3Artifacts:
        return S3Artifacts(self.s3, bucket)
