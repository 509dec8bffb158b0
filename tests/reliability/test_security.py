"""Security: the installer and build code see no credentials, index credentials never leak,
nothing runs through a shell, uploads cannot pick an index, and the template grants little.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import logging
import os
import shutil
import sys
import traceback
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from lockfactory import ENV_SOURCE, make_project
from wheelhouse import lock_entry

from layer_builder import install
from layer_builder.errors import LockError
from layer_builder.lock import IndexPolicy, read_lock
from layer_builder.target import Target
from layer_builder.sandbox_local import LocalSandbox

from tests.reliability.awsfaults import FaultInjector
from tools.cfn import Resolver, load_template

from .conftest import (
    ROOT,
    CliRun,
    House,
    IndexServer,
    Sandbox,
    Service,
    archive_dir,
    index_of,
    make_sdist,
    pure_project,
)
from .table import record

#: What a builder's environment may hold; none of it may reach the installer or build code.
SECRETS = {
    "AWS_ACCESS_KEY_ID": "AKIARELIABILITY00001",
    "AWS_SECRET_ACCESS_KEY": "reliability-secret-access-key-0001",
    "AWS_SESSION_TOKEN": "reliability-session-token-0001",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI": "http://169.254.170.2/v2/credentials/reliability-0001",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN": "reliability-container-token-0001",
    "AWS_WEB_IDENTITY_TOKEN_FILE": "/var/run/secrets/reliability-0001",
    "AWS_ROLE_ARN": "arn:aws:iam::123456789012:role/reliability-0001",
    "AWS_PROFILE": "reliability-profile-0001",
    "GITHUB_TOKEN": "ghp_reliability0001",
    "DATABASE_PASSWORD": "reliability-db-password-0001",
    # Installer settings from the environment would let it fetch from elsewhere: not passed on.
    "UV_EXTRA_INDEX_URL": "http://leak:reliability-uv-token-0001@127.0.0.1:9/simple",
    "PIP_EXTRA_INDEX_URL": "http://leak:reliability-pip-token-0001@127.0.0.1:9/simple",
}
SECRET_NAME = ("AWS_", "TOKEN", "SECRET", "PASSWORD", "CREDENTIAL", "_KEY", "EXTRA_INDEX")
#: The installer's whole environment: install.PASSTHROUGH_ENV plus what installer_environment sets.
INSTALLER_SETS = {"HOME", "TMPDIR", "UV_CACHE_DIR", "UV_NO_PROGRESS", "UV_PYTHON_DOWNLOADS",
                  "PIP_CONFIG_FILE", "PIP_NO_INPUT", "PIP_DISABLE_PIP_VERSION_CHECK",
                  "PIP_CACHE_DIR", "PYTHONDONTWRITEBYTECODE", "UV_INDEX_URL", "PIP_INDEX_URL"}


def leaks(environ: dict[str, str]) -> list[str]:
    """Variables that look like, or hold, a secret."""
    text = json.dumps(environ)
    named = [k for k in environ if any(part in k.upper() for part in SECRET_NAME)]
    return named + [f"value of {k}" for k, v in SECRETS.items() if v in text]


@pytest.fixture
def uv_spy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[], list[dict[str, Any]]]:
    """Run every installer invocation through a wrapper that saves its environment, then uv."""
    real = install.find_uv()
    assert real, "uv is a dependency of layer-builder"
    dumps = tmp_path / "installer-env"
    dumps.mkdir()
    wrapper = tmp_path / "uv-spy"
    wrapper.write_text(
        f"#!{sys.executable}\n"
        "import json, os, sys, uuid\n"
        f"with open(os.path.join({str(dumps)!r}, uuid.uuid4().hex + '.json'), 'w') as f:\n"
        "    json.dump({'environ': dict(os.environ), 'argv': sys.argv[1:]}, f)\n"
        f"os.execv({real!r}, [{real!r}, *sys.argv[1:]])\n")
    wrapper.chmod(0o755)
    monkeypatch.setattr(install, "find_uv", lambda: str(wrapper))
    return lambda: [json.loads(p.read_text()) for p in sorted(dumps.iterdir())]


def test_installer_and_sdist_build_code_see_no_credentials(
        tmp_path: Path, house: House, run_cli: Callable[..., CliRun], sandbox: Sandbox,
        uv_spy: Callable[[], list[dict[str, Any]]], monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    backend_dump = tmp_path / "build-code-env.json"
    sdist = make_sdist(tmp_path / "dists", "envdump", "1.0", {"envdump.py": b"X = 1\n"},
                       dump=backend_dump)
    index = index_of(tmp_path / "index", house, sdist)
    project = make_project(tmp_path / "project", {"tinypure": lock_entry(house.pure),
                                                  "envdump": lock_entry(sdist)})
    report_path = sandbox.out / "report.json"
    run = run_cli(project.root, "--index-url", index, "--allow-sdist", "envdump",
                  "--report", str(report_path))
    assert run.code == 0, run.stderr
    assert json.loads(report_path.read_text())["built_from_source"] == ["envdump==1.0"]

    runs = uv_spy()
    # Wheels are fetched in-process (no installer runs); the sdist is built by `uv build`.
    installs = [d for d in runs if d["argv"][:1] == ["build"]]
    assert len(installs) >= 1, "expected the source build"
    for dump in runs:  # `uv --version` included
        assert leaks(dump["environ"]) == [], (dump["argv"], leaks(dump["environ"]))
    for dump in installs:
        environ = dump["environ"]
        extra = set(environ) - set(install.PASSTHROUGH_ENV) - INSTALLER_SETS
        assert not extra, f"the installer got variables outside its allow-list: {sorted(extra)}"
        # Build requirements come from the installer's default index: no index token reaches
        # build code (runner.build_sdist_wheel).
        assert "UV_INDEX_URL" not in environ and "PIP_INDEX_URL" not in environ
        home = Path(environ["HOME"])
        assert home != Path.home() and home.parent.name.startswith("sdist-build-")
        assert not home.exists(), "the installer's temporary HOME was left behind"

    build_code = json.loads(backend_dump.read_text())["environ"]  # envdump's setup ran with this
    assert leaks(build_code) == [], leaks(build_code)
    assert build_code["HOME"] == installs[-1]["environ"]["HOME"]
    record("installer environment (CLI, sdist build code included)",
           f"leaked nothing: {len(runs)} installer runs and the sdist's build code saw none of "
           f"{len(SECRETS)} secret variables; HOME was a temporary directory")


def test_lambda_installer_sees_none_of_the_functions_credentials(
        tmp_path: Path, sandbox: Sandbox, house: House, service: Service,
        uv_spy: Callable[[], list[dict[str, Any]]]) -> None:
    project = pure_project(tmp_path / "project", house, code={"lam/__init__.py": "X = 1\n"})
    upload = service.upload(archive_dir(project.root, tmp_path / "creds-check-1.0.0.zip"))
    environ = {**service.environ, **SECRETS}
    assert service.environ["AWS_ACCESS_KEY_ID"]  # the Lambda runtime's credentials are there
    outcome = service.process(upload, environ=environ)
    assert outcome.status == "published", outcome.to_dict()
    runs = uv_spy()
    # Wheels are fetched and assembled in-process: no installer runs for a lock without sdists.
    assert [d["argv"] for d in runs if d["argv"][:1] != ["--version"]] == []
    for dump in runs:
        assert leaks(dump["environ"]) == [], (dump["argv"], leaks(dump["environ"]))
    assert sandbox.leftovers() == []
    record("installer environment (builder Lambda)",
           "leaked nothing: no installer ran (wheels fetched in-process), so the function's AWS "
           "credentials and secrets reached no installer")


# ---------------------------------------------------------------- credentials in index URLs


def secret_free(token: str, *texts: str | bytes) -> None:
    for text in texts:
        data = text.encode() if isinstance(text, str) else text
        assert token.encode() not in data, f"{token} leaked: ...{data[:400]!r}"


def files_under(root: Path, skip: str = "") -> Iterator[Path]:
    for path in root.rglob("*"):
        if path.is_file() and not (skip and skip in path.relative_to(root).parts):
            yield path


@pytest.mark.parametrize("how", ["--index-url", "PIP_INDEX_URL in the lock"])
def test_index_credentials_are_used_but_never_shown(
        tmp_path: Path, sandbox: Sandbox, house: House, run_cli: Callable[..., CliRun],
        uv_cache: Path, monkeypatch: pytest.MonkeyPatch, how: str) -> None:
    token = f"tok-{uuid.uuid4().hex}"
    project = pure_project(tmp_path / "project", house)
    report_path = sandbox.out / "report.json"
    with IndexServer(house.simple.parent, user="builder", password=token) as index:
        args = ["--report", str(report_path), "--json"]
        if how == "--index-url":
            args += ["--index-url", index.url()]
        else:  # the CLI expands ${PIP_INDEX_URL} in the lock's source, as pipenv does
            monkeypatch.setenv("PIP_INDEX_URL", index.url())
        run = run_cli(project.root, *args)
    assert run.code == 0, run.stderr
    assert index.authorized(), "the index never received the credentials"
    secret_free(token, run.stdout, run.stderr, report_path.read_text(),
                (sandbox.out / "layer.zip").read_bytes())
    for path in [*files_under(sandbox.cache, skip="uv"), *files_under(uv_cache)]:
        secret_free(token, path.read_bytes())
    record(f"index credentials via {how}", "leaked nothing: used for the download; absent from "
           "stdout, stderr, JSON report, layer zip and caches")


def test_wrong_index_credentials_are_refused_without_showing_them(
        tmp_path: Path, sandbox: Sandbox, house: House, run_cli: Callable[..., CliRun]) -> None:
    token, wrong = f"tok-{uuid.uuid4().hex}", f"wrong-{uuid.uuid4().hex}"
    project = pure_project(tmp_path / "project", house)
    with IndexServer(house.simple.parent, user="builder", password=token) as index:
        run = run_cli(project.root, "--index-url", index.url(password=wrong))
    assert run.code == 2, run.stderr
    message = run.problem
    assert "package index refused the credentials (HTTP 401/403)" in message
    secret_free(wrong, run.stdout, run.stderr)
    secret_free(token, run.stdout, run.stderr)
    assert sandbox.leftovers() == []
    record("index credentials rejected (401)", f"refused, credentials not shown: {message}")


def test_unreachable_index_with_credentials_fails_without_showing_them(
        tmp_path: Path, sandbox: Sandbox, house: House, run_cli: Callable[..., CliRun]) -> None:
    token = f"tok-{uuid.uuid4().hex}"
    project = pure_project(tmp_path / "project", house)
    # Port 9 (discard) on loopback is closed: uv retries three times (~10 s), then gives up.
    run = run_cli(project.root, "--index-url", f"https://builder:{token}@127.0.0.1:9/simple")
    assert run.code == 1, run.stderr  # transient: a retry may succeed
    assert run.stderr.count("layer-builder: failed: ") == 1
    message = run.stderr.split("layer-builder: failed: ", 1)[1]  # uv's causes follow, indented
    assert message.startswith("The package index could not be reached (will retry)")
    assert "127.0.0.1:9" in message  # says where, without who
    secret_free(token, run.stdout, run.stderr)
    assert sandbox.leftovers() == []
    record("index with credentials unreachable", f"survived: exit 1, retryable, credentials not "
           f"shown: {message.splitlines()[0]}")


class FakeContext:
    function_name = "layer-builder-builder"
    memory_limit_in_mb = 3008
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:layer-builder-builder"
    aws_request_id = "reliability-request"

    @staticmethod
    def get_remaining_time_in_millis() -> int:
        return 900_000


def load_builder_app(name: str) -> Any:
    """builder_function/app.py imported fresh: it reads its settings from os.environ at import."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "builder_function" / "app.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class KeepLogs(logging.Handler):
    """Every record the builder logs, formatted as Powertools would print it."""

    def __init__(self, formatter: logging.Formatter) -> None:
        super().__init__()
        self.setFormatter(formatter)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


