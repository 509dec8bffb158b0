"""A local Lambda endpoint: Invoke runs local functions, every other Lambda request goes to moto.

moto cannot run a function without Docker. `LocalLambdaService` serves Lambda's Invoke API
(`POST /2015-03-31/functions/{name}/invocations`) for functions registered by name, each run by
`tools.lambda_runtime.LocalLambda` (the real awslambdaric bootstrap, a user of its own), and
forwards every other request unchanged to a `LocalAws` (moto). A boto3 client pointed here with
`AWS_ENDPOINT_URL_LAMBDA` therefore publishes layers in moto and invokes the real local check
function, exactly as the builder does in AWS.

Invocation types, as Lambda applies them
(https://docs.aws.amazon.com/lambda/latest/dg/invocation-async.html,
https://docs.aws.amazon.com/lambda/latest/dg/configuration-concurrency.html):
- RequestResponse: runs at once in a free execution environment; when the function's reserved
  concurrency is in use it answers 429 TooManyRequestsException (callers retry).
- Event: answers 202 and queues the event. At most ReservedConcurrentExecutions events run at
  once; a function error is retried up to MaximumRetryAttempts times (after `retry_delays_s`,
  Lambda's one and two minutes, shortened), and an event that still fails, or grows older than
  MaximumEventAgeInSeconds, goes to the on-failure destination (an SQS queue in moto) as
  Lambda's invocation record.
- DryRun: 204.
Each execution environment is one LocalLambda, created when needed up to the concurrency limit
(`UNRESERVED_CONCURRENCY` without a reserved value) and kept warm until the service stops.

Use from a test fixture or tools/demo.py:

    from tools.local_aws import LocalAws
    from tools.local_lambda_service import LocalLambdaService
    from tools.stack import provision

    with LocalAws() as aws, LocalLambdaService(aws) as lambdas:
        stack = provision(aws)
        # The check functions this machine can run (its own template environment only: no
        # AWS access), each as its own local Lambda with a user of its own.
        lambdas.register_check_functions(stack)
        # The builder: its Lambda calls come here (AWS_ENDPOINT_URL_LAMBDA), its checks go to
        # the check function above, everything else to moto. /tmp/... is its private /tmp.
        lambdas.register_from_stack(stack, "BuilderFunction",
                                    env={"CACHE_DIR": "/tmp/layer-builder-cache"},
                                    packages=BUILDER_PACKAGES)
        lambdas.invoke_async(stack.name("BuilderFunction"), s3_event)   # as S3 would
        lambdas.wait_idle(timeout_s=300)
        print(lambdas.stats(stack.name("BuilderFunction")))

`lambdas.env()` gives AWS_ENDPOINT_URL_LAMBDA for any other process that should invoke them.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import queue
import re
import sys
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self
from urllib.parse import unquote, urlsplit

from tools.cfn import ROOT
from tools.lambda_runtime import InvocationResult, LocalLambda, json_reply
from tools.local_aws import ACCOUNT_ID, LocalAws

INVOKE_PATH = re.compile(r"^/2015-03-31/functions/(?P<name>[^/]+)/invocations$")
#: Environments a function without reserved concurrency may have at once (the account's
#: unreserved pool, scaled to a 2-core test machine).
UNRESERVED_CONCURRENCY = 4
#: Lambda's default for MaximumEventAgeInSeconds (6 hours) and MaximumRetryAttempts.
DEFAULT_EVENT_AGE_S = 21600
DEFAULT_RETRIES = 2
#: Lambda waits one minute, then two, before retrying a failed async event; locally shorter.
DEFAULT_RETRY_DELAYS_S = (0.5, 1.0)
#: X-Amz-Log-Result carries the last 4 KB of the invocation's log.
LOG_TAIL_BYTES = 4096
CHECK_FUNCTION_DIR = ROOT / "check_function"
#: What a check function's deployment package carries besides its code: the engine's runner
#: (layer_builder), and the distributions of check_function/requirements.txt (Powertools,
#: packaging, uv for operator-allowed source builds); these until that file exists.
CHECK_BUNDLED = {"layer_builder": ROOT / "builder_function" / "layer_builder"}
CHECK_PACKAGES = ("aws-lambda-powertools", "packaging", "uv")


def check_packages() -> tuple[str, ...]:
    """The check function's distributions, as its requirements.txt locks them."""
    if not (CHECK_FUNCTION_DIR / "requirements.txt").is_file():
        return CHECK_PACKAGES
    from tools.demo import requirements  # the demo reads every function's the same way

    return requirements(CHECK_FUNCTION_DIR)
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade",
               "proxy-authenticate", "proxy-authorization"}


