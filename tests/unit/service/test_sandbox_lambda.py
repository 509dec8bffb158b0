"""LambdaSandbox against moto (S3, pre-signed URLs) and a local Lambda endpoint whose stand-in
check function answers what each case needs: nothing malformed is ever a pass."""

from __future__ import annotations

import textwrap
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from layer_builder.errors import ConfigurationError, OutOfTimeError, SourceBuildError
from layer_builder.sandbox import CheckSpec, SandboxError, Verdict
from layer_builder.service.sandbox_lambda import LambdaSandbox, target_key
from layer_builder.target import Target
from tools.lambda_runtime import LocalLambda
from tools.local_aws import LocalAws
from tools.local_lambda_service import LocalLambdaService

BUCKET = "artifacts"
FUNCTION = "stack-check-py313-x86_64"
TARGET = Target("python3.13", "x86_64")

#: A stand-in check function: the case comes from the input (spec, a file in the sources, the
#: package name) so one function serves every test.
FAKE = """
    import hashlib, http.client, io, json, os, time, urllib.request, zipfile

    def fetch(url):
        with urllib.request.urlopen(url, timeout=30) as r:
            return r.read()

    def put(url, data):
        request = urllib.request.Request(url, data=data, method="PUT",
                                         headers={"Content-Type": "application/octet-stream"})
        urllib.request.urlopen(request, timeout=30).read()
        return hashlib.sha256(data).hexdigest()

    def raw_answer(context, body):
        host, port = os.environ["AWS_LAMBDA_RUNTIME_API"].split(":")
        conn = http.client.HTTPConnection(host, int(port))
        conn.request("POST", f"/2018-06-01/runtime/invocation/{context.aws_request_id}/response",
                     body=body)
        conn.getresponse().read()

    def check(event, context):
        fetch(event["layer_url"])  # the layer is there, by the pre-signed URL
        mode = event["spec"]["own"][0]
        if mode == "pass":
            return {"ok": True, "startup": ["pass/__init__.py"], "ran_on": "fake",
                    "warnings": ["w"], "message": ""}
        if mode == "echo_timeout":
            return {"ok": True, "message": str(event["timeout"])}
        if mode == "fail":
            return {"ok": False, "message": "pass/__init__.py imports nothing_here"}
        if mode == "garbage":
            raw_answer(context, b"<html>not a verdict")
            os._exit(0)  # the answer is in; the runtime client must not post another
        if mode == "list":
            return [True]
        if mode == "no_ok":
            return {"message": "looks fine"}
        if mode == "ok_string":
            return {"ok": "true"}
        if mode == "outside":
            return {"ok": True, "startup": ["../../etc/passwd"]}
        if mode == "huge":
            return {"ok": True, "message": "x" * 5_000_000}
        if mode == "raise":
            raise RuntimeError("the check function broke")
        if mode in ("sleep", "nap"):
            time.sleep(4 if mode == "sleep" else 2)
        if mode == "slow_import":
            return {"ok": False, "error": {"kind": "out_of_time", "message": "too slow",
                                           "permanent": False, "log": ""}}
        raise ValueError(mode)

    def compile_(event, context):
        sources = zipfile.ZipFile(io.BytesIO(fetch(event["sources_url"])))
        mode = sources.read("mode.txt").decode()
        names = [n for n in sources.namelist() if n.endswith(".py")]
        pycs = {}
        for name in names:
            folder, _, file = name.rpartition("/")
            pyc = (folder + "/" if folder else "") + "__pycache__/" + file[:-3] + ".cpython-313.pyc"
            pycs[pyc] = b"compiled " + name.encode()
        if mode == "stranger":
            pycs["elsewhere/__pycache__/evil.cpython-313.pyc"] = b"!"
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as zf:
            for name, data in pycs.items():
                zf.writestr(name, data)
        digest = put(event["result_url"], buffer.getvalue())
        return {"ok": True, "sha256": "0" * 64 if mode == "badsha" else digest,
                "files": len(pycs)}

    def build_sdist(event, context):
        fetch(event["sdist_url"])
        name = event["name"]
        if name == "fails":
            return {"ok": False, "error": {"kind": "source_build_failed", "permanent": True,
                                           "message": "Building fails 1.0 failed: x.c:1: error: no",
                                           "log": "x.c:1: error: no"}}
        wheel = f"{'other' if name == 'renamed' else name}-{event['version']}-py3-none-any.whl"
        return {"ok": True, "sha256": put(event["result_url"], b"PK wheel bytes"),
                "filename": wheel}

    def handler(event, context):
        return {"check": check, "compile": compile_, "build_sdist": build_sdist}[event["action"]](
            event, context)
"""