def index_url_in(form: str, index: IndexServer, root: Path, token: str) -> str:
    """The index URL with `token` where a real index would carry it."""
    port = index._server.server_address[1]
    if form == "user:password":
        return index.url(password=token)
    if form == "percent-encoded user:password":
        return index.url(password=quote(token, safe=""))
    if form == "path":  # https://host/<TOKEN>/simple/, as Artifactory and Gemfury do
        (root / token).mkdir()
        (root / token / "simple").symlink_to(root / "simple", target_is_directory=True)
        return f"http://127.0.0.1:{port}/{token}/simple/"
    return f"http://127.0.0.1:{port}/simple/?token={token}"  # query


def s3_object(service: Service, url: str) -> bytes:
    """The object a recorded PutObject wrote (path-style URL: /bucket/key)."""
    from urllib.parse import unquote, urlsplit

    bucket, key = unquote(urlsplit(url).path).lstrip("/").split("/", 1)
    return service.clients.s3.get_object(Bucket=bucket, Key=key)["Body"].read()


SECRET_FORMS = ["user:password", "percent-encoded user:password", "path", "query"]


@pytest.mark.filterwarnings("ignore:No application metrics to publish:UserWarning")
@pytest.mark.parametrize("form", SECRET_FORMS)
def test_lambda_logs_reports_events_and_results_never_show_the_index_token(
        tmp_path: Path, sandbox: Sandbox, house: House, service: Service,
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, form: str) -> None:
    """The index URL comes from Secrets Manager at run time (PACKAGE_INDEX_SECRET); its token is
    in the userinfo (also percent-encoded), the path or the query. A good build and a build
    against an unreachable copy of the index must show it nowhere: not in Powertools' log lines,
    the metrics, the handler's results or errors, the reports, the EventBridge events, or any
    request the builder sends to AWS (the idempotency record included)."""
    from layer_builder.redact import forget_secrets

    token = f"T0k-{uuid.uuid4().hex}" if "percent" not in form else f"p@ss/w0rd:{uuid.uuid4().hex}"
    root = tmp_path / "index"
    shutil.copytree(house.simple.parent, root, symlinks=True)
    auth = {"user": "builder", "password": token} if "user" in form else {}
    outputs: list[str] = []
    results = {}
    config = service.clients.lambda_.get_function_configuration(
        FunctionName=service.stack.name("BuilderFunction"))
    with IndexServer(root, **auth) as index, FaultInjector() as calls:
        url = index_url_in(form, index, root, token)
        broken = url.replace(f":{index._server.server_address[1]}/", ":9/")  # closed port
        for label, value in (("good", url), ("unreachable", broken)):
            forget_secrets()  # each container starts knowing nothing
            env = {**service.env, "CACHE_DIR": str(tmp_path / label / "cache"),
                   "PACKAGE_INDEX_SECRET": service.index_secret(value)}
            for key, setting in env.items():
                monkeypatch.setenv(key, setting)
            app = load_builder_app(f"builder_app_{label}_{uuid.uuid4().hex[:6]}")
            app.adapters.sandbox = LocalSandbox()  # moto cannot run the check functions
            calls.attach(*app.clients.all())
            keep = KeepLogs(app.logger.registered_formatter)
            keep.addFilter(app.logger.registered_handler.filters[0])
            logging.getLogger(app.logger.name).addHandler(keep)
            try:
                project = pure_project(tmp_path / label / "project", house,
                                       code={f"{label}app/__init__.py": "X = 1\n"})
                archive = archive_dir(project.root, tmp_path / f"token-{label}-1.0.0.zip")
                event = service.stack.upload(
                    archive, f"incoming/{service.settings.teams[0].name}/{archive.name}")
                try:
                    results[label] = app.handler(event, FakeContext())["results"][0]
                except Exception as exc:  # a transient failure: what Lambda records
                    results[label] = {"raised": "".join(traceback.format_exception(exc))}
            finally:
                logging.getLogger(app.logger.name).removeHandler(keep)
            outputs += keep.lines
    printed = capsys.readouterr()
    sent = [call.body for call in calls.calls]
    reports = [s3_object(service, c.url) for c in calls.calls
               if c.operation == "PutObject" and "/reports/" in c.url]
    events = [call.body for call in calls.calls if call.operation == "PutEvents"]
    forms = {token, quote(token, safe=""), token.split("/")[-1]}
    for secret in forms:
        secret_free(secret, *outputs, printed.out, printed.err, json.dumps(results),
                    *reports, *sent, json.dumps(config, default=str))
    # A JSON and an HTML report for a good build, a JSON report for a failed one.
    assert len(events) == 2 and len(reports) >= 2 and len(outputs) >= 2
    assert "raised" in results["unreachable"]
    # The token was really used: the good build installed from the index with it (fetch.py
    # refuses an index URL with a query string: there the point is that its refusal shows none).
    if form != "query":
        assert results["good"]["status"] in ("published", "reused"), results["good"]
        assert index.authorized() if "user" in form else any(
            token in path for path, _ in index.seen), index.seen
    assert "PACKAGE_INDEX_URL" not in config["Environment"]["Variables"]
    outcome = {label: r.get("status", "raised") for label, r in results.items()}
    record(f"index token in the URL's {form} (builder Lambda, URL from Secrets Manager)",
           f"leaked nothing: absent from {len(outputs)} log lines, metrics, results and errors "
           f"({outcome}), {len(reports)} reports, {len(events)} events and {len(sent)} AWS "
           "requests; the function's configuration holds only the secret's ARN")


