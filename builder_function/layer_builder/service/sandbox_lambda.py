"""`LambdaSandbox`: the builder's `Sandbox`, backed by one check function per target.

The upload's code never runs in the builder. For each check, compile or sdist build the builder
puts the input under `checks/<unique id>/` in the artifact bucket, pre-signs a GET for it (and a
PUT for a result), invokes the target's check function synchronously, and deletes the
`checks/<id>/` objects afterwards. The check function holds no credential: the URLs are its only
access, to those objects only, for URL_EXPIRY_S.

A check function ran hostile code, so everything it answers is parsed strictly: a verdict by
`Verdict.from_json`, results by their sha256 and names. A function error, a timeout, a throttle
that outlasts the deadline, or anything malformed is a `SandboxError` (transient: Lambda retries
the build), never a pass. Errors of the build itself come back as data with their kind and
whether they are permanent (a failed source build is refused, not retried).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import shutil
import tempfile
import time
import uuid
import zipfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from packaging.utils import InvalidWheelFilename, canonicalize_name, parse_wheel_filename
from packaging.version import InvalidVersion, Version

from .. import errors, limits
from ..errors import InputError, LayerBuildError, SourceBuildError, TransientError
from ..sandbox import (
    MAX_MESSAGE_CHARS,
    MAX_VERDICT_BYTES,
    Candidate,
    CheckSpec,
    Layer,
    SandboxError,
    Verdict,
)
from ..target import Target
from .aws import error_code

CHECKS_PREFIX = "checks/"
#: How long the check function's pre-signed URLs stay valid (it has nothing else).
URL_EXPIRY_S = 3600
#: Of the time left, what the function does not get for the action itself: its cold start (init
#: is capped at 10 s) and the transfers (at most a quarter of the time left).
INVOKE_OVERHEAD_S = 30.0
#: Without a deadline: the longest a Lambda invocation can take.
DEFAULT_TIMEOUT_S = 900.0
#: Largest result the builder accepts (a zip of bytecode, a wheel).
MAX_RESULT_BYTES = limits.MAX_UNZIPPED_BYTES
_PYC = re.compile(r"(?:(?P<dir>.+)/)?__pycache__/(?P<stem>[^/.]+)\.[A-Za-z0-9_-]+\.pyc")
_THROTTLED = {"TooManyRequestsException", "ThrottlingException", "ResourceNotReadyException"}


def target_key(target: Target) -> str:
    """The CHECK_FUNCTIONS key of a target: `python3.13/x86_64`."""
    return f"{target.runtime}/{target.arch}"


def _error_classes() -> dict[str, type[LayerBuildError]]:
    found: dict[str, type[LayerBuildError]] = {}
    todo: list[type[LayerBuildError]] = [LayerBuildError]
    while todo:
        cls = todo.pop()
        found.setdefault(cls.kind, cls)
        todo += cls.__subclasses__()
    return found


class LambdaSandbox:
    """The Sandbox protocol over check functions.

    s3         the builder's S3 client (puts inputs, pre-signs, fetches results, deletes them)
    bucket     the artifact bucket (its `checks/` prefix is transient sandbox I/O)
    functions  target (a Target, or its key `python3.13/x86_64`) → check function name, as
               CHECK_FUNCTIONS maps them
    session    the boto3 session for Lambda clients (one per read timeout)
    lambda_endpoint_url, invoke_overhead_s   for tests: where Lambda is, the slack on timeouts
    """

    def __init__(
        self,
        s3: Any,
        bucket: str,
        functions: Mapping[Target | str, str],
        *,
        session: boto3.session.Session | None = None,
        lambda_endpoint_url: str | None = None,
        invoke_overhead_s: float = INVOKE_OVERHEAD_S,
    ) -> None:
        self.s3 = s3
        self.bucket = bucket
        self.functions = {
            target_key(t) if isinstance(t, Target) else t: name for t, name in functions.items()
        }
        self.session = session or boto3.session.Session()
        self.lambda_endpoint_url = lambda_endpoint_url
        self.invoke_overhead_s = invoke_overhead_s
        self._clients: dict[int, Any] = {}
        #: Leftover `checks/` objects that could not be deleted (a lifecycle rule expires them).
        self.errors: list[str] = []

    # -- the protocol ------------------------------------------------------------------------
    def native(self, target: Target) -> bool:
        return target_key(target) in self.functions

    def check(
        self, layer: Layer, spec: CheckSpec, target: Target, timeout: float | None
    ) -> Verdict:
        layer_zip = layer.zip() if isinstance(layer, Candidate) else layer  # it travels as a file
        with self._exchange(target, timeout) as exchange:
            event = {
                "action": "check",
                "layer_url": exchange.get_url("layer.zip", layer_zip),
                "spec": spec.to_json(),
                "timeout": exchange.timeout,
            }
            raw, payload = exchange.invoke(event)
            return Verdict.from_json(raw)

    def compile(self, sources: Path, target: Target, timeout: float | None) -> dict[str, bytes]:
        with self._exchange(target, timeout) as exchange:
            event = {
                "action": "compile",
                "sources_url": exchange.get_url("sources.zip", sources),
                "result_url": exchange.put_url("bytecode.zip"),
                "timeout": exchange.timeout,
            }
            _, payload = exchange.invoke(event)
            result = exchange.result("bytecode.zip", payload)
            return _bytecode(result, _sources(sources), exchange.function)

    def build_sdist(
        self,
        sdist: Path,
        name: str,
        version: str,
        target: Target,
        dest: Path,
        timeout: float | None,
    ) -> Path:
        with self._exchange(target, timeout) as exchange:
            event = {
                "action": "build_sdist",
                "sdist_url": exchange.get_url("sdist", sdist),
                "filename": sdist.name,
                "name": name,
                "version": version,
                "result_url": exchange.put_url("wheel"),
                "timeout": exchange.timeout,
            }
            _, payload = exchange.invoke(event)
            filename = _check_wheel_name(payload.get("filename"), name, version)
            wheel = exchange.result("wheel", payload)
            dest.mkdir(parents=True, exist_ok=True)
            return Path(shutil.move(wheel, dest / filename))

    # -- plumbing ----------------------------------------------------------------------------
    @contextmanager
    def _exchange(self, target: Target, timeout: float | None) -> Iterator[_Exchange]:
        function = self.functions.get(target_key(target))
        if function is None:
            raise errors.ConfigurationError(
                f"No check function for {target_key(target)}: deploy the stack with this target "
                f"enabled (CHECK_FUNCTIONS has {', '.join(sorted(self.functions)) or 'none'})."
            )
        prefix = f"{CHECKS_PREFIX}{uuid.uuid4().hex}/"
        scratch = Path(tempfile.mkdtemp(prefix="sandbox-io-"))
        exchange = _Exchange(self, function, prefix, scratch, timeout)
        try:
            yield exchange
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
            self._delete(prefix)

    def client(self, read_timeout: float) -> Any:
        """A Lambda client whose read timeout is the time left (whole seconds, cached)."""
        seconds = max(int(math.ceil(read_timeout)), 1)
        if seconds not in self._clients:
            if len(self._clients) >= 8:  # a build makes a few calls; keep the newest
                self._clients.clear()
            # One attempt per call: a retry of a read timeout would overrun the deadline, and
            # throttles are retried by _Exchange.invoke within it.
            config = Config(
                read_timeout=seconds,
                connect_timeout=10,
                retries={"total_max_attempts": 1, "mode": "standard"},
            )
            self._clients[seconds] = self.session.client(
                "lambda", config=config, endpoint_url=self.lambda_endpoint_url
            )
        return self._clients[seconds]

    def _delete(self, prefix: str) -> None:
        try:
            listed = self.s3.list_objects_v2(Bucket=self.bucket, Prefix=prefix).get("Contents", [])
            if listed:
                self.s3.delete_objects(
                    Bucket=self.bucket,
                    Delete={"Objects": [{"Key": item["Key"]} for item in listed], "Quiet": True},
                )
        except (ClientError, BotoCoreError) as exc:
            self.errors.append(f"could not delete s3://{self.bucket}/{prefix}: {exc}")


class _Exchange:
    """One action: its objects under `prefix`, its deadline, its invocation."""

    def __init__(
        self,
        sandbox: LambdaSandbox,
        function: str,
        prefix: str,
        scratch: Path,
        timeout: float | None,
    ) -> None:
        self.sandbox, self.function, self.prefix, self.scratch = sandbox, function, prefix, scratch
        left = DEFAULT_TIMEOUT_S if timeout is None else max(float(timeout), 0.001)
        #: The whole exchange ends by the build's deadline; the action gets what is left of it
        #: after the overhead, and says so in its event.
        self.deadline = time.monotonic() + left
        self.timeout = left - min(sandbox.invoke_overhead_s, left / 4)

    def _aws(self, action: str, call: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return call(*args, **kwargs)
        except (ClientError, BotoCoreError) as exc:
            raise SandboxError(
                f"{action} for check function {self.function} failed: {exc}"
            ) from None

    def get_url(self, name: str, path: Path) -> str:
        s3, bucket, key = self.sandbox.s3, self.sandbox.bucket, self.prefix + name
        self._aws(f"Uploading {path.name}", s3.upload_file, str(path), bucket, key)
        return s3.generate_presigned_url(
            "get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=URL_EXPIRY_S
        )

    def put_url(self, name: str) -> str:
        return self.sandbox.s3.generate_presigned_url(
            "put_object",
            Params={"Bucket": self.sandbox.bucket, "Key": self.prefix + name},
            ExpiresIn=URL_EXPIRY_S,
        )

    def invoke(self, event: dict[str, Any]) -> tuple[bytes, dict[str, Any]]:
        """(raw payload, parsed payload) of a successful invocation; raises otherwise."""
        body = json.dumps(event).encode()
        delay = 0.5
        while True:
            left = self.deadline - time.monotonic()
            if left <= 0:
                raise SandboxError(f"Check function {self.function} did not answer in time.")
            try:
                response = self.sandbox.client(left).invoke(
                    FunctionName=self.function, InvocationType="RequestResponse", Payload=body
                )
                break
            except ClientError as exc:
                code = error_code(exc)
                if code in _THROTTLED and left > delay:
                    time.sleep(delay)  # its concurrency is full: wait, within the deadline
                    delay = min(delay * 2, 10.0)
                    continue
                raise SandboxError(
                    f"Invoking check function {self.function} failed: {exc}"
                ) from None
            except BotoCoreError as exc:  # read timeout, connection refused...
                raise SandboxError(
                    f"Invoking check function {self.function} failed: {exc}"
                ) from None
        with response["Payload"] as stream:
            raw = stream.read(MAX_VERDICT_BYTES + 1)
        if len(raw) > MAX_VERDICT_BYTES:
            raise SandboxError(
                f"Check function {self.function} answered more than {MAX_VERDICT_BYTES:,} bytes."
            )
        if response.get("FunctionError"):
            raise SandboxError(f"Check function {self.function} failed: {_function_error(raw)}")
        try:
            payload = json.loads(raw)
        except ValueError:
            raise SandboxError(
                f"Check function {self.function} answered something that is not JSON."
            ) from None
        if not isinstance(payload, dict):
            raise SandboxError(
                f"Check function {self.function} answered a JSON {type(payload).__name__}, "
                "not an object."
            )
        _raise_reported_error(payload, self.function)
        return raw, payload

    def result(self, name: str, payload: dict[str, Any]) -> Path:
        """The object the function PUT under `name`, checked against the sha256 it reported."""
        digest = payload.get("sha256")
        if payload.get("ok") is not True or not isinstance(digest, str):
            raise SandboxError(f"Check function {self.function} answered no result.")
        s3, key = self.sandbox.s3, self.prefix + name
        head = self._aws("Reading the result", s3.head_object, Bucket=self.sandbox.bucket, Key=key)
        if head["ContentLength"] > MAX_RESULT_BYTES:
            raise SandboxError(
                f"Check function {self.function} stored {head['ContentLength']:,} "
                f"bytes, over {MAX_RESULT_BYTES:,}."
            )
        path = self.scratch / name
        self._aws("Reading the result", s3.download_file, self.sandbox.bucket, key, str(path))
        with open(path, "rb") as f:
            if hashlib.file_digest(f, "sha256").hexdigest() != digest:
                raise SandboxError(
                    f"Check function {self.function}'s result does not match the "
                    "sha256 it reported."
                )
        return path


def _function_error(raw: bytes) -> str:
    try:
        document = json.loads(raw)
    except ValueError:
        return raw[:MAX_MESSAGE_CHARS].decode(errors="replace")
    if not isinstance(document, dict):
        return str(document)[:MAX_MESSAGE_CHARS]
    return f"{document.get('errorType', 'Error')}: {document.get('errorMessage', '')}"[
        :MAX_MESSAGE_CHARS
    ]


def _raise_reported_error(payload: dict[str, Any], function: str) -> None:
    """An error of the build itself, reported as data: re-raised with its kind; permanent ones
    (a source build that fails) are refused, the rest retried."""
    error = payload.get("error")
    if error is None:
        return
    if not isinstance(error, dict) or not isinstance(error.get("message"), str):
        raise SandboxError(f"Check function {function} answered a malformed error.")
    message = error["message"][:MAX_MESSAGE_CHARS]
    permanent = error.get("permanent") is True
    cls = _error_classes().get(str(error.get("kind")))
    if cls is None or cls.permanent != permanent:
        cls = InputError if permanent else TransientError
    if issubclass(cls, SourceBuildError):
        log = error.get("log")
        raise cls(message, log=log if isinstance(log, str) else "")
    raise cls(message)


def _sources(zip_path: Path) -> set[str]:
    with zipfile.ZipFile(zip_path) as zf:
        return {name for name in zf.namelist() if name.endswith(".py")}


def _bytecode(result: Path, sources: set[str], function: str) -> dict[str, bytes]:
    """name → bytes of the compiled zip; each name must be the pyc of a source we sent."""
    compiled: dict[str, bytes] = {}
    total = 0
    try:
        with zipfile.ZipFile(result) as zf:
            for info in zf.infolist():
                match = _PYC.fullmatch(info.filename)
                source = match and "/".join(filter(None, (match["dir"], f"{match['stem']}.py")))
                if not source or source not in sources:
                    raise SandboxError(
                        f"Check function {function} returned {info.filename!r}, "
                        "which is not the bytecode of a source it was sent."
                    )
                total += info.file_size
                if total > MAX_RESULT_BYTES:
                    raise SandboxError(
                        f"Check function {function}'s bytecode unpacks to more "
                        f"than {MAX_RESULT_BYTES:,} bytes."
                    )
                compiled[info.filename] = zf.read(info)
    except (zipfile.BadZipFile, OSError) as exc:
        raise SandboxError(
            f"Check function {function}'s bytecode is not a valid zip: {exc}"
        ) from None
    return compiled


def _check_wheel_name(filename: Any, name: str, version: str) -> str:
    """The wheel's file name the check function answered, once it is that package's wheel."""
    if not isinstance(filename, str) or "/" in filename:
        raise SandboxError("The check function named no wheel.")
    try:
        wheel_name, wheel_version, _, _ = parse_wheel_filename(filename)
        same = wheel_name == canonicalize_name(name) and wheel_version == Version(version)
    except (InvalidWheelFilename, InvalidVersion):
        raise SandboxError(f"The check function returned {filename!r}, not a wheel.") from None
    if not same:
        raise SourceBuildError(
            f"Building {name} {version} from source made {filename}, another "
            "name or version: check the sdist.",
            log="",
        )
    return filename
