"""Pieces the reliability tests share: a private TMPDIR, the CLI run in-process, a hermetic package
index, source distributions that record the environment their build ran in, a package index over
HTTP that wants credentials, and the builder service against moto on loopback.
"""

from __future__ import annotations

import base64
import dataclasses
import functools
import http.server
import io
import json
import os
import re
import subprocess
import sys
import tarfile
import tempfile
import textwrap
import threading
import uuid
import zipfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import wheelhouse
from lockfactory import PipenvProject, make_project
from wheelhouse import Wheel, lock_entry, write_code

from layer_builder import cli as cli_module

ROOT = Path(__file__).resolve().parents[2]
LAYER_BUILDER = Path(sys.executable).parent / "layer-builder"
#: What the CLI writes to stderr besides the one error line: timestamped progress.
PROGRESS = re.compile(r"^\[\d+\.\ds\] ")
APP = {"app/__init__.py": "import tinypure\n\n\ndef run():\n    return tinypure.double(21)\n"}


# ---------------------------------------------------------------- a private TMPDIR and the CLI


@dataclass(frozen=True)
class Sandbox:
    tmp: Path  # TMPDIR for everything the build creates
    out: Path  # where the layer zip and report go
    cache: Path  # the dependency cache; its uv/ is the session's download cache

    def leftovers(self) -> list[str]:
        """Whatever a refused build left behind: work dirs, outputs, partial zips, cache staging."""
        left = [f"TMPDIR/{p.name}" for p in self.tmp.iterdir()]
        left += [f"out/{p.name}" for p in self.out.iterdir()]
        left += [f"cache/{p.name}" for p in self.cache.iterdir() if p.name.startswith(".")]
        return left


@pytest.fixture
def sandbox(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
            make_cache_dir: Callable[[Path], Path]) -> Sandbox:
    tmp, out = tmp_path / "TMPDIR", tmp_path / "out"
    tmp.mkdir()
    out.mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))  # tempfile caches TMPDIR on first use
    return Sandbox(tmp, out, make_cache_dir(tmp_path / "cache"))


@dataclass(frozen=True)
class CliRun:
    code: int
    stdout: str
    stderr: str

    @property
    def problem(self) -> str:
        """The one stderr line saying why the build stopped; every other line is progress."""
        lines = self.stderr.splitlines()
        errors = [line for line in lines if line.startswith("layer-builder: ")]
        assert len(errors) == 1, f"expected one error line:\n{self.stderr}"
        others = [line for line in lines if line not in errors and not PROGRESS.match(line)]
        assert not others, f"stderr has more than progress and the error: {others}"
        return errors[0].split(": ", 2)[2]


def _argv(source: Path, args: tuple[str, ...], sandbox: Sandbox) -> list[str]:
    argv = ["build", str(source), *args]
    if not {"-o", "--output"} & set(args):
        argv += ["-o", str(sandbox.out / "layer.zip")]
    if not {"--no-cache", "--cache-dir"} & set(args):
        argv += ["--cache-dir", str(sandbox.cache)]
    return argv


@pytest.fixture
def run_cli(sandbox: Sandbox, capsys: pytest.CaptureFixture[str]) -> Callable[..., CliRun]:
    """`layer-builder build SOURCE ARGS...` in this process (limits can be monkeypatched)."""

    def run(source: Path, *args: str) -> CliRun:
        capsys.readouterr()
        code = cli_module.main(_argv(source, args, sandbox))
        out, err = capsys.readouterr()
        return CliRun(code, out, err)

    return run


@pytest.fixture
def run_cli_process(sandbox: Sandbox) -> Callable[..., CliRun]:
    """The installed `layer-builder` console script in a subprocess, TMPDIR set to the sandbox."""

    def run(source: Path, *args: str, env: Mapping[str, str] | None = None) -> CliRun:
        environ = {**os.environ, **(env or {}), "TMPDIR": str(sandbox.tmp)}
        done = subprocess.run([str(LAYER_BUILDER), *_argv(source, args, sandbox)], env=environ,
                              capture_output=True, text=True, timeout=300, check=False)
        return CliRun(done.returncode, done.stdout, done.stderr)

    return run