# ---------------------------------------------------------------- no shell


SHELL_CALLS = {("os", "system"), ("os", "popen"), ("subprocess", "getoutput"),
               ("subprocess", "getstatusoutput"), ("asyncio", "create_subprocess_shell")}
SKIP_DIRS = {".venv", ".venv-sam", ".venv-uv", ".aws-sam", ".git", ".cache", "node_modules",
             "__pycache__", "build", "dist"}


def python_files() -> list[Path]:
    found = []
    for folder, dirs, files in os.walk(ROOT):
        dirs[:] = [d for d in dirs if d not in SKIP_DIRS]  # never descend into .venv
        found += [Path(folder, f) for f in files if f.endswith(".py")]
    return found


def shell_uses(path: Path, root: Path = ROOT) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if not isinstance(node, ast.Call):
            continue
        for keyword in node.keywords:
            if keyword.arg == "shell" and not (isinstance(keyword.value, ast.Constant)
                                               and keyword.value.value is False):
                where = f"{path.relative_to(root)}:{node.lineno}"
                found.append(f"{where} shell={ast.unparse(keyword.value)}")
        func = node.func
        if (isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name)
                and (func.value.id, func.attr) in SHELL_CALLS):
            found.append(f"{path.relative_to(root)}:{node.lineno} {func.value.id}.{func.attr}()")
    return found


