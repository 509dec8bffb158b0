"""Run a Lambda handler locally through the real Python runtime client (awslambdaric).

AWS's runtime interface emulator is not available here, so this module implements the small
part of the Lambda Runtime API that awslambdaric's bootstrap calls (checked against
awslambdaric 4.2 and its native client, aws-lambda-cpp 0.2.6):

    GET  /2018-06-01/runtime/invocation/next            long-poll for the next event
    POST /2018-06-01/runtime/invocation/{id}/response   handler's return value
    POST /2018-06-01/runtime/invocation/{id}/error      handler raised (JSON error document)
    POST /2018-06-01/runtime/init/error                 import/init failed; the runtime exits

`LocalLambda` starts that API and ONE long-lived `python -m awslambdaric <handler>` process, so
warm invocations reuse the process exactly as in Lambda. Like Lambda, a timeout kills the process
and the next invocation starts a new one (a cold start).

Not emulated: response streaming, extensions, SnapStart, concurrency above 1, memory limits, and a
truly read-only /opt (root ignores file modes; see extract_layer_readonly).
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import queue
import shutil
import socket
import stat
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
import uuid
import zipfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import metadata
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from layer_builder.bytecode import find_interpreter
from layer_builder.target import Target
from tools.lambda_isolation import (
    FunctionUser,
    interpreter_for_users,
    isolation_available,
    peer_uid,
    prepare_private_tmp,
    private_dir,
    user_view,
)

RUNTIME_PREFIX = "/2018-06-01/runtime"
NEXT_PATH = f"{RUNTIME_PREFIX}/invocation/next"
INIT_ERROR_PATH = f"{RUNTIME_PREFIX}/init/error"
INVOCATION_PREFIX = f"{RUNTIME_PREFIX}/invocation/"
ERROR_TYPE_HEADER = "Lambda-Runtime-Function-Error-Type"

# moto's fixed account id, so the function ARN matches what a LocalAws server reports.
ACCOUNT_ID = "123456789012"
LAMBDA_PYTHON = (3, 13)  # the functions' runtime, python3.13
INIT_TIMEOUT_S = 10.0  # Lambda's limit for the init phase (imports, module-level code)
# "If all three tasks do not complete within 10 seconds, Lambda retries the Init phase at the time
# of the first function invocation with the configured function timeout"
# (https://docs.aws.amazon.com/lambda/latest/dg/lambda-runtime-environment.html). The harness
# lets the running init go on instead of starting it again: an init may take INIT_TIMEOUT_S plus
# the function timeout before the invocation fails. Several cold starts sharing two cores here
# take longer than one in Lambda, which gives each environment its own CPU.
PROJECT_ROOT = Path(__file__).resolve().parent.parent
# Keys the harness owns; a caller setting them would silently break the emulation.
HARNESS_ENV_KEYS = frozenset(
    {"AWS_LAMBDA_RUNTIME_API", "_HANDLER", "LAMBDA_TASK_ROOT", "PYTHONPATH"}
)
#: The machine's CA bundle and proxies: a function reaches the package index as this host does
#: (in Lambda the system bundle serves; here a proxy's CA may be needed, and uv does not read the
#: system store by default).
HOST_NETWORK_ENV = ("SSL_CERT_FILE", "SSL_CERT_DIR", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY",
                    "http_proxy", "https_proxy", "no_proxy")
# What the managed Python runtime provides besides the standard library.
MANAGED_RUNTIME_PACKAGES = ("awslambdaric", "boto3")


class LambdaHarnessError(RuntimeError):
    """The local Lambda harness could not be set up (bad argument, missing interpreter...)."""


class RuntimeNotRunningError(LambdaHarnessError):
    """invoke() was called outside the `with LocalLambda(...)` block."""


# --------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class InvocationResult:
    """What Lambda's Invoke API would return, plus local diagnostics.

    `payload` is the decoded response body: the handler's return value, or on failure the error
    document (errorType, errorMessage, stackTrace...) exactly as Lambda returns it. `error` is
    that same document when the invocation failed and None otherwise. `raw` is the response
    body as the runtime posted it (a runtime may post bytes that are not JSON; `payload` is then
    that text).
    """

    request_id: str
    payload: Any
    error: dict[str, Any] | None
    duration_s: float  # from the runtime taking the event to its answer (Lambda's Duration)
    cold_start: bool
    logs: str  # what the runtime process wrote to stdout/stderr during this invocation
    raw: bytes = b""

    @property
    def body(self) -> bytes:
        """What Lambda's Invoke answers: the raw response, or the error document."""
        return json.dumps(self.payload).encode() if self.error is not None or not self.raw \
            else self.raw

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def error_type(self) -> str | None:
        return None if self.error is None else str(self.error.get("errorType"))