#: What the builder may use on any bomb; the Lambda has 3 GB, but a bomb must cost no more than
#: an honest build.
PEAK_LIMIT_MB = 300

#: The CLI, reporting its peak RSS at exit. VmHWM belongs to the process's memory map, which exec
#: replaces; ru_maxrss would also count the forking test process's own peak (it survives exec).
#: RUSAGE_CHILDREN's ru_maxrss is the largest peak of the processes the CLI started and waited
#: for (uv, bytecode compilers, import checks); a child forked rather than spawned counts the
#: builder's own memory at the fork too, so it can only overstate.
_MEASURED_CLI = """
import atexit, os, resource, sys
from layer_builder.cli import main

def peak():
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    with open("/proc/self/status") as status, open(os.environ["PEAK_FILE"], "w") as out:
        builder = next(line for line in status if line.startswith("VmHWM:")).split()[1]
        out.write(f"{builder} {children}")

atexit.register(peak)
sys.exit(main(sys.argv[1:]))
"""


@dataclass(frozen=True)
class Peak:
    builder: float  # MB: the CLI process's own peak resident memory
    child: float  # MB: the largest peak of any process it started


def run_measuring_peak(argv: list[str], sandbox: Sandbox,
                       env: Mapping[str, str] | None = None) -> tuple[CliRun, Peak]:
    """`layer-builder ARGV` in a child process: its exit code, output and peak RSS."""
    peak_file = sandbox.tmp.parent / "peak-kb"
    environ = {**os.environ, **(env or {}), "TMPDIR": str(sandbox.tmp), "PEAK_FILE": str(peak_file)}
    done = subprocess.run([sys.executable, "-c", _MEASURED_CLI, *argv], env=environ,
                          capture_output=True, text=True, timeout=300, check=False)
    builder, child = (int(kb) / 1024 for kb in peak_file.read_text().split())
    return CliRun(done.returncode, done.stdout, done.stderr), Peak(builder, child)


# ---------------------------------------------------------------- a hermetic package index


@dataclass(frozen=True)
class House:
    simple: Path
    pure: Wheel  # tinypure 1.0.0, py3-none-any

    @property
    def url(self) -> str:
        return self.simple.as_uri()


@pytest.fixture(scope="session")
def house(tmp_path_factory: pytest.TempPathFactory) -> House:
    root = tmp_path_factory.mktemp("house")
    pure = wheelhouse.write_wheel(root / "wheels", "tinypure", "1.0.0", "py3-none-any",
                                  {"tinypure.py": b"def double(x):\n    return 2 * x\n"})
    return House(wheelhouse.simple_index(root, [pure]), pure)


def pure_project(root: Path, house: House, code: Mapping[str, str] | None = None,
                 **options: Any) -> PipenvProject:
    """A valid project locking tinypure from the hermetic index, with its own `app` package."""
    project = make_project(root, {"tinypure": lock_entry(house.pure)}, **options)
    write_code(root, APP if code is None else code)
    return project


def archive_dir(src: Path, dest: Path, *, wrap: str | None = None,
                extra: Mapping[str, bytes] | None = None) -> Path:
    """A .zip or .tar.gz/.tgz (by dest's name) of every file under src, optionally in one folder."""
    prefix = f"{wrap}/" if wrap else ""
    files = {prefix + p.relative_to(src).as_posix(): p.read_bytes()
             for p in sorted(src.rglob("*")) if p.is_file()}
    files.update(extra or {})
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.name.endswith(".zip"):
        with zipfile.ZipFile(dest, "w", zipfile.ZIP_DEFLATED) as zf:
            for name, data in files.items():
                zf.writestr(name, data)
    else:
        with tarfile.open(dest, "w:gz") as tf:
            for name, data in files.items():
                info = tarfile.TarInfo(name)
                info.size, info.mode = len(data), 0o644
                tf.addfile(info, io.BytesIO(data))
    return dest