def test_no_shell_anywhere_in_the_repository(tmp_path: Path) -> None:
    files = python_files()
    scanned = {p.relative_to(ROOT).parts[0] for p in files}
    assert {"builder_function", "emr_function", "tools", "examples", "tests"} <= scanned
    found = [use for path in files for use in shell_uses(path)]
    assert found == []
    # The scanner itself works: it finds what it is looking for.
    probe = tmp_path / "probe.py"
    probe.write_text("import os, subprocess\nsubprocess.run('ls', shell=True)\nos.system('ls')\n")
    assert len(shell_uses(probe, tmp_path)) == 2
    record("shell=True / os.system / os.popen in the repository",
           f"refused by a scan: none in {len(files)} Python files")


# ---------------------------------------------------------------- uploads cannot pick an index

LAMBDA = dict(allow_lock_urls=False)  # what service.build_request uses, plus the operator's URL


@pytest.mark.parametrize(("url", "operator", "outcome"), [
    pytest.param("https://mirror.example.invalid/simple", "", "refused", id="literal-url"),
    pytest.param("https://user:lock-token@mirror.example.invalid/simple", "", "refused",
                 id="literal-url-with-credentials"),
    pytest.param("https://x:${AWS_SECRET_ACCESS_KEY}@mirror.example.invalid/simple", "", "refused",
                 id="url-built-from-a-secret"),
    pytest.param("${AWS_SECRET_ACCESS_KEY}", "", "default index", id="bare-secret-variable"),
    pytest.param("${PIP_INDEX_URL}", "", "default index", id="bare-pip-index-url"),
    pytest.param("https://mirror.example.invalid/simple", "https://operator.example.invalid/simple",
                 "operator index", id="literal-url-with-operator-index"),
])
def test_lock_sources_cannot_choose_the_lambdas_index(
        tmp_path: Path, url: str, operator: str, outcome: str,
        request: pytest.FixtureRequest) -> None:
    environ = {**SECRETS, "PIP_INDEX_URL": "https://env:env-token@mirror.example.invalid/simple"}
    project = make_project(tmp_path / "project", {"six": {"version": "==1.17.0", "index": "pypi",
                                                          "hashes": ["sha256:" + "a" * 64]}},
                           sources=[{**ENV_SOURCE, "url": url}])
    policy = IndexPolicy(override=operator, environ=environ, **LAMBDA)
    case = f"lock source {request.node.callspec.id} (builder Lambda)"
    if outcome == "refused":
        with pytest.raises(LockError) as refused:
            read_lock(project.root, Target(), policy)
        message = str(refused.value)
        assert "which the operator did not allow" in message
        assert 'url = "${PIP_INDEX_URL}"' in message  # what to write instead
        for value in [*SECRETS.values(), "lock-token", "env-token"]:
            assert value not in message
        record(case, f"refused: {message}")
        return
    [requirement] = read_lock(project.root, Target(), policy).requirements
    assert requirement.index == operator  # "" is the installer's default index
    record(case, f"accepted: installs from the {outcome}, nothing expanded from the environment")