@dataclass
class _Invocation:
    request_id: str
    body: bytes
    timeout_s: float
    trace_id: str
    # Set when the runtime takes the event: like Lambda, init time does not count against it.
    picked_at: float | None = None  # time.monotonic()
    deadline_ms: int = 0  # epoch ms, sent as Lambda-Runtime-Deadline-Ms
    done: threading.Event = field(default_factory=threading.Event)
    response: bytes = b""
    failed: bool = False


# --------------------------------------------------------------------------------------------
# Runtime API server
# --------------------------------------------------------------------------------------------
class _RuntimeApiServer(ThreadingHTTPServer):
    """The Runtime API of ONE runtime process: every process start gets a new one (a new port),
    so nothing that learned an earlier address can reach the next process's events."""

    daemon_threads = True  # a long-poll blocked at shutdown must not keep the parent alive

    def __init__(self, function_arn: str, allowed_uids: frozenset[int] | None = None) -> None:
        super().__init__(("127.0.0.1", 0), _RuntimeApiHandler)
        self.function_arn = function_arn
        #: Only these users' connections are answered (None: anyone). Lambda's API at
        #: 127.0.0.1:9001 is reachable from inside its own microVM only.
        self.allowed_uids = allowed_uids
        self.pending: queue.Queue[_Invocation] = queue.Queue()
        self.in_flight: dict[str, _Invocation] = {}
        self.init_error: dict[str, Any] | None = None
        self.closing = threading.Event()
        self.lock = threading.Lock()
        self.polling = 0  # /next requests currently waiting
        self.refused: list[int | None] = []  # uids of refused connections, for the tests
        self._connections: set[Any] = set()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.server_port}"

    def allows(self, client_address: tuple[str, int]) -> bool:
        if self.allowed_uids is None:
            return True
        uid = peer_uid(client_address, ("127.0.0.1", self.server_port))
        if uid in self.allowed_uids:
            return True
        with self.lock:
            self.refused.append(uid)
        return False

    def next_invocation(self) -> _Invocation | None:
        with self.lock:
            self.polling += 1
        try:
            # Poll in slices so a blocked /next returns once the process is replaced.
            while not self.closing.is_set():
                try:
                    invocation = self.pending.get(timeout=0.1)
                except queue.Empty:
                    continue
                with self.lock:
                    self.in_flight[invocation.request_id] = invocation
                invocation.deadline_ms = int((time.time() + invocation.timeout_s) * 1000)
                invocation.picked_at = time.monotonic()
                return invocation
            return None
        finally:
            with self.lock:
                self.polling -= 1

    def is_idle(self) -> bool:
        """Is the runtime client waiting on /next?"""
        with self.lock:
            return self.polling > 0 and not self.in_flight

    def process_request(self, request: Any, client_address: Any) -> None:
        with self.lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self.lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def close(self) -> None:
        """Stop serving and cut every open connection (a kept-alive one would outlive us)."""
        self.closing.set()
        self.shutdown()
        self.server_close()
        with self.lock:
            connections = list(self._connections)
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], (ConnectionError, OSError)):
            return  # the runtime process was stopped mid-connection; expected, not news
        super().handle_error(request, client_address)

    def finish(self, request_id: str, body: bytes, failed: bool) -> bool:
        with self.lock:
            invocation = self.in_flight.pop(request_id, None)
        if invocation is None:
            return False
        invocation.response, invocation.failed = body, failed
        invocation.done.set()
        return True

    def drop_pending(self) -> None:
        with self.lock:
            self.in_flight.clear()
        while True:
            try:
                self.pending.get_nowait()
            except queue.Empty:
                return