@pytest.fixture(scope="module")
def aws() -> Iterator[LocalAws]:
    with LocalAws() as local:
        local.client("s3").create_bucket(Bucket=BUCKET)
        yield local


@pytest.fixture(scope="module")
def lambdas(aws: LocalAws, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalLambdaService]:
    code = tmp_path_factory.mktemp("fake-check")
    (code / "app.py").write_text(textwrap.dedent(FAKE))
    with LocalLambdaService(aws) as service:
        service.register(FUNCTION, lambda: LocalLambda(code, function_name=FUNCTION, timeout_s=60),
                         reserved=1, max_retries=0)
        yield service


@pytest.fixture(scope="module")
def session(aws: LocalAws) -> Any:
    return aws.session()  # parsing the service models once is most of a client's cost


@pytest.fixture
def sandbox(aws: LocalAws, lambdas: LocalLambdaService, session: Any) -> LambdaSandbox:
    s3 = session.client("s3", endpoint_url=aws.endpoint_url)
    return LambdaSandbox(s3, BUCKET, {target_key(TARGET): FUNCTION}, session=session,
                         lambda_endpoint_url=lambdas.endpoint_url, invoke_overhead_s=1)


@pytest.fixture
def layer(tmp_path: Path) -> Path:
    path = tmp_path / "layer.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("python/pass/__init__.py", "")
    return path


def leftovers(aws: LocalAws) -> list[str]:
    listed = aws.client("s3").list_objects_v2(Bucket=BUCKET, Prefix="checks/")
    return [item["Key"] for item in listed.get("Contents", [])]


def test_native_exactly_for_targets_with_a_check_function(sandbox: LambdaSandbox) -> None:
    by_target = LambdaSandbox(sandbox.s3, BUCKET, {TARGET: FUNCTION}, session=sandbox.session)
    assert by_target.native(TARGET) and by_target.functions == sandbox.functions
    assert sandbox.native(TARGET)
    assert not sandbox.native(Target("python3.13", "arm64"))
    assert not sandbox.native(Target("python3.12", "x86_64"))


def test_a_verdict_comes_back_and_the_checks_objects_are_deleted(
    aws: LocalAws, sandbox: LambdaSandbox, layer: Path,
) -> None:
    passed = sandbox.check(layer, CheckSpec(own=("pass",)), TARGET, timeout=20)
    failed = sandbox.check(layer, CheckSpec(own=("fail",)), TARGET, timeout=20)

    assert passed == Verdict(ok=True, warnings=("w",), startup=("pass/__init__.py",), ran_on="fake")
    assert not failed.ok and "nothing_here" in failed.message
    assert leftovers(aws) == [] and sandbox.errors == []


@pytest.mark.parametrize(("mode", "says"), [
    ("garbage", "not JSON"),
    ("list", "not an object"),
    ("no_ok", "no boolean `ok`"),
    ("ok_string", "no boolean `ok`"),
    ("outside", "outside the layer"),
    ("huge", "more than"),
    ("raise", "RuntimeError: the check function broke"),
])
def test_anything_but_a_well_formed_verdict_is_a_sandbox_error_never_a_pass(
    aws: LocalAws, sandbox: LambdaSandbox, layer: Path, mode: str, says: str,
) -> None:
    with pytest.raises(SandboxError, match=says) as raised:
        sandbox.check(layer, CheckSpec(own=(mode,)), TARGET, timeout=20)

    assert not raised.value.permanent  # transient: Lambda retries the build
    assert leftovers(aws) == []


def test_a_check_function_that_does_not_answer_in_time_is_a_sandbox_error(
    sandbox: LambdaSandbox, layer: Path, lambdas: LocalLambdaService,
) -> None:
    with pytest.raises(SandboxError, match="timeout|in time"):
        sandbox.check(layer, CheckSpec(own=("sleep",)), TARGET, timeout=2)
    deadline = time.monotonic() + 30
    while lambdas.stats(FUNCTION).running:  # the next test needs the environment
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_the_action_gets_the_time_left_minus_the_invocations_overhead(
    sandbox: LambdaSandbox, layer: Path,
) -> None:
    verdict = sandbox.check(layer, CheckSpec(own=("echo_timeout",)), TARGET, timeout=20)
    assert float(verdict.message) == 19  # overhead 1 s: the whole call ends by the deadline