def test_second_source_chosen_per_package_is_refused(tmp_path: Path) -> None:
    sources = [ENV_SOURCE, {"name": "evil", "url": "https://evil.example.invalid/simple",
                            "verify_ssl": True}]
    project = make_project(tmp_path / "project", {"six": {
        "version": "==1.17.0", "index": "evil", "hashes": ["sha256:" + "a" * 64]}}, sources=sources)
    with pytest.raises(LockError, match="Source 'evil' in Pipfile.lock names the index") as refused:
        read_lock(project.root, Target(), IndexPolicy(**LAMBDA))
    record("lock package pinned to a second, literal source (builder Lambda)",
           f"refused: {refused.value}")


def test_uploaded_index_settings_never_reach_the_network(
        tmp_path: Path, sandbox: Sandbox, house: House, service: Service) -> None:
    with IndexServer(house.simple.parent) as evil:  # would serve tinypure, if ever asked
        # The lock names the upload's own index, and installer config files point there too.
        own_index = [{**ENV_SOURCE, "url": evil.url()}]
        project = pure_project(tmp_path / "project", house, sources=own_index,
                               code={"sneaky/__init__.py": "X = 1\n",
                                     "uv.toml": f'index-url = "{evil.url()}"\n',
                                     "pip.conf": f"[global]\nindex-url = {evil.url()}\n",
                                     ".netrc": "machine 127.0.0.1 login a password b\n"})
        # 1. No operator index (the installer's default): the lock's own URL is refused.
        upload = service.upload(archive_dir(project.root, tmp_path / "own-index-1.0.0.zip"))
        before = service.state(upload)
        message = service.assert_refused(upload, service.process(upload, package_index_url=""),
                                         before)
        # 2. The operator's index replaces every source of the lock; config files are ignored.
        again = service.upload(archive_dir(project.root, tmp_path / "own-index-1.0.1.zip"))
        built = service.process(again)
        assert built.status == "published", built.to_dict()
        assert evil.seen == [], evil.seen
    assert sandbox.leftovers() == []
    record("upload whose lock names its own index, no operator index (builder service)",
           f"refused, no request reached that index: {message}")
    record("upload whose lock and uv.toml/pip.conf/.netrc name its own index, operator index set",
           "accepted: built from the operator's index only; the upload's index got no request")