class _RuntimeApiHandler(BaseHTTPRequestHandler):
    # aws-lambda-cpp keeps one HTTP/1.1 connection open; an HTTP/1.0 reply or a missing
    # Content-Type makes the runtime client crash.
    protocol_version = "HTTP/1.1"
    # Headers and body go out as two writes; with Nagle on, the client's delayed ACK adds
    # ~40 ms to every call.
    disable_nagle_algorithm = True
    server: _RuntimeApiServer

    def _stranger(self) -> bool:
        """Refuse (403) a connection from another user: once per connection, it is kept alive."""
        if getattr(self, "_allowed", None) is None:
            self._allowed = self.server.allows(self.client_address)
        if not self._allowed:
            self.close_connection = True
            self._reply(403, {"errorType": "AccessDenied",
                              "errorMessage": "this Runtime API belongs to another function"})
        return not self._allowed

    def do_GET(self) -> None:
        if self._stranger():
            return
        if self.path != NEXT_PATH:
            self._reply(404, {"errorType": "NotFound", "errorMessage": f"no route GET {self.path}"})
            return
        invocation = self.server.next_invocation()
        if invocation is None:
            self._reply(
                503,
                {
                    "errorType": "ShuttingDown",
                    "errorMessage": "this runtime process was replaced or the harness is closing",
                },
            )
            return
        self._reply(
            200,
            invocation.body,
            {
                "Lambda-Runtime-Aws-Request-Id": invocation.request_id,
                "Lambda-Runtime-Deadline-Ms": str(invocation.deadline_ms),
                "Lambda-Runtime-Invoked-Function-Arn": self.server.function_arn,
                "Lambda-Runtime-Trace-Id": invocation.trace_id,
            },
        )

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self._stranger():
            return
        if self.path == INIT_ERROR_PATH:
            self.server.init_error = _error_document(body, self.headers.get(ERROR_TYPE_HEADER))
            self._reply(202, {"status": "OK"})
            return
        request_id, _, action = self.path.removeprefix(INVOCATION_PREFIX).partition("/")
        if not self.path.startswith(INVOCATION_PREFIX) or action not in ("response", "error"):
            self._reply(
                404, {"errorType": "NotFound", "errorMessage": f"no route POST {self.path}"}
            )
        elif self.server.finish(request_id, body, failed=action == "error"):
            self._reply(202, {"status": "OK"})
        else:
            # Late answer after a timeout, or a made-up id: Lambda rejects it the same way.
            self._reply(400, {"errorType": "InvalidRequestID", "errorMessage": request_id})

    def _reply(
        self, code: int, body: bytes | dict[str, Any], headers: Mapping[str, str] | None = None
    ) -> None:
        json_reply(self, code, body, headers)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # one line per long-poll would drown the function's own logs