def check_function(name: str, **local_lambda: Any) -> LocalLambda:
    """A check function (check_function/app.py) as its own local Lambda: no AWS access, no
    environment beyond Lambda's own, a user of its own (see tools.lambda_isolation)."""
    local_lambda.setdefault("timeout_s", 300.0)
    return LocalLambda(CHECK_FUNCTION_DIR, function_name=name, packages=check_packages(),
                       bundled=CHECK_BUNDLED, **local_lambda)


class ServiceError(RuntimeError):
    """The local Lambda service was used wrongly (unknown function, unsupported destination)."""


@dataclass
class FunctionStats:
    """What happened to one function's invocations, for tests and the demo."""

    invocations: int = 0  # invocations that ran (each retry counts)
    errors: int = 0  # of those, the ones that failed
    throttled: int = 0  # synchronous invocations refused with 429
    async_queued: int = 0  # Event invocations accepted
    to_destination: int = 0  # events sent to the on-failure destination
    running: int = 0
    max_running: int = 0  # the most invocations that ran at once
    #: "errorType: errorMessage" of each failed invocation, for a test's message
    failures: list[str] = field(default_factory=list)


@dataclass
class _Event:
    payload: Any
    request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    received: float = field(default_factory=time.monotonic)
    attempts: int = 0
    last: InvocationResult | None = None


class _Function:
    """One registered function: its environments, its limit, its async queue."""

    def __init__(self, service: LocalLambdaService, name: str,
                 factory: Callable[[], LocalLambda], reserved: int | None, max_retries: int,
                 max_event_age_s: float, on_failure: str | None) -> None:
        if on_failure is not None and ":sqs:" not in on_failure:
            raise ServiceError(f"on-failure destination {on_failure}: only SQS is emulated")
        self.service, self.name, self.factory = service, name, factory
        self.limit = reserved if reserved is not None else UNRESERVED_CONCURRENCY
        if self.limit < 1:
            raise ServiceError(f"{name}: a reserved concurrency of {self.limit} never runs")
        self.max_retries, self.max_event_age_s, self.on_failure = max_retries, max_event_age_s, on_failure
        self.stats = FunctionStats()
        self.lock = threading.Condition()
        self.idle: list[LocalLambda] = []
        self.all: list[LocalLambda] = []
        self.events: queue.Queue[_Event | None] = queue.Queue()
        self.outstanding = 0  # async events queued, running or waiting for a retry
        threading.Thread(target=self._dispatch, name=f"async-{name}", daemon=True).start()

    @property
    def arn(self) -> str:
        return f"arn:aws:lambda:{self.service.aws.region}:{ACCOUNT_ID}:function:{self.name}"

    # -- environments --------------------------------------------------------------------------
    def acquire(self, wait: bool) -> LocalLambda | None:
        with self.lock:
            while self.stats.running >= self.limit:
                if not wait or self.service.closing:
                    return None
                self.lock.wait(0.1)
            self.stats.running += 1
            self.stats.max_running = max(self.stats.max_running, self.stats.running)
            environment = self.idle.pop() if self.idle else None
        if environment is None:
            try:
                environment = self.factory().__enter__()
            except BaseException:
                self.release(None)
                raise
            with self.lock:
                self.all.append(environment)
        return environment

    def release(self, environment: LocalLambda | None) -> None:
        with self.lock:
            self.stats.running -= 1
            if environment is not None:
                self.idle.append(environment)
            self.lock.notify_all()

    def run(self, environment: LocalLambda, payload: Any) -> InvocationResult:
        try:
            result = environment.invoke(payload)
        finally:
            self.release(environment)
        with self.lock:
            self.stats.invocations += 1
            if not result.ok:
                self.stats.errors += 1
                error = result.error or {}
                self.stats.failures.append(
                    f"{error.get('errorType')}: {str(error.get('errorMessage'))[:300]}")
        return result

    # -- asynchronous invocations --------------------------------------------------------------
    def enqueue(self, payload: Any) -> str:
        event = _Event(payload)
        with self.lock:
            self.stats.async_queued += 1
            self.outstanding += 1
        self.events.put(event)
        return event.request_id

    def _dispatch(self) -> None:
        while True:
            event = self.events.get()
            if event is None:
                return
            if time.monotonic() - event.received > self.max_event_age_s:
                self._give_up(event, "EventAgeExceeded")
                continue
            environment = self.acquire(wait=True)  # queued, not failed, while all are busy
            if environment is None:  # the service is closing
                self._done()
                continue
            threading.Thread(target=self._attempt, args=(environment, event), daemon=True).start()

    def _attempt(self, environment: LocalLambda, event: _Event) -> None:
        event.attempts += 1
        try:
            event.last = self.run(environment, event.payload)
        except Exception as exc:  # the environment itself broke: Lambda counts a failure
            event.last = InvocationResult(event.request_id, None, {
                "errorType": type(exc).__name__, "errorMessage": str(exc)}, 0.0, False, "")
        if event.last.ok:
            self._done()
        elif event.attempts <= self.max_retries:
            delays = self.service.retry_delays_s
            delay = delays[min(event.attempts - 1, len(delays) - 1)]
            timer = threading.Timer(delay, self.events.put, args=(event,))
            timer.daemon = True
            timer.start()
        else:
            self._give_up(event, "RetriesExhausted")

    def _give_up(self, event: _Event, condition: str) -> None:
        try:
            if self.on_failure is not None:
                self.service.send_to_destination(self, event, condition)
                with self.lock:
                    self.stats.to_destination += 1
        finally:
            self._done()

    def _done(self) -> None:
        with self.lock:
            self.outstanding -= 1
            self.lock.notify_all()

    def close(self) -> None:
        self.events.put(None)
        with self.lock:
            environments, self.all, self.idle = list(self.all), [], []
        for environment in environments:
            environment.__exit__(None, None, None)


