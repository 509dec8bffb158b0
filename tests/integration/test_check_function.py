"""The check function (check_function/app.py) as its own local Lambda: a user of its own, input
and output by pre-signed URL (moto), one invocation per execution environment."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import textwrap
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from layer_builder.sandbox import CheckSpec, Dependency, Verdict
from tests.reliability.conftest import make_sdist
from tools.lambda_isolation import alive, isolation_available, shared_dir, wait_until
from tools.lambda_runtime import LocalLambda
from tools.local_aws import LocalAws
from tools.local_lambda_service import check_function

pytestmark = pytest.mark.skipif(not isolation_available(),
                                reason="the check function refuses to share its user: needs root")
BUCKET = "check-io"


@pytest.fixture(scope="module")
def aws() -> Iterator[LocalAws]:
    with LocalAws() as local:
        local.client("s3").create_bucket(Bucket=BUCKET)
        yield local


@pytest.fixture
def checker() -> Iterator[LocalLambda]:
    with check_function("check-py313-x86_64", timeout_s=120) as function:
        yield function


@pytest.fixture
def report_dir() -> Path:
    """Where hostile code writes what it managed (world-writable, like /tmp)."""
    path = shared_dir("check-report-")
    path.chmod(0o1777)
    return path


def get_url(aws: LocalAws, path: Path) -> str:
    s3 = aws.client("s3")
    key = f"in/{time.time_ns()}/{path.name}"
    s3.upload_file(str(path), BUCKET, key)
    return s3.generate_presigned_url("get_object", Params={"Bucket": BUCKET, "Key": key})


def put_url(aws: LocalAws, key: str) -> str:
    return aws.client("s3").generate_presigned_url("put_object",
                                                   Params={"Bucket": BUCKET, "Key": key})


def layer(tmp_path: Path, files: dict[str, str], name: str = "layer.zip") -> Path:
    path = tmp_path / name
    with zipfile.ZipFile(path, "w") as zf:
        for member, text in files.items():
            zf.writestr(f"python/{member}", textwrap.dedent(text))
    return path


def check(aws: LocalAws, function: LocalLambda, layer_zip: Path, spec: CheckSpec) -> Verdict:
    result = function.invoke({"action": "check", "layer_url": get_url(aws, layer_zip),
                              "spec": spec.to_json(), "timeout": 60})
    assert result.ok, (result.error, result.logs[-3000:])
    return Verdict.from_json(json.dumps(result.payload))


def test_a_clean_layer_passes_and_every_check_gets_a_fresh_environment(
    aws: LocalAws, checker: LocalLambda, tmp_path: Path,
) -> None:
    good = layer(tmp_path, {"goodpkg/__init__.py": "import json\nVALUE = 1\n"})
    spec = CheckSpec(own=("goodpkg",))

    first = checker.invoke({"action": "check", "layer_url": get_url(aws, good),
                            "spec": spec.to_json(), "timeout": 60})
    wait_until(lambda: checker.resets == 1)  # the runtime ended after answering
    second = checker.invoke({"action": "check", "layer_url": get_url(aws, good),
                             "spec": spec.to_json(), "timeout": 60})

    assert first.ok and second.ok, (first.error, second.error, second.logs[-2000:])
    verdict = Verdict.from_json(json.dumps(first.payload))
    assert verdict.ok and "goodpkg/__init__.py" in verdict.startup
    # what each import depended on comes back too, so the builder can remember it
    assert [r.module for r in verdict.imports] == ["goodpkg"], verdict.imports
    assert "check function check-py313-x86_64" in verdict.ran_on
    assert first.cold_start and second.cold_start  # never a warm environment


def test_a_module_the_layer_lacks_fails_the_check(
    aws: LocalAws, checker: LocalLambda, tmp_path: Path,
) -> None:
    broken = layer(tmp_path, {"app/__init__.py": "import module_nobody_locked\n"})
    dependency = Dependency("six", "1.16.0", ("six",))
    with_six = layer(tmp_path, {"app/__init__.py": "import six\n", "six.py": "X = 1\n"}, "six.zip")

    refused = check(aws, checker, broken, CheckSpec(own=("app",)))
    passed = check(aws, checker, with_six, CheckSpec(own=("app",), dependencies=(dependency,)))

    assert not refused.ok and "module_nobody_locked" in refused.message
    assert passed.ok, passed.message


HOSTILE = """
    import http.client, os, sys, time

    REPORT = {report!r}
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:  # a grandchild in a session of its own: a daemon
            api = os.environ.get("AWS_LAMBDA_RUNTIME_API") or {api!r}
            with open(os.path.join(REPORT, "pid"), "w") as f:
                f.write(str(os.getpid()))
            tmp = os.path.dirname(os.path.dirname(os.environ["TMPDIR"]))
            with open(os.path.join(tmp, "poison"), "w") as f:  # the function's own /tmp
                f.write("left for the next check")
            while True:
                with open(os.path.join(REPORT, "log"), "a") as log:
                    try:
                        host, port = api.split(":")
                        conn = http.client.HTTPConnection(host, int(port), timeout=2)
                        conn.request("GET", "/2018-06-01/runtime/invocation/next")
                        log.write(f"next {{conn.getresponse().status}}\\n")
                    except OSError as exc:
                        log.write(f"refused {{type(exc).__name__}}\\n")
                time.sleep(0.02)
        os._exit(0)
    time.sleep(0.5)  # the daemon is running by now