def json_reply(handler: BaseHTTPRequestHandler, code: int, body: bytes | dict[str, Any],
               headers: Mapping[str, str] | None = None) -> None:
    """An HTTP/1.1 answer with Content-Type and Content-Length (the runtime client needs both)."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    handler.send_response(code)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(data)))
    for key, value in (headers or {}).items():
        handler.send_header(key, value)
    handler.end_headers()
    handler.wfile.write(data)


def _error_document(body: bytes, error_type: str | None) -> dict[str, Any]:
    try:
        document = json.loads(body)
    except ValueError:
        document = None
    if not isinstance(document, dict):
        document = {"errorMessage": body.decode(errors="replace")}
    if error_type:
        document.setdefault("errorType", error_type)
    return document


# --------------------------------------------------------------------------------------------
# Interpreter and sys.path
# --------------------------------------------------------------------------------------------
def find_python313() -> str:
    """The interpreter for the runtime process: Python 3.13 like the functions' runtime, found as
    the builder finds its target interpreter; else sys.executable (the venv's compiled modules
    then fail to load, which shows in LocalLambda.logs())."""
    return find_interpreter(Target("python3.13")) or sys.executable


def project_site_packages() -> Path:
    """The project venv's site-packages (awslambdaric, boto3, the functions' requirements)."""
    if sys.prefix != sys.base_prefix and sys.version_info[:2] == LAMBDA_PYTHON:
        return Path(sysconfig.get_paths()["purelib"])
    major, minor = LAMBDA_PYTHON
    path = PROJECT_ROOT / ".venv" / "lib" / f"python{major}.{minor}" / "site-packages"
    if not path.is_dir():
        raise LambdaHarnessError(
            f"{path} does not exist: run `make venv` to create the project venv"
        )
    return path


def link_distributions(requirements: Iterable[str], site_packages: Path, dest: Path) -> Path:
    """Populate `dest` with the given distributions and their dependencies only, as a
    deployment package holds them: hard links (copies across file systems) of their top-level
    entries, and their console scripts under `<name>-<version>.data/scripts/` as `sam build`
    leaves them (that is where the builder finds uv in Lambda).

    This isolates a function from the rest of the dev venv (moto, pytest...), so a test proves
    that code or a layer brings its own dependencies. Requirements are PEP 508 strings; extras
    pull in the extras' dependencies. Real files, not symlinks: code that resolves its own path
    (uv's finder does) must stay inside the package.
    """
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    done: set[tuple[str, str]] = set()
    todo = [Requirement(r) for r in requirements]
    dest.mkdir(parents=True, exist_ok=True)
    while todo:
        requirement = todo.pop()
        name = canonicalize_name(requirement.name)
        # discover(name=) matches dist-info directory names, without reading every METADATA.
        dist = next(
            iter(metadata.Distribution.discover(name=name, path=[str(site_packages)])), None
        )
        if dist is None:
            raise LambdaHarnessError(
                f"{requirement.name} is not installed in {site_packages}: add it to the "
                "project's dev dependencies or drop it from `packages`"
            )
        extras = {""} | {canonicalize_name(e) for e in requirement.extras}
        new = [e for e in extras if (name, e) not in done]
        if not new:
            continue
        done.update((name, e) for e in new)
        _link_top_level(dist, site_packages, dest)
        for line in dist.requires or []:
            dependency = Requirement(line)
            if dependency.marker is None or any(
                dependency.marker.evaluate({"extra": e}) for e in new
            ):
                todo.append(dependency)
    return dest


def _copy_linked(source: Path, target: Path) -> None:
    linked = subprocess.run(["cp", "-a", "--link", str(source), str(target)],
                            capture_output=True, check=False)
    if linked.returncode != 0:  # another file system
        if target.is_dir():
            shutil.rmtree(target)
        subprocess.run(["cp", "-a", str(source), str(target)], check=True, capture_output=True)


def _link_top_level(dist: metadata.Distribution, site_packages: Path, dest: Path) -> None:
    # The RECORD's first column, read directly: dist.files builds an object per file, which
    # costs a fifth of a second for botocore alone.
    rows = csv.reader((dist.read_text("RECORD") or "").splitlines())
    paths = {row[0] for row in rows if row}
    for entry in {path.split("/")[0] for path in paths}:
        source = site_packages / entry
        if entry in ("..", "__pycache__") or not source.exists():
            continue  # console scripts live outside site-packages: below
        target = dest / entry
        if not target.exists():
            _copy_linked(source, target)
    scripts = [p for p in paths if p.startswith("../../../bin/")]
    data = dest / f"{dist.metadata['Name']}-{dist.version}.data" / "scripts"
    for script in scripts:
        source = (site_packages / script).resolve()
        if source.is_file() and not (data / source.name).exists():
            data.mkdir(parents=True, exist_ok=True)
            _copy_linked(source, data / source.name)


def shared_runtime_packages(requirements: Sequence[str], site_packages: Path) -> Path:
    """link_distributions, made once per set of requirements and venv state for every test
    worker (a staging dir renamed into place), readable by every function's user."""
    from tools.lambda_isolation import harness_root

    stamp = site_packages.stat().st_mtime_ns
    key = hashlib.sha256(f"{sorted(requirements)}|{site_packages}|{stamp}".encode()).hexdigest()
    views = harness_root() / "views"
    views.mkdir(mode=0o755, exist_ok=True)
    final = views / f"runtime-packages-{key[:16]}"
    if final.is_dir():
        return final
    staging = Path(tempfile.mkdtemp(prefix=f".{final.name}-", dir=views))
    built = link_distributions(requirements, site_packages, staging / "packages")
    built.chmod(0o755)
    try:
        built.rename(final)
    except OSError:  # another worker made the same one first
        pass
    shutil.rmtree(staging, ignore_errors=True)
    return final


# --------------------------------------------------------------------------------------------
# Layers
# --------------------------------------------------------------------------------------------
def extract_layer_readonly(layer_zip: Path, dest: Path) -> Path:
    """Unzip a layer as Lambda mounts it at /opt and return dest/"python" (= /opt/python).

    Every file and directory loses its write bits, as /opt is read-only in Lambda. Root ignores
    file modes, so code importing from here must run with PYTHONDONTWRITEBYTECODE=1 (LocalLambda
    sets it when given layer_dirs) or Python would write __pycache__ where Lambda cannot.
    """
    dest.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(layer_zip) as archive:
        archive.extractall(dest)  # zipfile drops absolute paths and ".." components
        modes = {
            info.filename.rstrip("/"): (info.external_attr >> 16) & 0o777
            for info in archive.infolist()
        }
    python_dir = dest / "python"
    if not python_dir.is_dir():
        raise LambdaHarnessError(
            f"{layer_zip} has no python/ directory at its root; Lambda only puts /opt/python "
            "on sys.path, so rebuild the layer with its packages under python/"
        )
    # Deepest first, so a directory loses its write bit only after its children are done.
    for path in [*sorted(dest.rglob("*"), key=lambda p: len(p.parts), reverse=True), dest]:
        is_dir = path.is_dir()
        mode = modes.get(path.relative_to(dest).as_posix()) or (0o755 if is_dir else 0o644)
        # Keep the zip's execute bits (bin/ scripts), always readable, never writable.
        path.chmod((mode | 0o444 | (0o111 if is_dir else 0)) & ~0o222)
    return python_dir


def make_tree_writable(root: Path) -> None:
    """Undo extract_layer_readonly so the tree can be deleted by a non-root user."""
    for path in [root, *root.rglob("*")]:
        if not path.is_symlink():
            path.chmod(path.stat().st_mode | stat.S_IWUSR)


# --------------------------------------------------------------------------------------------
# The function
# --------------------------------------------------------------------------------------------
class LocalLambda:
    """One Lambda execution environment: one runtime process at a time, one event at a time.

    code_dir      the function's code (LAMBDA_TASK_ROOT, /var/task), first on sys.path
    handler       "module.function", as in the template
    env           the function's environment (e.g. LocalAws.env() | {"ARTIFACT_BUCKET": ...}).
                  A value that is /tmp or under /tmp/ names the function's private /tmp.
    layer_dirs    /opt/python equivalents (see extract_layer_readonly), in the template's order
    packages      None: the project venv's site-packages follow the code and layers on sys.path.
                  A list of requirement strings: only those distributions, their dependencies and
                  the managed runtime's own (awslambdaric, boto3) are visible, as in Lambda.
    timeout_s     the function timeout; on expiry the process is killed like Lambda does
    bundled       packages the deployment package carries besides code_dir: name → source dir
                  (e.g. {"layer_builder": builder_function/layer_builder} for the check function)
    isolate       run as a dedicated user with a private /tmp (see tools.lambda_isolation);
                  None: whenever the harness can (it runs as root)

    The process environment is built from scratch, not inherited: Lambda's own variables, PATH,
    TMPDIR, the host's CA bundle and proxies (HOST_NETWORK_ENV), then `env`. HOME is unset as in Lambda, so tools needing a cache dir must be given one.
    The interpreter runs with -S, so sys.path is exactly code, layers, runtime packages and the
    standard library (.pth files are not processed).

    Lifecycle, as Lambda's (https://docs.aws.amazon.com/lambda/latest/dg/lambda-runtime-environment.html):
    a process serves invocations until it exits, crashes or times out; then the environment is
    reset (isolated: every process of the function's user is killed) and the next invocation
    cold-starts a new process, with a new Runtime API endpoint. /tmp survives a reset, as in
    Lambda ("The Lambda reset does not clear the /tmp directory content").
    """

    def __init__(
        self,
        code_dir: Path,
        handler: str = "app.handler",
        env: Mapping[str, str] | None = None,
        python: str | None = None,
        layer_dirs: Sequence[Path] = (),
        timeout_s: float = 30.0,
        function_name: str = "local-function",
        memory_mb: int = 512,
        region: str = "us-east-1",
        packages: Sequence[str] | None = None,
        bundled: Mapping[str, Path] | None = None,
        isolate: bool | None = None,
    ) -> None:
        self.code_dir = Path(code_dir).resolve()
        if not self.code_dir.is_dir():
            raise LambdaHarnessError(f"code_dir {self.code_dir} is not a directory")
        clashes = HARNESS_ENV_KEYS & set(env or {})
        if clashes:
            raise LambdaHarnessError(
                f"env sets {sorted(clashes)}, which LocalLambda controls; remove them"
            )
        if isolate is None:
            isolate = isolation_available()
        elif isolate and not isolation_available():
            raise LambdaHarnessError(
                "isolate=True needs root and setpriv (util-linux): the harness gives every "
                "function a user of its own, which only root can do"
            )
        self.isolate = isolate
        self.handler = handler
        self.function_name = function_name
        self.region = region
        self.timeout_s = timeout_s
        self.memory_mb = memory_mb
        self.python = python or find_python313()
        self.layer_dirs = [Path(d).resolve() for d in layer_dirs]
        self.packages = packages
        self.bundled = {name: Path(path).resolve() for name, path in (bundled or {}).items()}
        self.function_arn = f"arn:aws:lambda:{region}:{ACCOUNT_ID}:function:{function_name}"
        self._user_env = dict(env or {})
        self.user: FunctionUser | None = None
        self._api: _RuntimeApiServer | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._warm = False  # has the current process already served an invocation?
        self._lock = threading.RLock()
        self._closing = False
        self._workdir: Path | None = None
        self._final_logs = ""
        self._python_path_cache: list[str] | None = None
        self._python = self.python
        self.resets = 0  # how many times the environment was reset (a runtime process ended)

    # -- lifecycle ---------------------------------------------------------------------------
    def __enter__(self) -> Self:
        self._closing = False
        self._workdir = private_dir(f"{self.function_name}-")
        self._log_path.touch(mode=0o600)
        if self.isolate:
            self.user = FunctionUser.claim()
            prepare_private_tmp(self.tmpdir, self.user)
            self._python = interpreter_for_users(self.python)
        else:
            self.tmpdir.mkdir(mode=0o700)
            self._python = self.python
        with self._lock:
            self._start_process()  # init overlaps with the caller's setup, like a pre-warmed sandbox
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        with self._lock:
            self._closing = True
            self._stop_process()
            if self._api is not None:
                self._api.close()
                self._api = None
        if self.user is not None:
            self.user.release()
            self.user = None
        if self._workdir is not None:
            self._final_logs = self.logs()
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None

    @property
    def tmpdir(self) -> Path:
        """The function's private /tmp (TMPDIR of its processes); kept across resets."""
        if self._workdir is None:
            raise RuntimeNotRunningError("the function's /tmp exists only inside `with LocalLambda(...)`")
        return self._workdir / "tmp"

    @property
    def task_root(self) -> Path:
        """Where the function's processes see its code (code_dir, or a view of it)."""
        return Path(self._python_path()[0])

    @property
    def python_path(self) -> list[str]:
        """sys.path of the function's processes before the standard library: code, bundled
        packages, layers, runtime packages."""
        return list(self._python_path())

    def visible_path(self, path: Path) -> Path:
        """Where the function's processes see `path` (a layer dir, the project's site-packages)."""
        path = Path(path).resolve()
        shared = path == project_site_packages().resolve()
        return self._visible(path, shared=shared)

    @property
    def uid(self) -> int:
        """The user the function's processes run as."""
        return self.user.uid if self.user is not None else os.geteuid()

    @property
    def pid(self) -> int | None:
        """PID of the current runtime process (None before start or after it died)."""
        process = self._process
        return process.pid if process is not None and process.poll() is None else None

    @property
    def idle(self) -> bool:
        """True while the runtime process waits for an event (initialised, not invoking)."""
        api = self._api
        return api is not None and self.pid is not None and api.is_idle()

    @property
    def runtime_api_address(self) -> str:
        """host:port of the current process's Runtime API (AWS_LAMBDA_RUNTIME_API)."""
        if self._api is None:
            raise RuntimeNotRunningError("the Runtime API only runs inside `with LocalLambda(...)`")
        return self._api.address

    @property
    def refused_connections(self) -> list[int | None]:
        """Uids whose connections the current Runtime API refused (another function's)."""
        return list(self._api.refused) if self._api is not None else []

    def logs(self) -> str:
        """Everything the runtime processes wrote so far (also available after exit)."""
        if self._workdir is None:
            return self._final_logs
        return self._read_log(0)

    def _read_log(self, offset: int) -> str:
        # The runtime writes unbuffered to a file, so everything printed before the handler
        # returned is already there when the response arrives; a pipe would race.
        with self._log_path.open("rb") as log:
            log.seek(offset)
            return log.read().decode(errors="replace")

    # -- invoking ----------------------------------------------------------------------------
    def invoke(self, event: Any) -> InvocationResult:
        """Run one event through the handler and wait for its answer.

        As in Lambda, the event goes to a runtime that asked for one (GET /next): a process that
        is still ending is waited for, reset and replaced first (a cold start). The handler gets
        timeout_s from the moment the runtime takes the event; init gets INIT_TIMEOUT_S and, as
        Lambda retries a slow init, the function timeout on top.
        """
        if self._workdir is None:
            raise RuntimeNotRunningError("call invoke() inside `with LocalLambda(...) as fn:`")
        with self._lock:  # one execution environment handles one event at a time
            request_id = str(uuid.uuid4())
            log_offset = self._log_path.stat().st_size
            failed_init = self._until_ready(request_id)
            if failed_init is not None:
                logs = self._read_log(log_offset)
                return InvocationResult(request_id, failed_init, failed_init, 0.0, True, logs)
            process, api = self._process, self._api
            assert process is not None and api is not None
            cold = not self._warm
            invocation = _Invocation(
                request_id=request_id,
                body=json.dumps(event).encode(),
                timeout_s=self.timeout_s,
                trace_id=f"Root=1-{int(time.time()):08x}-{uuid.uuid4().hex[:24]};Sampled=0",
            )
            api.pending.put(invocation)
            error = self._wait(invocation, process, api)
            picked_at = invocation.picked_at
            duration = 0.0 if picked_at is None else time.monotonic() - picked_at
            self._warm = True  # a replacement process (after a crash or timeout) resets it
            payload: Any = error
            if error is None:
                try:
                    payload = json.loads(invocation.response) if invocation.response else None
                except ValueError:
                    payload = invocation.response.decode(errors="replace")
            logs = self._read_log(log_offset)
        return InvocationResult(invocation.request_id, payload, error, duration, cold, logs,
                                invocation.response if error is None else b"")

    @property
    def _init_limit(self) -> float:
        return INIT_TIMEOUT_S + self.timeout_s

    def _until_ready(self, request_id: str) -> dict[str, Any] | None:
        """Wait until a runtime polls /next, replacing a process that ended (once). Returns the
        error document when the replacement fails its init, else None. Call with the lock held."""
        replaced = False
        deadline = time.monotonic() + self._init_limit
        while True:
            process, api = self._process, self._api
            if process is None or api is None or process.poll() is not None:
                if replaced and process is not None and api is not None:
                    init_error, api.init_error = api.init_error, None
                    return init_error or {
                        "errorType": "Runtime.ExitError",
                        "errorMessage": f"RequestId: {request_id} Error: Runtime exited "
                        f"with error: exit status {process.returncode}"}
                self._replace_process(process)
                replaced, deadline = True, time.monotonic() + self._init_limit
                continue
            if api.is_idle():
                return None
            if time.monotonic() > deadline:
                self._stop_process()
                return {"errorType": "Sandbox.Timedout",
                        "errorMessage": f"RequestId: {request_id} Error: Init phase timed out "
                        f"after {self._init_limit:.2f} seconds"}
            time.sleep(0.005)

    def _wait(
        self, invocation: _Invocation, process: subprocess.Popen[bytes], api: _RuntimeApiServer
    ) -> dict[str, Any] | None:
        queued_at = time.monotonic()
        while not invocation.done.wait(0.05):
            if process.poll() is not None:
                api.drop_pending()
                init_error, api.init_error = api.init_error, None
                if init_error is not None:
                    return init_error  # e.g. Runtime.ImportModuleError, as Lambda reports it
                return {
                    "errorType": "Runtime.ExitError",
                    "errorMessage": f"RequestId: {invocation.request_id} Error: Runtime exited "
                    f"with error: exit status {process.returncode}",
                }
            picked_at = invocation.picked_at
            if picked_at is None:
                phase, elapsed, limit = "Init phase", time.monotonic() - queued_at, self._init_limit
            else:
                phase, elapsed, limit = "Task", time.monotonic() - picked_at, self.timeout_s
            if elapsed > limit:
                self._stop_process()  # Lambda resets the environment after a timeout
                api.drop_pending()
                return {
                    "errorType": "Sandbox.Timedout",
                    "errorMessage": f"RequestId: {invocation.request_id} Error: {phase} timed "
                    f"out after {limit:.2f} seconds",
                }
        if invocation.failed:
            return _error_document(invocation.response, None)
        return None

    # -- the runtime process -----------------------------------------------------------------
    @property
    def _log_path(self) -> Path:
        assert self._workdir is not None
        return self._workdir / "runtime.log"

    def _visible(self, path: Path, shared: bool = False) -> Path:
        """What the function's user can read in place of `path` (see user_view): a view kept
        for the session when `shared`, else one that goes with this function's work dir."""
        if not self.isolate:
            return path
        if shared:
            return user_view(path)
        assert self._workdir is not None
        views = self._workdir / "views"
        views.mkdir(mode=0o711, exist_ok=True)
        return user_view(path, parent=views)

    def _python_path(self) -> list[str]:
        if self._python_path_cache is not None:
            return self._python_path_cache
        major, minor = LAMBDA_PYTHON
        # Lambda merges layers into /opt in order, a later layer overwriting an earlier one:
        # listing them last-first on sys.path gives the later layer precedence in the same way.
        layers: list[str] = []
        for layer in reversed(self.layer_dirs):
            layer = self._visible(layer)
            nested = layer / "lib" / f"python{major}.{minor}" / "site-packages"
            layers += [str(nested)] if nested.is_dir() else []
            layers.append(str(layer))
        site_packages = self._visible(project_site_packages(), shared=True)
        if self.packages is None:
            runtime = site_packages
        else:
            wanted = [*MANAGED_RUNTIME_PACKAGES, *self.packages]
            runtime = shared_runtime_packages(wanted, site_packages)
        task = [str(self._visible(self.code_dir))]
        if self.bundled:
            assert self._workdir is not None
            extra = self._workdir / "bundled"
            extra.mkdir(mode=0o755)
            for name, source in self.bundled.items():
                (extra / name).symlink_to(self._visible(source, shared=True))
            task.append(str(extra))
        self._python_path_cache = [*task, *layers, str(runtime)]
        return self._python_path_cache

    def _environment(self, api: _RuntimeApiServer) -> dict[str, str]:
        major, minor = LAMBDA_PYTHON
        env = {
            "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
            "LANG": "en_US.UTF-8",
            "TZ": ":UTC",
            "TMPDIR": str(self.tmpdir),
            "AWS_EXECUTION_ENV": f"AWS_Lambda_python{major}.{minor}",
            "AWS_LAMBDA_FUNCTION_NAME": self.function_name,
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(self.memory_mb),
            "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
            "AWS_LAMBDA_INITIALIZATION_TYPE": "on-demand",
            "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{self.function_name}",
            "AWS_LAMBDA_LOG_STREAM_NAME": "local",
            "AWS_REGION": self.region,
            "AWS_DEFAULT_REGION": self.region,
        }
        env.update({key: os.environ[key] for key in HOST_NETWORK_ENV if key in os.environ})
        if self.layer_dirs:
            # /opt is read-only in Lambda; root would write __pycache__ into the layer anyway.
            env["PYTHONDONTWRITEBYTECODE"] = "1"
        env.update({key: self._private_tmp(value) for key, value in self._user_env.items()})
        env.update(
            {
                "AWS_LAMBDA_RUNTIME_API": api.address,
                "_HANDLER": self.handler,
                "LAMBDA_TASK_ROOT": str(self._visible(self.code_dir)),
                "PYTHONPATH": os.pathsep.join(self._python_path()),
            }
        )
        return env

    def _private_tmp(self, value: str) -> str:
        """/tmp in the function's configuration is its own /tmp (TMPDIR) here."""
        if value == "/tmp" or value.startswith("/tmp/"):
            return str(self.tmpdir) + value[len("/tmp"):]
        return value

    def _start_process(self) -> None:
        """Start a runtime process with a Runtime API of its own. Call with the lock held."""
        if self._api is not None:
            self._api.close()
        allowed = frozenset({self.uid, os.geteuid()}) if self.isolate else None
        api = self._api = _RuntimeApiServer(self.function_arn, allowed)
        threading.Thread(target=api.serve_forever, kwargs={"poll_interval": 0.05},
                         daemon=True).start()
        # -S: no site module, so sys.path is exactly PYTHONPATH plus the standard library and
        # the interpreter's own site-packages never leak in.
        command = [self._python, "-S", "-m", "awslambdaric", self.handler]
        if self.user is not None:
            command = self.user.command(command)
        with self._log_path.open("ab") as log:
            process = self._process = subprocess.Popen(
                command,
                cwd=self._visible(self.code_dir),
                env=self._environment(api),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self._warm = False
        threading.Thread(target=self._watch, args=(process,), daemon=True).start()

    def _watch(self, process: subprocess.Popen[bytes]) -> None:
        """When the runtime process ends, reset the environment at once (nothing of it may wait
        for the next invocation). After an invocation, also start the next runtime, as a warm
        pool would; a process that failed its init is replaced only by the next invoke()."""
        process.wait()
        with self._lock:
            if self._process is not process or self._closing:
                return
            if self._warm:
                self._replace_process(process)
            else:
                self._reset()

    def _replace_process(self, old: subprocess.Popen[bytes] | None) -> None:
        """Reset (every process of the function's user dies), then a fresh runtime process."""
        if old is not None:
            self._reset()
        self._start_process()

    def _reset(self) -> None:
        if self.user is not None:
            self.user.kill_all()
        self.resets += 1

    def _stop_process(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            process.terminate()  # by our own Popen's PID only
            try:
                process.wait(timeout=3)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=3)
        self._reset()
