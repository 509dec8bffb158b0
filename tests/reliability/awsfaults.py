"""Fault injection at the botocore level, for clients that talk to moto over HTTP.

A `FaultInjector` registers one `before-send` handler on each client it is attached to. botocore
emits `before-send.<service>.<Operation>` right before it would send the HTTP request; a handler
that returns an `AWSResponse` replaces the response, one that raises replaces the transport
error. So everything above the wire runs for real: botocore's retry handler (standard mode in
the builder's adapters), its backoff, the error parsing, and the builder's own error handling.

Fault kinds, each in the shape the real service sends for the client's protocol:
- throttling: 400 ThrottlingException (json services), 429 TooManyRequestsException (Lambda),
  503 SlowDown (S3; S3 sends SlowDown with 503)
- server errors: 500 and 503
- a read timeout before anything reached the server (`ReadTimeoutError`)
- a lost response: the request reaches moto and takes effect, then the client sees a read
  timeout, as when a connection drops after the server processed the call

botocore sleeps between attempts (up to 20 s each for throttling). `compressed_backoff()`
records each delay botocore asks for and sleeps a fraction of it, so tests stay fast and can
still show that the backoff grew.
"""

from __future__ import annotations

import json
import threading
import time as _time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import botocore.endpoint
from botocore.awsrequest import AWSPreparedRequest, AWSResponse
from botocore.exceptions import ReadTimeoutError
from botocore.httpsession import URLLib3Session


@dataclass(frozen=True)
class Fault:
    label: str
    status: int = 0
    code: str = ""
    timeout: bool = False
    #: Send the request for real, then lose the response.
    lost_response: bool = False


def throttling(service: str) -> Fault:
    """The throttling error each service really sends."""
    if service == "s3":
        return Fault("throttled (503 SlowDown)", 503, "SlowDown")
    if service == "lambda":
        return Fault("throttled (429 TooManyRequestsException)", 429, "TooManyRequestsException")
    return Fault("throttled (400 ThrottlingException)", 400, "ThrottlingException")


HTTP_500 = Fault("HTTP 500", 500, "InternalFailure")
HTTP_503 = Fault("HTTP 503", 503, "ServiceUnavailable")
READ_TIMEOUT = Fault("read timeout", timeout=True)
LOST_RESPONSE = Fault("response lost after the call took effect", lost_response=True)


@dataclass
class Rule:
    service: str
    operation: str
    fault: Fault
    #: How many calls fail; None = every call until the rule is removed.
    times: int | None = None
    match: Callable[[AWSPreparedRequest], bool] | None = None
    injected: int = 0

    def wants(self, service: str, operation: str, request: AWSPreparedRequest) -> bool:
        if (service, operation) != (self.service, self.operation):
            return False
        if self.times is not None and self.injected >= self.times:
            return False
        return self.match is None or self.match(request)


@dataclass(frozen=True)
class Call:
    service: str
    operation: str
    url: str
    body: bytes
    fault: str  # "" when the call went through untouched


class _Raw:
    """What AWSResponse reads its body from."""

    def __init__(self, body: bytes) -> None:
        self._body = body

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self._body


def error_response(protocol: str, url: str, fault: Fault) -> AWSResponse:
    request_id = uuid.uuid4().hex
    message = f"injected fault: {fault.label}"
    if protocol == "rest-xml":
        body = (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{fault.code}</Code>'
                f"<Message>{message}</Message><RequestId>{request_id}</RequestId></Error>").encode()
        headers = {"Content-Type": "application/xml", "x-amz-request-id": request_id}
    elif protocol == "rest-json":
        body = json.dumps({"Type": "Service" if fault.status >= 500 else "User",
                           "message": message}).encode()
        headers = {"Content-Type": "application/json", "x-amzn-ErrorType": fault.code,
                   "x-amzn-RequestId": request_id}
    else:  # json 1.0 / 1.1
        body = json.dumps({"__type": fault.code, "message": message}).encode()
        headers = {"Content-Type": "application/x-amz-json-1.1", "x-amzn-RequestId": request_id}
    headers["Content-Length"] = str(len(body))
    return AWSResponse(url, fault.status, headers, _Raw(body))