"""


def test_a_daemon_forked_at_import_dies_before_the_answer_and_leaves_nothing(
    aws: LocalAws, checker: LocalLambda, tmp_path: Path, report_dir: Path,
) -> None:
    wait_until(lambda: checker.idle)
    hostile = layer(tmp_path, {"evil/__init__.py": HOSTILE.format(
        report=str(report_dir), api=checker.runtime_api_address)})

    verdict = check(aws, checker, hostile, CheckSpec(own=("evil",)))
    daemon = int((report_dir / "pid").read_text())
    dead_at_answer = not alive(daemon)
    wait_until(lambda: checker.resets == 1)
    poison = checker.tmpdir / "poison"
    wait_until(lambda: not poison.exists())  # the next environment's init wiped /tmp
    clean = check(aws, checker, layer(tmp_path, {"ok/__init__.py": ""}, "ok.zip"),
                  CheckSpec(own=("ok",)))

    assert verdict.ok, verdict.message  # it imports; what it does is contained
    assert dead_at_answer  # swept before the answer was posted
    assert clean.ok and clean.ran_on
    assert "next 200" not in (report_dir / "log").read_text()  # never got an event


def test_the_function_refuses_to_run_beside_a_process_of_its_user(
    aws: LocalAws, checker: LocalLambda, tmp_path: Path,
) -> None:
    wait_until(lambda: checker.idle)
    stray = subprocess.Popen(["setpriv", f"--reuid={checker.uid}", f"--regid={checker.uid}",
                              "--clear-groups", "--", "sleep", "60"])
    try:
        good = layer(tmp_path, {"goodpkg/__init__.py": ""})
        refused = checker.invoke({"action": "check", "layer_url": get_url(aws, good),
                                  "spec": CheckSpec(own=("goodpkg",)).to_json(), "timeout": 60})
        stray.wait(timeout=10)  # the reset after the refusal killed it
        after = check(aws, checker, good, CheckSpec(own=("goodpkg",)))
    finally:
        stray.kill()
        stray.wait()

    assert refused.error_type == "StrayProcessError", refused.payload
    assert f"{stray.pid} sleep" in refused.error["errorMessage"]  # type: ignore[index]
    assert stray.returncode == -9
    assert after.ok


def test_an_sdist_builds_to_a_wheel_stored_by_the_presigned_url(
    aws: LocalAws, checker: LocalLambda, tmp_path: Path,
) -> None:
    sdist = make_sdist(tmp_path / "sdists", "tinysrc", "1.0.0", {"tinysrc.py": b"X = 1\n"}).path
    result = checker.invoke({"action": "build_sdist", "sdist_url": get_url(aws, sdist),
                             "filename": sdist.name, "name": "tinysrc", "version": "1.0.0",
                             "result_url": put_url(aws, "out/wheel"), "timeout": 120})

    assert result.ok, (result.error, result.logs[-3000:])
    assert result.payload["ok"] is True
    assert result.payload["filename"] == "tinysrc-1.0.0-py3-none-any.whl"
    body = aws.client("s3").get_object(Bucket=BUCKET, Key="out/wheel")["Body"].read()
    assert hashlib.sha256(body).hexdigest() == result.payload["sha256"]
    assert "tinysrc.py" in zipfile.ZipFile(io.BytesIO(body)).namelist()


def test_a_failed_source_build_is_reported_as_permanent_with_its_log(
    aws: LocalAws, checker: LocalLambda, tmp_path: Path,
) -> None:
    sdist = tmp_path / "broken-1.0.tar.gz"
    sdist.write_bytes(b"not a tar archive at all")
    result = checker.invoke({"action": "build_sdist", "sdist_url": get_url(aws, sdist),
                             "filename": sdist.name, "name": "broken", "version": "1.0",
                             "result_url": put_url(aws, "out/broken"), "timeout": 120})

    assert result.ok, result.error
    error = result.payload["error"]
    assert result.payload["ok"] is False
    assert error["kind"] == "source_build_failed" and error["permanent"] is True
    assert "broken" in error["message"] and error["log"]


def test_no_environment_variable_of_the_function_reaches_the_checked_code(
    aws: LocalAws, tmp_path: Path, report_dir: Path,
) -> None:
    env = {"SOMETHING_SECRET": "s3cr3t-value"}
    with check_function("check-env", timeout_s=120, env=env) as function:
        spy = layer(tmp_path, {"spy/__init__.py": f"""
            import json, os
            with open({str(report_dir / 'env.json')!r}, "w") as f:
                json.dump(dict(os.environ), f)
            try:
                with open(f"/proc/{{os.getppid()}}/environ", "rb") as f:
                    parent = f.read()
            except OSError as exc:
                parent = type(exc).__name__.encode()
            with open({str(report_dir / 'parent')!r}, "wb") as f:
                f.write(parent)
        """})
        verdict = check(aws, function, spy, CheckSpec(own=("spy",)))

    seen = json.loads((report_dir / "env.json").read_text())
    assert verdict.ok, verdict.message
    assert "SOMETHING_SECRET" not in seen and "AWS_LAMBDA_RUNTIME_API" not in seen
    assert not any(key.startswith("AWS_SECRET") or key == "AWS_SESSION_TOKEN" for key in seen)
    assert b"s3cr3t-value" not in (report_dir / "parent").read_bytes()
    assert os.geteuid() == 0  # (the report dir was readable to us as root)


def test_compile_returns_unchecked_hash_bytecode_by_the_presigned_url(
    aws: LocalAws, checker: LocalLambda, tmp_path: Path,
) -> None:
    sources = tmp_path / "sources.zip"
    with zipfile.ZipFile(sources, "w") as zf:
        zf.writestr("pkg/__init__.py", "VALUE = 1\n")
        zf.writestr("pkg/mod.py", "def f():\n    return 2\n")
        zf.writestr("py2.py", "print 'python 2'\n")  # does not compile: left out
    result = checker.invoke({"action": "compile", "sources_url": get_url(aws, sources),
                             "result_url": put_url(aws, "out/bytecode.zip"), "timeout": 60})

    assert result.ok, (result.error, result.logs[-3000:])
    body = aws.client("s3").get_object(Bucket=BUCKET, Key="out/bytecode.zip")["Body"].read()
    assert hashlib.sha256(body).hexdigest() == result.payload["sha256"]
    compiled = zipfile.ZipFile(io.BytesIO(body))
    assert sorted(compiled.namelist()) == ["pkg/__pycache__/__init__.cpython-313.pyc",
                                           "pkg/__pycache__/mod.cpython-313.pyc"]
    header = compiled.read("pkg/__pycache__/mod.cpython-313.pyc")[:16]
    assert int.from_bytes(header[4:8], "little") == 0b01  # hash-based, unchecked
    assert result.payload["files"] == 2