# ---------------------------------------------------------------- source distributions

#: An in-tree PEP 517 backend: no build dependencies, so it builds from a file:// index offline.
_BACKEND = textwrap.dedent('''\
    import base64, hashlib, json, os, zipfile

    NAME, VERSION, TAG, FILES, DUMP = {name!r}, {version!r}, {tag!r}, {files!r}, {dump!r}


    def get_requires_for_build_wheel(config_settings=None):
        return []


    def _hash(data):
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        return "sha256=" + digest


    def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
        if DUMP:  # the environment this build code runs in, for the tests to inspect
            with open(DUMP, "w") as f:
                json.dump({{"environ": dict(os.environ), "cwd": os.getcwd()}}, f)
        info = NAME.replace("-", "_") + "-" + VERSION + ".dist-info"
        members = {{path: text.encode("latin-1") for path, text in FILES.items()}}
        metadata = f"Metadata-Version: 2.1\\nName: {{NAME}}\\nVersion: {{VERSION}}\\n"
        members[info + "/METADATA"] = metadata.encode()
        pure = "true" if TAG.endswith("-none-any") else "false"
        members[info + "/WHEEL"] = (f"Wheel-Version: 1.0\\nGenerator: test-backend\\n"
                                    f"Root-Is-Purelib: {{pure}}\\nTag: {{TAG}}\\n").encode()
        rows = [f"{{p}},{{_hash(d)}},{{len(d)}}\\n" for p, d in members.items()]
        members[info + "/RECORD"] = ("".join(rows) + info + "/RECORD,,\\n").encode()
        filename = NAME.replace("-", "_") + "-" + VERSION + "-" + TAG + ".whl"
        with zipfile.ZipFile(os.path.join(wheel_directory, filename), "w") as zf:
            for path, data in members.items():
                zf.writestr(path, data)
        return filename
''')


def make_sdist(dest: Path, name: str, version: str, files: Mapping[str, bytes], *,
               tag: str = "py3-none-any", dump: Path | None = None) -> Wheel:
    """NAME-VERSION.tar.gz whose build writes `files` into a wheel tagged `tag`.

    With `dump`, the build code writes its os.environ and cwd there as JSON.
    """
    sources = {
        "pyproject.toml": ('[build-system]\nrequires = []\nbuild-backend = "backend"\n'
                           'backend-path = ["."]\n'),
        "backend.py": _BACKEND.format(name=name, version=version, tag=tag, dump=str(dump or ""),
                                      files={k: v.decode("latin-1") for k, v in files.items()}),
        "PKG-INFO": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
    }
    dest.mkdir(parents=True, exist_ok=True)
    path = dest / f"{name}-{version}.tar.gz"
    with tarfile.open(path, "w:gz") as tf:
        for relative, text in sources.items():
            data = text.encode()
            info = tarfile.TarInfo(f"{name}-{version}/{relative}")
            info.size, info.mode = len(data), 0o644
            tf.addfile(info, io.BytesIO(data))
    return Wheel(name, version, path)


def index_of(root: Path, house: House, *dists: Wheel) -> str:
    """A file:// index with tinypure and `dists` (wheels or sdists)."""
    return wheelhouse.simple_index(root, [house.pure, *dists]).as_uri()


# ---------------------------------------------------------------- an index over HTTP


class _Handler(http.server.SimpleHTTPRequestHandler):
    server: _IndexHttpServer

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        self.server.seen.append((self.path, self.headers.get("Authorization")))
        if self.server.password and self.headers.get("Authorization") != self.server.expected:
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="index"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        super().do_GET()

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass


class _IndexHttpServer(http.server.ThreadingHTTPServer):
    seen: list[tuple[str, str | None]]
    password: str
    expected: str