# ---------------------------------------------------------------- template least privilege
# tests/unit/test_template.py checks every statement in depth (and for several parameter sets);
# this records the three promises of the issue in the reliability table.


def function_statements(resolver: Resolver) -> list[tuple[str, dict[str, Any]]]:
    found = []
    for name, resource in resolver.resources.items():
        if resource["Type"] == "AWS::Serverless::Function":
            for policy in resolver.resolve(resource["Properties"].get("Policies", [])):
                statements = policy["Statement"]
                for statement in statements if isinstance(statements, list) else [statements]:
                    if statement["Effect"] == "Allow":
                        found.append((name, statement))
    return found


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


#: Lambda actions without resource-level permissions (the maintenance sweep lists them).
UNSCOPED_LAMBDA_ACTIONS = {"lambda:ListFunctions", "lambda:ListLayers"}


def test_template_grants_least_privilege() -> None:
    resolver = Resolver(load_template())
    statements = function_statements(resolver)
    guarded = 0
    for name, statement in statements:
        for action in as_list(statement["Action"]):
            if action in UNSCOPED_LAMBDA_ACTIONS:
                continue
            if action.split(":")[0] in ("lambda", "s3", "iam") or action == "*":
                assert "*" not in action, f"{name}: {action}"
                for arn in as_list(statement["Resource"]):
                    guarded += 1
                    tail = arn.split(":", 5)[5] if arn.count(":") >= 5 else ""
                    assert arn != "*" and tail and not tail.startswith("*"), (name, action, arn)
                    if tail == "function:*":  # consumers by tag only
                        assert "aws:ResourceTag/layer-builder:consumer" in json.dumps(
                            statement.get("Condition", {})), (name, action, arn)
    check_roles = {resolver.resolve(r["Properties"]["Role"]) for r in resolver.resources.values()
                   if r["Type"] == "AWS::Serverless::Function"
                   and r["Properties"].get("CodeUri", "check_function/") == "check_function/"}
    check_actions = {a for doc in resolver.resolve(resolver.resources["CheckFunctionRole"]
                                                   ["Properties"]["Policies"])
                     for s in as_list(doc["PolicyDocument"]["Statement"]) for a in as_list(s["Action"])}
    assert check_roles == {resolver.arn("CheckFunctionRole")}
    assert check_actions <= {"logs:CreateLogStream", "logs:PutLogEvents"}, check_actions
    passes = [(n, s) for n, s in statements if "iam:PassRole" in as_list(s["Action"])]
    assert passes
    for name, statement in passes:
        assert all(":role/" in arn and "*" not in arn for arn in as_list(statement["Resource"]))
        conditions = json.dumps(statement.get("Condition", {}))
        assert "iam:PassedToService" in conditions, f"{name}: PassRole to any service"
    for bucket in ("SourceBucket", "ArtifactBucket"):
        props = resolver.resources[bucket]["Properties"]
        assert all(props["PublicAccessBlockConfiguration"].values())
        assert props["BucketEncryption"]["ServerSideEncryptionConfiguration"]
        policies = [r["Properties"]["PolicyDocument"] for r in resolver.resources.values()
                    if r["Type"] == "AWS::S3::BucketPolicy"
                    and r["Properties"]["Bucket"] == {"Ref": bucket}]
        denies = [s for p in policies for s in as_list(p["Statement"]) if s["Effect"] == "Deny"
                  and "aws:SecureTransport" in json.dumps(s.get("Condition", {}))]
        assert denies, f"{bucket} accepts requests without TLS"
    record("template least privilege", f"refused wildcards: {guarded} lambda/s3/iam grants name "
           f"their resources (consumers by tag); iam:PassRole scoped to {len(passes)} roles and "
           "their services; check functions may only write their logs; buckets private, "
           "encrypted, TLS-only")
