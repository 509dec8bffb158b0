"""Thin boto3 adapters behind the service's protocols. Clients are created once per container.

botocore's standard retry mode retries throttling, 5xx and timeouts with backoff; what is left
after that becomes a TransientError (Lambda retries the event) or a permanent error.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import time
import uuid
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
from boto3.exceptions import Boto3Error
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, WaiterError

from .. import limits
from ..errors import ConfigurationError, DiskFullError, InputError, OutOfTimeError, TransientError
from ..redact import redact, redact_data, register_secret
from ..target import Target
from .attach import AttachedLayer, ConcurrentUpdate, FunctionState
from .publish import PublishedLayer
from .settings import Settings
from .uploads import Upload

RETRY_CONFIG = Config(
    retries={"max_attempts": 6, "mode": "standard"}, connect_timeout=5, read_timeout=60
)
_MISSING = {"NoSuchKey", "NoSuchVersion", "404", "NotFound"}
_PERMISSION = {"AccessDenied", "AccessDeniedException", "UnauthorizedOperation"}
_CONFLICT = {"ResourceConflictException", "PreconditionFailedException"}
ORDER_PREFIX = "layer-order#"
MEMO_PREFIX = "source#"
MEMO_TTL_S = 30 * 24 * 3600
#: Longest waits for function_updated_v2 (polls 1 s apart), each also cut at the build's deadline.
UPDATE_WAIT_S = 300
CONFLICT_WAIT_S = 60
#: How long a secret read from Secrets Manager or SSM is reused (Powertools' cache).
SECRET_MAX_AGE_S = 300
MIN_CACHE_KEY_BYTES = 16


def error_code(exc: BaseException) -> str:
    """The AWS error code of a ClientError, or of the one a library wrapped (boto3's transfer,
    Powertools' parameters); "" for anything else."""
    error = exc if isinstance(exc, ClientError) else exc.__context__
    return error.response.get("Error", {}).get("Code", "") if isinstance(error, ClientError) else ""


def _denied(action: str, code: str) -> ConfigurationError:
    return ConfigurationError(
        f"{action} was denied ({code}): grant the builder's role this "
        "permission (see template.yaml)."
    )


@contextmanager
def aws_errors(action: str) -> Iterator[None]:
    """Name the action at fault; permissions are permanent, the rest is worth a retry."""
    try:
        yield
    except ClientError as exc:
        code = error_code(exc)
        message = exc.response.get("Error", {}).get("Message", "")
        if code in _PERMISSION:
            raise _denied(action, code) from None
        raise TransientError(f"{action} failed: {code} {message}".strip()) from None
    except (BotoCoreError, Boto3Error) as exc:  # upload_file wraps a ClientError in a Boto3Error
        code = error_code(exc)
        if code in _PERMISSION:
            raise _denied(action, code) from None
        raise TransientError(f"{action} failed: {exc}") from None


@dataclass
class Clients:
    s3: Any
    lambda_: Any
    ssm: Any
    dynamodb: Any
    events: Any
    secretsmanager: Any = None
    #: The session the clients came from (the check-function sandbox makes its Lambda clients).
    session: Any = None

    @classmethod
    def create(cls, session: boto3.session.Session | None = None) -> Clients:
        session = session or boto3.session.Session()
        make = lambda service: session.client(service, config=RETRY_CONFIG)  # noqa: E731
        return cls(
            make("s3"),
            make("lambda"),
            make("ssm"),
            make("dynamodb"),
            make("events"),
            make("secretsmanager"),
            session,
        )

    def all(self) -> list[Any]:
        return [
            c
            for c in (
                self.s3,
                self.lambda_,
                self.ssm,
                self.dynamodb,
                self.events,
                self.secretsmanager,
            )
            if c is not None
        ]


class S3Artifacts:
    def __init__(self, s3: Any, bucket: str) -> None:
        self.s3 = s3
        self.bucket = bucket

    def download(self, upload: Upload, dest: Path) -> tuple[Path, str]:
        """Exactly the announced object version, streamed, with the size capped; and its sha256."""
        args = {"Bucket": upload.bucket, "Key": upload.key}
        if upload.version_id:
            args["VersionId"] = upload.version_id
        with aws_errors(f"Reading s3://{upload.bucket}/{upload.key}"):
            try:
                response = self.s3.get_object(**args)
            except ClientError as exc:
                if error_code(exc) in _MISSING:
                    raise InputError(
                        f"s3://{upload.bucket}/{upload.key} (version "
                        f"{upload.version_id or '-'}) no longer exists: upload it again."
                    ) from None
                raise
        written, digest = 0, hashlib.sha256()
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            with (
                aws_errors(f"Reading s3://{upload.bucket}/{upload.key}"),
                open(dest, "wb") as f,
                closing(response["Body"]) as body,
            ):
                for chunk in body.iter_chunks(1 << 20):
                    written += len(chunk)
                    if written > limits.MAX_UNPACKED_BYTES:
                        raise InputError(
                            f"{upload.key} is larger than {limits.MAX_UNPACKED_BYTES:,} bytes: "
                            "upload the project's sources only, not installed packages."
                        )
                    digest.update(chunk)
                    f.write(chunk)
        except OSError as exc:
            if exc.errno != errno.ENOSPC:
                raise
            raise DiskFullError(
                f"The disk filled up while downloading {upload.key} ({written:,} bytes written): "
                "give the builder more ephemeral storage."
            ) from None
        return dest, digest.hexdigest()

    def put_file(self, key: str, path: Path) -> None:
        with aws_errors(f"Uploading s3://{self.bucket}/{key}"):
            self.s3.upload_file(str(path), self.bucket, key)

    def put_json(self, key: str, data: dict) -> None:
        with aws_errors(f"Writing s3://{self.bucket}/{key}"):
            body = json.dumps(redact_data(json.loads(json.dumps(data, default=str))), indent=2)
            self.s3.put_object(
                Bucket=self.bucket, Key=key, ContentType="application/json", Body=body.encode()
            )

    def put_html(self, key: str, page: str) -> None:
        with aws_errors(f"Writing s3://{self.bucket}/{key}"):
            self.s3.put_object(
                Bucket=self.bucket,
                Key=key,
                ContentType="text/html; charset=utf-8",
                Body=redact(page).encode(),
            )


class LambdaLayers:
    def __init__(self, client: Any) -> None:
        self.client = client

    def _published(self, response: dict, reused: bool = False) -> PublishedLayer:
        return PublishedLayer(
            response["LayerArn"],
            response["LayerVersionArn"],
            response["Version"],
            response["Content"]["CodeSha256"],
            response["Content"]["CodeSize"],
            reused,
        )

    def latest(self, layer_name: str) -> PublishedLayer | None:
        with aws_errors(f"Listing versions of layer {layer_name}"):
            try:
                versions = self.client.list_layer_versions(LayerName=layer_name, MaxItems=1)[
                    "LayerVersions"
                ]
            except self.client.exceptions.ResourceNotFoundException:
                return None
            if not versions:
                return None
            response = self.client.get_layer_version(
                LayerName=layer_name, VersionNumber=versions[0]["Version"]
            )
        return self._published(response, reused=True)

    def publish(
        self,
        layer_name: str,
        *,
        bucket: str,
        key: str,
        description: str,
        runtime: str,
        arch: str,
        license_info: str,
    ) -> PublishedLayer:
        args: dict[str, Any] = {
            "LayerName": layer_name,
            "Description": description,
            "Content": {"S3Bucket": bucket, "S3Key": key},
            "CompatibleRuntimes": [runtime],
            "CompatibleArchitectures": [arch],
        }
        if license_info:
            args["LicenseInfo"] = license_info
        with aws_errors(f"Publishing layer {layer_name}"):
            return self._published(self.client.publish_layer_version(**args))

    def version(self, layer_arn: str, number: int) -> PublishedLayer | None:
        with aws_errors(f"Reading {layer_arn}:{number}"):
            try:
                response = self.client.get_layer_version(LayerName=layer_arn, VersionNumber=number)
            except self.client.exceptions.ResourceNotFoundException:
                return None
        return self._published(response)

    def exists(self, version_arn: str) -> bool:
        layer, _, version = version_arn.rpartition(":")
        with aws_errors(f"Reading {version_arn}"):
            try:
                self.client.get_layer_version(LayerName=layer, VersionNumber=int(version))
                return True
            except self.client.exceptions.ResourceNotFoundException:
                return False

    def discard(self, layer: PublishedLayer) -> None:
        with aws_errors(f"Deleting {layer.version_arn}"):
            self.client.delete_layer_version(LayerName=layer.layer_arn, VersionNumber=layer.version)


class LambdaFunctions:
    def __init__(self, client: Any) -> None:
        self.client = client

    def get(self, name: str) -> FunctionState:
        with aws_errors(f"Reading function {name}"):
            try:
                config = self.client.get_function_configuration(FunctionName=name)
            except self.client.exceptions.ResourceNotFoundException:
                raise InputError(
                    f"Consumer function {name} does not exist: fix the team's "
                    "consumers in the stack's TEAMS."
                ) from None
        layers = tuple(
            AttachedLayer(item["Arn"], item.get("CodeSize", 0)) for item in config.get("Layers", [])
        )
        return FunctionState(
            name,
            layers,
            config.get("CodeSize", 0),
            config.get("RevisionId", ""),
            config.get("Runtime", ""),
            tuple(config.get("Architectures") or ("x86_64",)),
        )

    def set_layers(
        self, state: FunctionState, layers: list[str], deadline: float | None = None
    ) -> None:
        with aws_errors(f"Updating the layers of {state.name}"):
            try:
                args: dict[str, Any] = {"FunctionName": state.name, "Layers": layers}
                if state.revision_id:
                    args["RevisionId"] = state.revision_id
                self.client.update_function_configuration(**args)
            except ClientError as exc:
                code = error_code(exc)
                if code in _CONFLICT:
                    self._wait(state.name, deadline, CONFLICT_WAIT_S)
                    raise ConcurrentUpdate(state.name) from None
                if code == "InvalidParameterValueException":
                    raise InputError(
                        f"Lambda refused the layers for {state.name}: "
                        f"{exc.response['Error'].get('Message', '')}"
                    ) from None
                raise
            self._wait(state.name, deadline, UPDATE_WAIT_S)

    def _wait(self, name: str, deadline: float | None, longest: int) -> None:
        """function_updated_v2, never past the build's deadline (1 s between polls)."""
        attempts = longest
        if deadline is not None:
            attempts = min(longest, int(deadline - time.monotonic()))
            if attempts < 1:
                raise OutOfTimeError(
                    f"No time left to wait for the update of {name}: the retry finishes attaching."
                )
        try:
            self.client.get_waiter("function_updated_v2").wait(
                FunctionName=name, WaiterConfig={"Delay": 1, "MaxAttempts": attempts}
            )
        except WaiterError as exc:
            if attempts < longest and "Max attempts exceeded" in str(exc):
                raise OutOfTimeError(
                    f"{name} was still updating when the build's time ran out: "
                    "the retry finishes attaching."
                ) from None
            raise


class DynamoOrderBook:
    def __init__(self, client: Any, table: str) -> None:
        self.client = client
        self.table = table

    def claim(self, key: str, order: str, version_arn: str) -> bool:
        with aws_errors(f"Recording the newest upload of {key}"):
            try:
                self.client.put_item(
                    TableName=self.table,
                    Item={
                        "id": {"S": ORDER_PREFIX + key},
                        "upload_order": {"S": order},
                        "version_arn": {"S": version_arn},
                        "updated": {"N": str(int(time.time()))},
                    },
                    ConditionExpression="attribute_not_exists(id) OR upload_order <= :order",
                    ExpressionAttributeValues={":order": {"S": order}},
                )
                return True
            except self.client.exceptions.ConditionalCheckFailedException:
                return False

    def newest(self, key: str) -> str | None:
        with aws_errors(f"Reading the newest upload of {key}"):
            item = self.client.get_item(
                TableName=self.table, ConsistentRead=True, Key={"id": {"S": ORDER_PREFIX + key}}
            ).get("Item")
        return item["version_arn"]["S"] if item else None


class DynamoSourceMemo:
    """What an upload's exact bytes built into, so re-uploading them answers without a build."""

    def __init__(self, client: Any, table: str) -> None:
        self.client = client
        self.table = table

    def get(self, fingerprint: str) -> dict | None:
        with aws_errors("Reading the build memo"):
            item = self.client.get_item(
                TableName=self.table,
                ConsistentRead=True,
                Key={"id": {"S": MEMO_PREFIX + fingerprint}},
            ).get("Item")
        return json.loads(item["result"]["S"]) if item else None

    def put(self, fingerprint: str, result: dict) -> None:
        with aws_errors("Writing the build memo"):
            self.client.put_item(
                TableName=self.table,
                Item={
                    "id": {"S": MEMO_PREFIX + fingerprint},
                    "result": {"S": json.dumps(result)},
                    "expiration": {"N": str(int(time.time()) + MEMO_TTL_S)},
                },
            )


class S3BlobCache:
    """cache/<name> in the artifact bucket: the cache's second level, shared by every builder
    container. Only moves bytes: the engine signs each entry with the builder's HMAC key and
    checks it after fetching, so an entry altered in S3 is a miss, never a layer.

    Best effort: a failure only costs a rebuild, so it is recorded (a build warning), never raised."""

    def __init__(self, s3: Any, bucket: str, prefix: str = "cache/") -> None:
        self.s3 = s3
        self.bucket = bucket
        self.prefix = prefix
        self.errors: list[str] = []

    def fetch(self, name: str, dest: Path) -> bool:
        partial = dest.with_name(f".{dest.name}.{uuid.uuid4().hex}.part")
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            self.s3.download_file(self.bucket, self.prefix + name, str(partial))
            os.replace(partial, dest)  # whole or absent: a reader never sees half a blob
            return True
        except ClientError as exc:
            if error_code(exc) not in _MISSING:
                self.errors.append(f"cache fetch: {name}: {exc}")
        except (BotoCoreError, Boto3Error, OSError) as exc:  # download_file: RetriesExceededError
            self.errors.append(f"cache fetch: {name}: {exc}")
        finally:
            partial.unlink(missing_ok=True)
        return False

    def push(self, name: str, path: Path) -> None:
        try:
            self.s3.upload_file(str(path), self.bucket, self.prefix + name)
        except (ClientError, BotoCoreError, Boto3Error, OSError) as exc:  # S3UploadFailedError
            self.errors.append(f"cache push: {name}: {exc}")


class RuntimeSecrets:
    """The index URL and the cache's HMAC key, read when a build needs them, never from the
    function's configuration (anyone allowed GetFunctionConfiguration could read that).

    Powertools' parameters utility keeps each value for SECRET_MAX_AGE_S, so a rotated secret
    reaches warm containers within that time and a burst of builds makes one call."""

    def __init__(
        self, secretsmanager: Any, ssm: Any, index_secret: str, cache_key_secret: str
    ) -> None:
        self.index_secret = index_secret
        self.cache_key_secret = cache_key_secret
        self.clients = (secretsmanager, ssm)
        self._providers: tuple[Any, Any] | None = None

    def _provider(self, secrets_manager: bool) -> Any:
        """Powertools' providers over our clients, made on first use (Lambda's init stays short)."""
        if self._providers is None:
            from aws_lambda_powertools.utilities.parameters import SecretsProvider, SSMProvider

            secretsmanager, ssm = self.clients
            self._providers = (
                SecretsProvider(boto3_client=secretsmanager) if secretsmanager else None,
                SSMProvider(boto3_client=ssm) if ssm else None,
            )
        return self._providers[0 if secrets_manager else 1]

    def _read(self, name: str, what: str, variable: str) -> str | bytes:
        from aws_lambda_powertools.utilities.parameters.exceptions import GetParameterError

        # An SSM parameter by ARN or by path ("/..."); anything else is a Secrets Manager secret,
        # by ARN or by name (GetSecretValue takes either).
        secrets_manager = not (name.startswith("/") or ":ssm:" in name.split(":parameter/")[0])
        provider = self._provider(secrets_manager)
        if provider is None:
            raise ConfigurationError(f"The builder has no client to read {what} ({variable}).")
        try:
            if secrets_manager:
                value = provider.get(name, max_age=SECRET_MAX_AGE_S)
            else:  # an SSM SecureString, by name or ARN
                value = provider.get(name, decrypt=True, max_age=SECRET_MAX_AGE_S)
        except GetParameterError as exc:
            code = error_code(exc)
            if code in _PERMISSION:
                raise ConfigurationError(
                    f"Reading {what} ({variable} = {name}) was denied ({code}): "
                    "grant the builder's role read on it (template.yaml)."
                ) from None
            if code in {"ResourceNotFoundException", "ParameterNotFound"}:
                raise ConfigurationError(
                    f"{what} {name} ({variable}) does not exist: create it, or "
                    "fix the stack parameter that names it."
                ) from None
            # Only the code: a provider's message could quote what it read.
            raise TransientError(
                f"Reading {what} ({name}) failed: {code or type(exc.__context__).__name__}"
            ) from None
        if not isinstance(value, str | bytes) or not value.strip():
            raise ConfigurationError(f"{what} {name} ({variable}) is empty or not text.")
        return value

    def index_url(self) -> str:
        """The operator's package index URL; "" = the installer's default index."""
        if not self.index_secret:
            return ""
        value = self._read(self.index_secret, "The package index secret", "PACKAGE_INDEX_SECRET")
        url = (value.decode() if isinstance(value, bytes) else value).strip()
        register_secret(url)  # out of every report, event, log line and error from now on
        return url

    def cache_key(self) -> bytes | None:
        """The HMAC key of cache entries; None = no key, so no shared (S3) cache level."""
        if not self.cache_key_secret:
            return None
        value = self._read(self.cache_key_secret, "The cache key secret", "CACHE_KEY_SECRET")
        key = value if isinstance(value, bytes) else value.encode()
        if len(key) < MIN_CACHE_KEY_BYTES:
            raise ConfigurationError(
                f"The cache key secret {self.cache_key_secret} holds "
                f"{len(key)} bytes: give it at least {MIN_CACHE_KEY_BYTES}."
            )
        return key


class SsmPointer:
    def __init__(self, client: Any, prefix: str) -> None:
        self.client = client
        self.prefix = prefix

    def name(self, layer_name: str) -> str:
        return f"{self.prefix}/{layer_name}"

    def get(self, layer_name: str) -> str | None:
        with aws_errors(f"Reading parameter {self.name(layer_name)}"):
            try:
                return self.client.get_parameter(Name=self.name(layer_name))["Parameter"]["Value"]
            except self.client.exceptions.ParameterNotFound:
                return None

    def put(self, layer_name: str, version_arn: str) -> None:
        with aws_errors(f"Writing parameter {self.name(layer_name)}"):
            self.client.put_parameter(
                Name=self.name(layer_name),
                Value=version_arn,
                Type="String",
                Overwrite=True,
                Description=f"Latest good version of layer {layer_name}",
            )


class EventBridgeNotifier:
    SOURCE = "layer-builder"

    def __init__(self, client: Any, bus: str) -> None:
        self.client = client
        self.bus = bus

    def emit(self, detail_type: str, detail: dict) -> None:
        with aws_errors(f"Sending '{detail_type}' to EventBridge"):
            response = self.client.put_events(
                Entries=[
                    {
                        "Source": self.SOURCE,
                        "DetailType": detail_type,
                        "EventBusName": self.bus,
                        "Detail": json.dumps(
                            redact_data(json.loads(json.dumps(detail, default=str)))
                        ),
                    }
                ]
            )
            if response.get("FailedEntryCount"):
                raise TransientError(f"EventBridge refused the event: {response['Entries']}")


@dataclass
class Adapters:
    artifacts: S3Artifacts
    layers: LambdaLayers
    functions: LambdaFunctions
    book: DynamoOrderBook
    pointer: SsmPointer
    notifier: EventBridgeNotifier
    memo: DynamoSourceMemo
    cache: S3BlobCache
    secrets: RuntimeSecrets
    #: lifecycle.py's views of layers and functions (retention and sharing after a publish).
    lifecycle_layers: Any
    catalog: Any
    #: Where uploaded code runs: the target's check function (sandbox_lambda.LambdaSandbox).
    sandbox: Any

    @classmethod
    def create(cls, settings: Settings, clients: Clients | None = None) -> Adapters:
        from .aws_lifecycle import LambdaFunctionCatalog, LambdaLayerStore  # it imports this module
        from .sandbox_lambda import LambdaSandbox

        c = clients or Clients.create()
        checks: dict[Target | str, str] = {t: n for t, n in settings.check_functions.items()}
        return cls(
            S3Artifacts(c.s3, settings.artifact_bucket),
            LambdaLayers(c.lambda_),
            LambdaFunctions(c.lambda_),
            DynamoOrderBook(c.dynamodb, settings.state_table),
            SsmPointer(c.ssm, settings.pointer_parameter_prefix),
            EventBridgeNotifier(c.events, settings.event_bus_name),
            DynamoSourceMemo(c.dynamodb, settings.state_table),
            S3BlobCache(c.s3, settings.artifact_bucket),
            RuntimeSecrets(
                c.secretsmanager, c.ssm, settings.package_index_secret, settings.cache_key_secret
            ),
            LambdaLayerStore(c.lambda_),
            LambdaFunctionCatalog(c.lambda_),
            LambdaSandbox(c.s3, settings.artifact_bucket, checks, session=c.session),
        )