@dataclass
class IndexServer:
    """A PEP 503 index on 127.0.0.1 (Basic auth when `password` is set) that records requests."""

    root: Path  # the directory holding simple/
    user: str = ""
    password: str = ""
    seen: list[tuple[str, str | None]] = field(default_factory=list)

    def __enter__(self) -> IndexServer:
        handler = functools.partial(_Handler, directory=str(self.root))
        self._server = _IndexHttpServer(("127.0.0.1", 0), handler)
        self._server.seen, self._server.password = self.seen, self.password
        token = base64.b64encode(f"{self.user}:{self.password}".encode()).decode()
        self._server.expected = f"Basic {token}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    def authorized(self) -> int:
        """Requests that carried the right credentials."""
        return sum(1 for _, auth in self.seen if auth == self._server.expected)

    def url(self, user: str | None = None, password: str | None = None) -> str:
        user, password = user or self.user, password or self.password
        auth = f"{user}:{password}@" if password else ""
        return f"http://{auth}127.0.0.1:{self._server.server_address[1]}/simple"


# ---------------------------------------------------------------- the builder service on moto


@dataclass
class Service:
    aws: Any  # tools.local_aws.LocalAws
    stack: Any  # tools.stack.LocalStack
    settings: Any  # layer_builder.service.settings.Settings
    clients: Any  # layer_builder.service.aws.Clients
    #: The builder function's environment these settings came from (the template's, plus
    #: CACHE_DIR and the secret holding the hermetic index's URL).
    env: dict[str, str]

    @property
    def environ(self) -> dict[str, str]:
        """What the builder Lambda's process sees, AWS credentials included."""
        return {**os.environ, **self.env}

    def upload(self, archive: Path, key: str | None = None) -> Any:
        """Uploaded by the stack's first team (incoming/<team>/<file>) unless `key` says."""
        from layer_builder.service.uploads import parse_uploads

        team = self.settings.teams[0].name
        event = self.stack.upload(archive, key or f"incoming/{team}/{archive.name}")
        [upload], _ = parse_uploads(event, self.settings.source_prefix)
        return upload

    def index_secret(self, url: str) -> str:
        """A Secrets Manager secret holding `url` (as PACKAGE_INDEX_SECRET names one); its ARN."""
        import hashlib

        name = f"{self.stack.stack_name}/index-{hashlib.sha256(url.encode()).hexdigest()[:12]}"
        sm = self.clients.secretsmanager
        try:
            return sm.describe_secret(SecretId=name)["ARN"]
        except sm.exceptions.ResourceNotFoundException:
            return sm.create_secret(Name=name, SecretString=url)["ARN"]

    def process(self, upload: Any, environ: Mapping[str, str] | None = None,
                package_index_url: str | None = None, **settings: Any) -> Any:
        """service.process_upload with these settings changed (e.g. allow_sdist, targets); the
        index URL is put into a secret, as the stack does."""
        from layer_builder.sandbox_local import LocalSandbox
        from layer_builder.service.aws import Adapters
        from layer_builder.service.service import process_upload

        if package_index_url is not None:
            settings["package_index_secret"] = (self.index_secret(package_index_url)
                                                if package_index_url else "")
        changed = dataclasses.replace(self.settings, **settings)
        adapters = Adapters.create(changed, self.clients)
        adapters.sandbox = LocalSandbox()  # moto cannot run the check functions
        return process_upload(upload, changed, adapters,
                              self.environ if environ is None else environ)

    def report(self, key: str) -> dict[str, Any]:
        body = self.clients.s3.get_object(Bucket=self.settings.artifact_bucket, Key=key)["Body"]
        return json.loads(body.read())

    def state(self, upload: Any) -> dict[str, Any]:
        """Everything a refused upload must leave as it was."""
        lam, s3, ssm = self.clients.lambda_, self.clients.s3, self.clients.ssm
        layers = {layer["LayerName"]: [v["Version"] for v in lam.list_layer_versions(
            LayerName=layer["LayerName"])["LayerVersions"]]
            for layer in lam.list_layers()["Layers"]}
        consumers = {name: [x["Arn"] for x in lam.get_function_configuration(
            FunctionName=name).get("Layers", [])] for name in self.consumers()}
        pointers = {p["Name"]: p["Value"] for p in ssm.get_parameters_by_path(
            Path=self.settings.pointer_parameter_prefix, Recursive=True)["Parameters"]}
        head = s3.head_object(Bucket=upload.bucket, Key=upload.key, VersionId=upload.version_id)
        versions = s3.list_object_versions(Bucket=upload.bucket,
                                           Prefix=upload.key).get("Versions", [])
        source = (head["ETag"], head["ContentLength"], len(versions))
        return {"layers": layers, "consumers": consumers, "pointers": pointers, "source": source}

    def assert_refused(self, upload: Any, outcome: Any, before: dict[str, Any]) -> str:
        """Refused, reported, nothing published or attached, source untouched; returns why."""
        assert outcome.status == "refused", outcome.to_dict()
        assert not outcome.published and not outcome.version_arn
        report = self.report(outcome.report_key)
        assert report["status"] == "refused" and report["published"] is False
        assert report["error"]["message"] == outcome.error["message"]
        assert report["error"]["retryable"] == "False"
        assert self.state(upload) == before
        return outcome.error["message"]

    def consumers(self) -> list[str]:
        return sorted({name for team in self.settings.teams for name in team.consumers})

    def alive(self) -> bool:
        """False once something reset moto's shared backends (e.g. another test's mock_aws)."""
        from botocore.exceptions import ClientError

        try:
            self.clients.s3.head_bucket(Bucket=self.settings.artifact_bucket)
            for name in self.consumers():
                self.clients.lambda_.get_function(FunctionName=name)
        except ClientError:
            return False
        return True