def test_an_error_of_the_build_keeps_its_kind(sandbox: LambdaSandbox, layer: Path) -> None:
    with pytest.raises(OutOfTimeError, match="too slow"):
        sandbox.check(layer, CheckSpec(own=("slow_import",)), TARGET, timeout=20)


def test_a_target_without_a_check_function_is_a_configuration_error(
    sandbox: LambdaSandbox, layer: Path,
) -> None:
    with pytest.raises(ConfigurationError, match="python3.12/arm64"):
        sandbox.check(layer, CheckSpec(own=("pass",)), Target("python3.12", "arm64"), timeout=20)


def test_a_busy_check_function_is_waited_for_within_the_deadline(
    sandbox: LambdaSandbox, layer: Path, lambdas: LocalLambdaService, aws: LocalAws,
) -> None:
    s3 = aws.client("s3")
    s3.upload_file(str(layer), BUCKET, "busy/layer.zip")
    url = s3.generate_presigned_url("get_object", Params={"Bucket": BUCKET, "Key": "busy/layer.zip"})
    # Its one environment is busy for a while (reserved concurrency 1): the sync call is
    # throttled (429) and retried until it is free.
    lambdas.invoke_async(FUNCTION, {"action": "check", "layer_url": url,
                                    "spec": CheckSpec(own=("nap",)).to_json()})
    deadline = time.monotonic() + 30
    while not lambdas.stats(FUNCTION).running:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    before = lambdas.stats(FUNCTION).throttled

    verdict = sandbox.check(layer, CheckSpec(own=("pass",)), TARGET, timeout=60)

    assert verdict.ok
    assert lambdas.stats(FUNCTION).throttled > before


def sources_zip(tmp_path: Path, mode: str) -> Path:
    path = tmp_path / "sources.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("mode.txt", mode)
        zf.writestr("pkg/__init__.py", "")
        zf.writestr("pkg/mod.py", "X = 1\n")
        zf.writestr("top.py", "Y = 2\n")
    return path


def test_compile_returns_the_bytecode_of_the_sources_sent(
    aws: LocalAws, sandbox: LambdaSandbox, tmp_path: Path,
) -> None:
    compiled = sandbox.compile(sources_zip(tmp_path, "good"), TARGET, timeout=20)

    assert compiled == {"pkg/__pycache__/__init__.cpython-313.pyc": b"compiled pkg/__init__.py",
                        "pkg/__pycache__/mod.cpython-313.pyc": b"compiled pkg/mod.py",
                        "__pycache__/top.cpython-313.pyc": b"compiled top.py"}
    assert leftovers(aws) == []


@pytest.mark.parametrize(("mode", "says"), [("stranger", "not the bytecode of a source"),
                                            ("badsha", "does not match the sha256")])
def test_compile_results_that_do_not_match_what_was_sent_are_refused(
    sandbox: LambdaSandbox, tmp_path: Path, mode: str, says: str,
) -> None:
    with pytest.raises(SandboxError, match=says):
        sandbox.compile(sources_zip(tmp_path, mode), TARGET, timeout=20)


def sdist(tmp_path: Path, name: str) -> Path:
    path = tmp_path / f"{name}-1.0.tar.gz"
    path.write_bytes(b"sdist bytes")
    return path


def test_an_sdist_build_brings_the_wheel_home(sandbox: LambdaSandbox, tmp_path: Path) -> None:
    wheel = sandbox.build_sdist(sdist(tmp_path, "goodpkg"), "goodpkg", "1.0", TARGET,
                                tmp_path / "wheels", timeout=20)

    assert wheel == tmp_path / "wheels" / "goodpkg-1.0-py3-none-any.whl"
    assert wheel.read_bytes() == b"PK wheel bytes"


def test_a_failed_sdist_build_is_permanent_and_keeps_its_log(
    sandbox: LambdaSandbox, tmp_path: Path,
) -> None:
    with pytest.raises(SourceBuildError, match="x.c:1: error") as raised:
        sandbox.build_sdist(sdist(tmp_path, "fails"), "fails", "1.0", TARGET, tmp_path / "w",
                            timeout=20)
    assert raised.value.permanent and raised.value.log == "x.c:1: error: no"


def test_a_wheel_of_another_name_is_refused(sandbox: LambdaSandbox, tmp_path: Path) -> None:
    with pytest.raises(SourceBuildError, match="another name or version"):
        sandbox.build_sdist(sdist(tmp_path, "renamed"), "renamed", "1.0", TARGET, tmp_path / "w",
                            timeout=20)
    assert not (tmp_path / "w").exists() or not list((tmp_path / "w").iterdir())