class FaultInjector:
    """Fails chosen calls of chosen clients; records every call the clients make.

    Use as a context manager (or call `close()`): handlers are removed and sleeps restored.
    """

    def __init__(self) -> None:
        self.rules: list[Rule] = []
        self.calls: list[Call] = []
        self.delays: list[float] = []
        self._lock = threading.Lock()
        self._attached: list[tuple[Any, str]] = []
        self._http: URLLib3Session | None = None

    # -- set-up ---------------------------------------------------------------------------
    def attach(self, *clients: Any) -> FaultInjector:
        for client in clients:
            if any(c is client for c, _ in self._attached):
                continue
            protocol = client.meta.service_model.protocol
            unique_id = f"fault-injector-{id(self)}-{id(client)}"

            def handler(request: AWSPreparedRequest, event_name: str, _p: str = protocol,
                        **_: Any) -> AWSResponse | None:
                return self._before_send(_p, event_name, request)

            client.meta.events.register("before-send", handler, unique_id=unique_id)
            self._attached.append((client, unique_id))
        return self

    def inject(self, service: str, operation: str, fault: Fault, times: int | None = None,
               match: Callable[[AWSPreparedRequest], bool] | None = None) -> Rule:
        rule = Rule(service, operation, fault, times, match)
        with self._lock:
            self.rules.append(rule)
        return rule

    def heal(self) -> None:
        """Remove every rule: the service recovers; calls are still recorded."""
        with self._lock:
            self.rules.clear()

    def close(self) -> None:
        for client, unique_id in self._attached:
            client.meta.events.unregister("before-send", unique_id=unique_id)
        self._attached.clear()
        if self._http is not None:
            self._http.close()
            self._http = None

    def __enter__(self) -> FaultInjector:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- what happened ----------------------------------------------------------------------
    def attempts(self, service: str, operation: str) -> int:
        """Calls botocore made (retries included), failed or not."""
        return sum(1 for c in self.calls if (c.service, c.operation) == (service, operation))

    def delivered(self, service: str, operation: str) -> list[Call]:
        """Calls that reached the server and whose response reached the client."""
        return [c for c in self.calls
                if (c.service, c.operation) == (service, operation) and not c.fault]

    def injected(self) -> int:
        return sum(rule.injected for rule in self.rules)

    # -- the handler --------------------------------------------------------------------------
    def _before_send(self, protocol: str, event_name: str,
                     request: AWSPreparedRequest) -> AWSResponse | None:
        _, service, operation = event_name.split(".", 2)
        with self._lock:
            rule = next((r for r in self.rules if r.wants(service, operation, request)), None)
            if rule is not None:
                rule.injected += 1
            body = request.body if isinstance(request.body, bytes) else b""
            self.calls.append(Call(service, operation, request.url, body,
                                   rule.fault.label if rule else ""))
        if rule is None:
            return None
        if rule.fault.lost_response:
            self._send(request)
            raise ReadTimeoutError(endpoint_url=request.url)
        if rule.fault.timeout:
            raise ReadTimeoutError(endpoint_url=request.url)
        return error_response(protocol, request.url, rule.fault)

    def _send(self, request: AWSPreparedRequest) -> None:
        with self._lock:
            if self._http is None:
                self._http = URLLib3Session()
            http = self._http
        response = http.send(request)
        response.content  # drain, so the connection is reusable  # noqa: B018


class _RecordingTime:
    """Stands in for the `time` module inside botocore.endpoint, where retries sleep."""

    def __init__(self, delays: list[float], scale: float) -> None:
        self._delays = delays
        self._scale = scale

    def sleep(self, seconds: float) -> None:
        self._delays.append(seconds)
        _time.sleep(seconds * self._scale)

    def __getattr__(self, name: str) -> Any:
        return getattr(_time, name)


@contextmanager
def compressed_backoff(injector: FaultInjector, scale: float = 0.01) -> Iterator[list[float]]:
    """botocore's retry sleeps, recorded in `injector.delays` and shortened by `scale`."""
    original = botocore.endpoint.time
    botocore.endpoint.time = _RecordingTime(injector.delays, scale)  # type: ignore[assignment]
    try:
        yield injector.delays
    finally:
        botocore.endpoint.time = original