class LocalLambdaService:
    """The HTTP endpoint; start()/stop() or a `with` block."""

    def __init__(self, aws: LocalAws, retry_delays_s: tuple[float, ...] = DEFAULT_RETRY_DELAYS_S
                 ) -> None:
        self.aws = aws
        self.retry_delays_s = retry_delays_s
        self.functions: dict[str, _Function] = {}
        self.closing = False
        self._server: _Server | None = None

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self) -> Self:
        if self._server is None:
            self.closing = False
            self._server = _Server(self)
            threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                             daemon=True).start()
        return self

    def stop(self) -> None:
        self.closing = True
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        functions, self.functions = list(self.functions.values()), {}
        for function in functions:
            function.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    @property
    def endpoint_url(self) -> str:
        if self._server is None:
            raise ServiceError("the service is not running: use `with LocalLambdaService(aws):`")
        return f"http://127.0.0.1:{self._server.server_port}"

    def env(self) -> dict[str, str]:
        """For a process whose Lambda calls should come here (boto3 reads it, botocore >= 1.31)."""
        return {"AWS_ENDPOINT_URL_LAMBDA": self.endpoint_url}

    # -- functions -----------------------------------------------------------------------------
    def register(self, name: str, factory: Callable[[], LocalLambda], *,
                 reserved: int | None = None, max_retries: int = DEFAULT_RETRIES,
                 max_event_age_s: float = DEFAULT_EVENT_AGE_S,
                 on_failure: str | None = None) -> None:
        """Serve `name` with execution environments made by `factory` (a LocalLambda, not yet
        entered); `reserved`: ReservedConcurrentExecutions; the rest: its EventInvokeConfig."""
        if name in self.functions:
            raise ServiceError(f"{name} is already registered")
        self.functions[name] = _Function(self, name, factory, reserved, max_retries,
                                         max_event_age_s, on_failure)

    def register_from_stack(self, stack: Any, logical_id: str, *, env: Mapping[str, str] | None = None,
                            reserved: int | None = None, aws_access: bool = True,
                            **local_lambda: Any) -> str:
        """Register a function of a `tools.stack.LocalStack` as the stack deployed it into moto:
        handler, environment, timeout, memory, ReservedConcurrentExecutions (unless `reserved`
        is given) and its event invoke config (retries, event age, on-failure destination).
        `aws_access`: also the local AWS endpoint and credentials, and this service as its Lambda
        endpoint (a check function gets neither: it needs no AWS access). Extra keyword
        arguments go to LocalLambda. Returns the function's name."""
        name = stack.name(logical_id)
        config = stack.configuration(logical_id)
        if aws_access:
            variables = {**stack.environment(logical_id), **self.env()}
        else:
            variables = {**stack.template_environment(logical_id), "AWS_LAMBDA_FUNCTION_NAME": name}
        variables.update(env or {})
        settings = {**stack.function_settings(logical_id), **local_lambda}
        code, handler = stack.code_dir(logical_id), config.get("Handler") or "app.handler"
        lam = self.aws.client("lambda")
        if reserved is None:
            configured = lam.get_function_concurrency(FunctionName=name)
            reserved = configured.get("ReservedConcurrentExecutions")
        try:
            invoke = lam.get_function_event_invoke_config(FunctionName=name)
        except lam.exceptions.ResourceNotFoundException:
            invoke = {}
        destination = invoke.get("DestinationConfig", {}).get("OnFailure", {}).get("Destination")
        self.register(
            name, lambda: LocalLambda(code, handler=handler, env=variables, **settings),
            reserved=None if reserved is None else int(reserved),
            max_retries=int(invoke.get("MaximumRetryAttempts", DEFAULT_RETRIES)),
            max_event_age_s=float(invoke.get("MaximumEventAgeInSeconds", DEFAULT_EVENT_AGE_S)),
            on_failure=destination)
        return name

    def register_check_functions(self, stack: Any, **local_lambda: Any) -> dict[str, str]:
        """Every check function of the stack this machine can run (the host's architecture,
        the local runtime's Python), as check_function() makes them; returns target → name.
        Others stay unregistered: invoking one reaches moto, which cannot run it."""
        registered = {}
        for logical_id in stack.code_dirs:
            if stack.code_dir(logical_id).resolve() != CHECK_FUNCTION_DIR.resolve() \
                    or logical_id in stack.deployment.not_in_this_stack:  # target not enabled
                continue
            config = stack.configuration(logical_id)
            arch = (config.get("Architectures") or ["x86_64"])[0]
            if config.get("Runtime") != "python3.13" or \
                    {"x86_64": "x86_64", "arm64": "aarch64"}[arch] != os.uname().machine:
                continue
            name = self.register_from_stack(
                stack, logical_id, aws_access=False, packages=check_packages(),
                bundled=CHECK_BUNDLED, **local_lambda)
            registered[f"{config['Runtime']}/{arch}"] = name
        return registered

    def _function(self, name: str) -> _Function:
        try:
            return self.functions[name]
        except KeyError:
            raise ServiceError(f"{name} is not registered with the local Lambda service") from None

    def invoke(self, name: str, payload: Any) -> InvocationResult | None:
        """A RequestResponse invocation from this process; None when throttled."""
        function = self._function(name)
        environment = function.acquire(wait=False)
        if environment is None:
            with function.lock:
                function.stats.throttled += 1
            return None
        return function.run(environment, payload)

    def invoke_async(self, name: str, payload: Any) -> str:
        """An Event invocation (as S3 makes one); returns its request id."""
        return self._function(name).enqueue(payload)

    def environments(self, name: str) -> list[LocalLambda]:
        """The function's execution environments made so far (its users, /tmp, processes)."""
        function = self._function(name)
        with function.lock:
            return list(function.all)

    def stats(self, name: str) -> FunctionStats:
        function = self._function(name)
        with function.lock:
            return FunctionStats(**{**vars(function.stats),
                                    "failures": list(function.stats.failures)})

    def wait_idle(self, timeout_s: float) -> bool:
        """Wait until no async event is queued, running or waiting for a retry."""
        deadline = time.monotonic() + timeout_s
        for function in list(self.functions.values()):
            with function.lock:
                while function.outstanding:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return False
                    function.lock.wait(min(left, 0.1))
        return True

    def send_to_destination(self, function: _Function, event: _Event, condition: str) -> None:
        """Lambda's invocation record, sent to the on-failure SQS queue in moto."""
        assert function.on_failure is not None
        sqs = self.aws.client("sqs")
        queue_name = function.on_failure.rsplit(":", 1)[-1]
        url = sqs.get_queue_url(QueueName=queue_name)["QueueUrl"]
        error = event.last.error if event.last is not None else None
        record = {
            "version": "1.0",
            "timestamp": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "requestContext": {"requestId": event.request_id, "functionArn": f"{function.arn}:$LATEST",
                               "condition": condition, "approximateInvokeCount": event.attempts},
            "requestPayload": event.payload,
            "responseContext": {"statusCode": 200, "executedVersion": "$LATEST",
                                **({"functionError": "Unhandled"} if error else {})},
            "responsePayload": error,
        }
        sqs.send_message(QueueUrl=url, MessageBody=json.dumps(record, default=str))


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, service: LocalLambdaService) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.service = service

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], ConnectionError):
            return  # the caller gave up (its read timeout): Lambda finishes the run all the same
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server: _Server

    def _body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        match = INVOKE_PATH.match(urlsplit(self.path).path)
        name = _function_name(unquote(match["name"])) if match else None
        if name is None or name not in self.server.service.functions:
            self._forward(self._body())
            return
        body = self._body()
        try:
            payload = json.loads(body or b"{}")
        except ValueError:
            self._reply(400, {"Type": "User", "message": "Could not parse request body into json"},
                        {"X-Amzn-ErrorType": "InvalidRequestContentException"})
            return
        service = self.server.service
        kind = self.headers.get("X-Amz-Invocation-Type", "RequestResponse")
        if kind == "DryRun":
            self._reply(204, b"")
        elif kind == "Event":
            service.invoke_async(name, payload)
            self._reply(202, b"", {"X-Amzn-RequestId": str(uuid.uuid4())})
        else:
            result = service.invoke(name, payload)
            if result is None:
                self._reply(429, {"Reason": "ReservedFunctionConcurrentInvocationLimitExceeded",
                                  "Type": "User", "message": "Rate Exceeded."},
                            {"X-Amzn-ErrorType": "TooManyRequestsException"})
                return
            headers = {"X-Amz-Executed-Version": "$LATEST", "X-Amzn-RequestId": result.request_id}
            if not result.ok:
                headers["X-Amz-Function-Error"] = "Unhandled"
            if self.headers.get("X-Amz-Log-Type") == "Tail":
                tail = result.logs.encode()[-LOG_TAIL_BYTES:]
                headers["X-Amz-Log-Result"] = base64.b64encode(tail).decode()
            self._reply(200, result.body, headers)

    def do_GET(self) -> None:  # noqa: N802
        self._forward(b"")

    def do_PUT(self) -> None:  # noqa: N802
        self._forward(self._body())

    def do_DELETE(self) -> None:  # noqa: N802
        self._forward(self._body())

    def do_PATCH(self) -> None:  # noqa: N802
        self._forward(self._body())

    def do_HEAD(self) -> None:  # noqa: N802
        self._forward(b"")

    def _forward(self, body: bytes) -> None:
        """The request, unchanged, to moto; its answer, unchanged, back."""
        target = urlsplit(self.server.service.aws.endpoint_url)
        connection = http.client.HTTPConnection(target.hostname, target.port, timeout=120)
        try:
            headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
            connection.request(self.command, self.path, body=body or None, headers=headers)
            response = connection.getresponse()
            data = response.read()
            self.send_response(response.status, response.reason)
            for key, value in response.getheaders():
                if key.lower() not in _HOP_BY_HOP and key.lower() != "content-length":
                    self.send_header(key, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)
        finally:
            connection.close()

    def _reply(self, code: int, body: bytes | dict[str, Any],
               headers: Mapping[str, str] | None = None) -> None:
        json_reply(self, code, body, headers)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def _function_name(identifier: str) -> str:
    """A function name, from a name, an ARN or a partial ARN (a qualifier is ignored)."""
    parts = identifier.split(":")
    if "function" in parts:
        return parts[parts.index("function") + 1]
    return parts[0]