@pytest.fixture(scope="session")
def shared_moto() -> Iterator[Any]:
    """One moto server on loopback per test process (its import alone takes seconds)."""
    from tools.local_aws import LocalAws

    with LocalAws() as aws:
        yield aws


@pytest.fixture(scope="session")
def _services() -> dict[str, Service]:
    return {}


@pytest.fixture
def service(shared_moto: Any, house: House, tmp_path_factory: pytest.TempPathFactory,
            _services: dict[str, Service]) -> Service:
    """template.yaml's resources in moto under a stack name of their own; the builder installs
    from the hermetic index.

    moto's backends are global to the process and shared with `mock_aws` and other servers, so
    nothing here resets them: the stack has a unique name, and is provisioned again should
    someone else's reset have removed it.
    """
    current = _services.get("stack")
    if current is None or not current.alive():
        current = _provision(shared_moto, house, tmp_path_factory)
        _services["stack"] = current
    return current


def _provision(aws: Any, house: House, tmp_path_factory: pytest.TempPathFactory) -> Service:
    from layer_builder.service.aws import Clients
    from layer_builder.service.settings import Settings
    from tools.stack import provision

    stack = provision(aws, stack_name=f"rel-{uuid.uuid4().hex[:10]}")
    clients = Clients(*(aws.client(name) for name in ("s3", "lambda", "ssm", "dynamodb", "events",
                                                      "secretsmanager")))
    index = clients.secretsmanager.create_secret(Name=f"{stack.stack_name}/index",
                                                 SecretString=house.url)["ARN"]
    env = stack.environment("BuilderFunction") | {
        "CACHE_DIR": str(tmp_path_factory.mktemp("service-cache")), "PACKAGE_INDEX_SECRET": index}
    return Service(aws, stack, Settings.from_env(env), clients, env)

# The builder fixtures live beside their helpers; re-exported here so every module sees them.
from tests.reliability.service_env import (  # noqa: E402, F401
    builder_cache_fixture,
    builder_fixture,
    make_builder_fixture,
    reliability_aws_fixture,
)
