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
import json
import os
import queue
import shutil
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

RUNTIME_PREFIX = "/2018-06-01/runtime"
NEXT_PATH = f"{RUNTIME_PREFIX}/invocation/next"
INIT_ERROR_PATH = f"{RUNTIME_PREFIX}/init/error"
INVOCATION_PREFIX = f"{RUNTIME_PREFIX}/invocation/"
ERROR_TYPE_HEADER = "Lambda-Runtime-Function-Error-Type"

# moto's fixed account id, so the function ARN matches what a LocalAws server reports.
ACCOUNT_ID = "123456789012"
LAMBDA_PYTHON = (3, 13)  # the functions' runtime, python3.13
INIT_TIMEOUT_S = 10.0  # Lambda's limit for the init phase (imports, module-level code)
PROJECT_ROOT = Path(__file__).resolve().parent.parent
# Keys the harness owns; a caller setting them would silently break the emulation.
HARNESS_ENV_KEYS = frozenset(
    {"AWS_LAMBDA_RUNTIME_API", "_HANDLER", "LAMBDA_TASK_ROOT", "PYTHONPATH"}
)
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
    that same document when the invocation failed and None otherwise.
    """

    request_id: str
    payload: Any
    error: dict[str, Any] | None
    duration_s: float  # from the runtime taking the event to its answer (Lambda's Duration)
    cold_start: bool
    logs: str  # what the runtime process wrote to stdout/stderr during this invocation

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
    daemon_threads = True  # a long-poll blocked at shutdown must not keep the parent alive

    def __init__(self, function_arn: str) -> None:
        super().__init__(("127.0.0.1", 0), _RuntimeApiHandler)
        self.function_arn = function_arn
        self.pending: queue.Queue[_Invocation] = queue.Queue()
        self.in_flight: dict[str, _Invocation] = {}
        self.init_error: dict[str, Any] | None = None
        self.closing = threading.Event()
        self.lock = threading.Lock()
        # Bumped for every runtime process: a /next long-poll left over from a killed process
        # must not take the next process's event.
        self.generation = 0
        self.polling = 0  # /next requests currently waiting

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.server_port}"

    def next_invocation(self) -> _Invocation | None:
        with self.lock:
            generation = self.generation
            self.polling += 1
        try:
            # Poll in slices so a blocked /next returns once the harness closes or its process died.
            while not self.closing.is_set() and generation == self.generation:
                try:
                    invocation = self.pending.get(timeout=0.1)
                except queue.Empty:
                    continue
                with self.lock:
                    if generation != self.generation:
                        self.pending.put(invocation)  # at most one is queued, so order is kept
                        return None
                    self.in_flight[invocation.request_id] = invocation
                invocation.deadline_ms = int((time.time() + invocation.timeout_s) * 1000)
                invocation.picked_at = time.monotonic()
                return invocation
            return None
        finally:
            with self.lock:
                self.polling -= 1

    def is_idle(self) -> bool:
        """Is the current process's runtime client waiting on /next?"""
        with self.lock:
            return self.polling > 0 and not self.in_flight

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], ConnectionError):
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

    def do_GET(self) -> None:
        if self.path != NEXT_PATH:
            self._reply(404, {"errorType": "NotFound", "errorMessage": f"no route GET {self.path}"})
            return
        invocation = self.server.next_invocation()
        if invocation is None:
            self._reply(
                503,
                {
                    "errorType": "ShuttingDown",
                    "errorMessage": "harness closing or process replaced",
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
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # one line per long-poll would drown the function's own logs


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
    """Populate `dest` with symlinks to the given distributions and their dependencies only.

    This isolates a function from the rest of the dev venv (moto, pytest...), so a test proves
    that code or a layer brings its own dependencies. Requirements are PEP 508 strings; extras
    pull in the extras' dependencies.
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


def _link_top_level(dist: metadata.Distribution, site_packages: Path, dest: Path) -> None:
    # The RECORD's first column, read directly: dist.files builds an object per file, which
    # costs a fifth of a second for botocore alone.
    rows = csv.reader((dist.read_text("RECORD") or "").splitlines())
    for entry in {row[0].split("/")[0] for row in rows if row}:
        source = site_packages / entry
        if entry in ("..", "__pycache__") or not source.exists():
            continue  # console scripts live outside site-packages
        target = dest / entry
        if not target.exists():
            target.symlink_to(source)


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
    """One Lambda function with one long-lived runtime process, invoked one event at a time.

    code_dir      the function's code (LAMBDA_TASK_ROOT, /var/task), first on sys.path
    handler       "module.function", as in the template
    env           the function's environment (e.g. LocalAws.env() | {"ARTIFACT_BUCKET": ...})
    layer_dirs    /opt/python equivalents (see extract_layer_readonly), in the template's order
    packages      None: the project venv's site-packages follow the code and layers on sys.path.
                  A list of requirement strings: only those distributions, their dependencies and
                  the managed runtime's own (awslambdaric, boto3) are visible, as in Lambda.
    timeout_s     the function timeout; on expiry the process is killed like Lambda does

    The process environment is built from scratch, not inherited: Lambda's own variables, PATH,
    then `env`. HOME is unset as in Lambda, so tools needing a cache dir must be given one.
    The interpreter runs with -S, so sys.path is exactly code, layers, runtime packages and the
    standard library (.pth files are not processed).
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
    ) -> None:
        self.code_dir = Path(code_dir).resolve()
        if not self.code_dir.is_dir():
            raise LambdaHarnessError(f"code_dir {self.code_dir} is not a directory")
        clashes = HARNESS_ENV_KEYS & set(env or {})
        if clashes:
            raise LambdaHarnessError(
                f"env sets {sorted(clashes)}, which LocalLambda controls; remove them"
            )
        self.handler = handler
        self.function_name = function_name
        self.region = region
        self.timeout_s = timeout_s
        self.memory_mb = memory_mb
        self.python = python or find_python313()
        self.layer_dirs = [Path(d).resolve() for d in layer_dirs]
        self.packages = packages
        self.function_arn = f"arn:aws:lambda:{region}:{ACCOUNT_ID}:function:{function_name}"
        self._user_env = dict(env or {})
        self._api: _RuntimeApiServer | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._warm = False  # has the current process already served an invocation?
        self._lock = threading.Lock()
        self._workdir: Path | None = None
        self._final_logs = ""

    # -- lifecycle ---------------------------------------------------------------------------
    def __enter__(self) -> Self:
        self._workdir = Path(tempfile.mkdtemp(prefix=f"local-lambda-{self.function_name}-"))
        self._api = _RuntimeApiServer(self.function_arn)
        threading.Thread(
            target=self._api.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()
        self._start_process()  # init overlaps with the caller's setup, like a pre-warmed sandbox
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop_process()
        if self._api is not None:
            self._api.closing.set()
            self._api.shutdown()
            self._api.server_close()
            self._api = None
        if self._workdir is not None:
            self._final_logs = self.logs()
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None

    @property
    def pid(self) -> int | None:
        """PID of the current runtime process (None before start or after it died)."""
        process = self._process
        return process.pid if process is not None and process.poll() is None else None

    @property
    def idle(self) -> bool:
        """True while the runtime process waits for an event (initialised, not invoking)."""
        return self._api is not None and self.pid is not None and self._api.is_idle()

    @property
    def runtime_api_address(self) -> str:
        """host:port of the local Runtime API (AWS_LAMBDA_RUNTIME_API of the process)."""
        if self._api is None:
            raise RuntimeNotRunningError("the Runtime API only runs inside `with LocalLambda(...)`")
        return self._api.address

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

        The handler gets timeout_s from the moment the runtime takes the event; a cold start's
        init phase gets INIT_TIMEOUT_S on top, as in Lambda.
        """
        if self._api is None or self._workdir is None:
            raise RuntimeNotRunningError("call invoke() inside `with LocalLambda(...) as fn:`")
        with self._lock:  # one sandbox handles one event at a time
            if self._process is None or self._process.poll() is not None:
                self._start_process()
            process, api = self._process, self._api
            assert process is not None
            cold = not self._warm
            log_offset = self._log_path.stat().st_size
            invocation = _Invocation(
                request_id=str(uuid.uuid4()),
                body=json.dumps(event).encode(),
                timeout_s=self.timeout_s,
                trace_id=f"Root=1-{int(time.time()):08x}-{uuid.uuid4().hex[:24]};Sampled=0",
            )
            api.pending.put(invocation)
            error = self._wait(invocation, process)
            picked_at = invocation.picked_at
            duration = 0.0 if picked_at is None else time.monotonic() - picked_at
            self._warm = True  # a replacement process (after a crash or timeout) resets it
            if error is None:
                payload: Any = json.loads(invocation.response) if invocation.response else None
            else:
                payload = error
            logs = self._read_log(log_offset)
        return InvocationResult(invocation.request_id, payload, error, duration, cold, logs)

    def _wait(
        self, invocation: _Invocation, process: subprocess.Popen[bytes]
    ) -> dict[str, Any] | None:
        assert self._api is not None
        queued_at = time.monotonic()
        while not invocation.done.wait(0.05):
            if process.poll() is not None:
                self._api.drop_pending()
                init_error, self._api.init_error = self._api.init_error, None
                if init_error is not None:
                    return init_error  # e.g. Runtime.ImportModuleError, as Lambda reports it
                return {
                    "errorType": "Runtime.ExitError",
                    "errorMessage": f"RequestId: {invocation.request_id} Error: Runtime exited "
                    f"with error: exit status {process.returncode}",
                }
            picked_at = invocation.picked_at
            if picked_at is None:
                phase, elapsed, limit = "Init phase", time.monotonic() - queued_at, INIT_TIMEOUT_S
            else:
                phase, elapsed, limit = "Task", time.monotonic() - picked_at, self.timeout_s
            if elapsed > limit:
                self._stop_process()  # Lambda discards the sandbox after a timeout
                self._api.drop_pending()
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

    def _python_path(self) -> list[str]:
        major, minor = LAMBDA_PYTHON
        # Lambda merges layers into /opt in order, a later layer overwriting an earlier one:
        # listing them last-first on sys.path gives the later layer precedence in the same way.
        layers: list[str] = []
        for layer in reversed(self.layer_dirs):
            nested = layer / "lib" / f"python{major}.{minor}" / "site-packages"
            layers += [str(nested)] if nested.is_dir() else []
            layers.append(str(layer))
        site_packages = project_site_packages()
        if self.packages is None:
            runtime = site_packages
        else:
            assert self._workdir is not None
            wanted = [*MANAGED_RUNTIME_PACKAGES, *self.packages]
            runtime = link_distributions(wanted, site_packages, self._workdir / "runtime-packages")
        return [str(self.code_dir), *layers, str(runtime)]

    def _environment(self) -> dict[str, str]:
        assert self._api is not None
        major, minor = LAMBDA_PYTHON
        env = {
            "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
            "LANG": "en_US.UTF-8",
            "TZ": ":UTC",
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
        if self.layer_dirs:
            # /opt is read-only in Lambda; root would write __pycache__ into the layer anyway.
            env["PYTHONDONTWRITEBYTECODE"] = "1"
        env.update(self._user_env)
        env.update(
            {
                "AWS_LAMBDA_RUNTIME_API": self._api.address,
                "_HANDLER": self.handler,
                "LAMBDA_TASK_ROOT": str(self.code_dir),
                "PYTHONPATH": os.pathsep.join(self._python_path()),
            }
        )
        return env

    def _start_process(self) -> None:
        # -S: no site module, so sys.path is exactly PYTHONPATH plus the standard library and
        # the interpreter's own site-packages never leak in.
        command = [self.python, "-S", "-m", "awslambdaric", self.handler]
        assert self._api is not None
        with self._api.lock:
            self._api.generation += 1
            self._api.init_error = None  # only this process's init failure may be reported
        with self._log_path.open("ab") as log:
            self._process = subprocess.Popen(
                command,
                cwd=self.code_dir,
                env=self._environment(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self._warm = False

    def _stop_process(self) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()  # by our own Popen's PID only
        try:
            process.wait(timeout=3)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=3)
