"""The local harness: handlers run through the real awslambdaric bootstrap; AWS is moto."""

from __future__ import annotations

import http.client
import json
import os
import signal
import stat
import textwrap
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from botocore.exceptions import ParamValidationError

from tools.lambda_runtime import LocalLambda, extract_layer_readonly, project_site_packages
from tools.local_aws import LocalAws

ECHO_APP = """
    import os, sys

    def handler(event, context):
        print("handling", context.aws_request_id)
        if "boom" in event:
            raise ValueError(f"bad input: {event['boom']}")
        if "sleep" in event:
            import time
            time.sleep(event["sleep"])
        return {
            "event": event,
            "pid": os.getpid(),
            "function_name": context.function_name,
            "arn": context.invoked_function_arn,
            "remaining_ms": context.get_remaining_time_in_millis(),
            "task_root": os.environ["LAMBDA_TASK_ROOT"],
            "custom": os.environ.get("CUSTOM"),
            "sys_path": sys.path,
        }
"""


def wait_until(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


def write_function(directory: Path, source: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "app.py").write_text(textwrap.dedent(source))
    return directory


@pytest.fixture(scope="module")
def aws() -> Iterator[LocalAws]:
    with LocalAws() as local:
        yield local


@pytest.fixture
def echo(tmp_path: Path) -> Iterator[LocalLambda]:
    code = write_function(tmp_path / "echo", ECHO_APP)
    with LocalLambda(code, env={"CUSTOM": "yes"}, function_name="echo", timeout_s=1.0) as function:
        yield function


def test_result_comes_back_and_warm_invocation_reuses_the_process(echo: LocalLambda) -> None:
    first = echo.invoke({"n": 1})
    second = echo.invoke({"n": 2})

    assert first.ok and second.ok, (first.error, second.error)
    assert first.payload["event"] == {"n": 1}
    assert second.payload["event"] == {"n": 2}
    assert first.payload["pid"] == second.payload["pid"] == echo.pid
    assert (first.cold_start, second.cold_start) == (True, False)
    assert first.payload["function_name"] == "echo"
    assert first.payload["arn"] == "arn:aws:lambda:us-east-1:123456789012:function:echo"
    assert 0 < first.payload["remaining_ms"] <= 1000
    assert first.payload["task_root"] == str(echo.code_dir)
    assert first.payload["custom"] == "yes"
    assert first.payload["sys_path"][0] == str(echo.code_dir)
    assert first.request_id != second.request_id
    assert f"handling {second.request_id}" in second.logs
    assert f"handling {first.request_id}" not in second.logs


def test_exception_returns_lambdas_error_document_and_keeps_the_process(echo: LocalLambda) -> None:
    failed = echo.invoke({"boom": "x"})
    after = echo.invoke({"n": 3})

    assert not failed.ok
    assert failed.error_type == "ValueError"
    assert failed.error is not None and failed.error["errorMessage"] == "bad input: x"
    assert failed.payload == failed.error
    assert any("app.py" in frame for frame in failed.error["stackTrace"])
    assert after.ok and after.payload["pid"] == echo.pid and not after.cold_start


def test_timeout_kills_the_sandbox_and_the_next_invocation_is_cold(echo: LocalLambda) -> None:
    warm_pid = echo.invoke({"n": 1}).payload["pid"]

    timed_out = echo.invoke({"sleep": 30})
    fresh = echo.invoke({"n": 2})

    assert timed_out.error_type == "Sandbox.Timedout"
    assert timed_out.duration_s < 5
    assert fresh.ok and fresh.cold_start
    assert fresh.payload["pid"] != warm_pid


def test_init_time_does_not_count_against_the_function_timeout(tmp_path: Path) -> None:
    code = write_function(
        tmp_path / "slow_init",
        """
        import time
        time.sleep(0.8)  # module-level work: Lambda's init phase

        def handler(event, context):
            return {"remaining_ms": context.get_remaining_time_in_millis()}
        """,
    )
    with LocalLambda(code, timeout_s=0.5) as function:
        result = function.invoke({})

    assert result.ok, result.error
    assert result.cold_start
    assert 0 < result.payload["remaining_ms"] <= 500
    assert result.duration_s < 0.5


def test_import_failure_is_reported_as_an_init_error(tmp_path: Path) -> None:
    code = write_function(tmp_path / "broken", "import module_that_does_not_exist\n")
    with LocalLambda(code, timeout_s=5) as function:
        result = function.invoke({})

    assert result.error_type == "Runtime.ImportModuleError"
    assert "module_that_does_not_exist" in result.error["errorMessage"]  # type: ignore[index]


def test_handler_uses_boto3_against_local_aws_through_the_env(
    tmp_path: Path, aws: LocalAws
) -> None:
    aws.client("s3").create_bucket(Bucket="harness-bucket")
    code = write_function(
        tmp_path / "s3fn",
        """
        import boto3

        s3 = boto3.client("s3")  # no endpoint or credentials in code, as in Lambda

        def handler(event, context):
            s3.put_object(Bucket=event["bucket"], Key=event["key"], Body=b"written by the handler")
            listing = s3.list_objects_v2(Bucket=event["bucket"])
            return {"keys": [item["Key"] for item in listing["Contents"]]}
        """,
    )
    with LocalLambda(code, env=aws.env(), timeout_s=10) as function:
        result = function.invoke({"bucket": "harness-bucket", "key": "out/hello.txt"})

    assert result.ok, result.error
    assert result.payload == {"keys": ["out/hello.txt"]}
    body = aws.client("s3").get_object(Bucket="harness-bucket", Key="out/hello.txt")["Body"].read()
    assert body == b"written by the handler"


def test_local_aws_keeps_botocore_validation_and_fake_credentials(aws: LocalAws) -> None:
    s3 = aws.client("s3")
    assert s3.meta.config.parameter_validation is True
    with pytest.raises(ParamValidationError):
        s3.put_object(Bucket="harness-bucket")  # Key missing: rejected before any request

    env = aws.env()
    assert env["AWS_ENDPOINT_URL"] == aws.endpoint_url
    assert aws.endpoint_url.startswith("http://127.0.0.1:")
    assert env["AWS_ACCESS_KEY_ID"] == env["AWS_SECRET_ACCESS_KEY"] == "testing"
    assert env["AWS_REGION"] == env["AWS_DEFAULT_REGION"] == "us-east-1"
    assert "AWS_ENDPOINT_URL" not in os.environ  # the parent's environment is left alone


def test_each_local_aws_starts_with_an_empty_account() -> None:
    with LocalAws() as first:
        first.client("s3").create_bucket(Bucket="left-behind")
    with LocalAws() as second:
        assert second.client("s3").list_buckets()["Buckets"] == []


def make_layer_zip(path: Path) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("python/harness_layer_mod/__init__.py", "MARKER = 'from the layer'\n")
        archive.writestr(
            "python/harness_layer_mod/helpers.py", "def double(x):\n    return 2 * x\n"
        )
    return path


def test_layer_is_importable_read_only_and_ahead_of_the_venv(tmp_path: Path) -> None:
    opt_python = extract_layer_readonly(make_layer_zip(tmp_path / "layer.zip"), tmp_path / "opt")
    code = write_function(
        tmp_path / "consumer",
        """
        import sys
        import harness_layer_mod
        from harness_layer_mod.helpers import double

        def handler(event, context):
            return {"marker": harness_layer_mod.MARKER, "file": harness_layer_mod.__file__,
                    "doubled": double(event["x"]), "sys_path": sys.path}
        """,
    )
    with LocalLambda(code, layer_dirs=[opt_python], timeout_s=5) as function:
        result = function.invoke({"x": 21})

    assert result.ok, result.error
    assert result.payload["marker"] == "from the layer"
    assert result.payload["doubled"] == 42
    assert Path(result.payload["file"]).is_relative_to(opt_python.resolve())
    sys_path = result.payload["sys_path"]
    assert (
        sys_path.index(str(code.resolve()))
        < sys_path.index(str(opt_python.resolve()))
        < sys_path.index(str(project_site_packages()))
    )
    for path in [opt_python, *opt_python.rglob("*")]:
        assert path.stat().st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH) == 0, path
    # Root ignores the modes above; PYTHONDONTWRITEBYTECODE is what keeps the layer untouched.
    assert not list(opt_python.rglob("__pycache__"))


def test_layer_zip_without_python_dir_is_rejected(tmp_path: Path) -> None:
    bad = tmp_path / "bad.zip"
    with zipfile.ZipFile(bad, "w") as archive:
        archive.writestr("harness_layer_mod/__init__.py", "")
    with pytest.raises(RuntimeError, match="no python/ directory"):
        extract_layer_readonly(bad, tmp_path / "opt")


def test_packages_limits_the_function_to_the_managed_runtime_and_named_distributions(
    tmp_path: Path,
) -> None:
    code = write_function(
        tmp_path / "isolated",
        """
        import importlib.util

        def handler(event, context):
            return {name: importlib.util.find_spec(name) is not None for name in event["names"]}
        """,
    )
    with LocalLambda(code, packages=["pyyaml"], timeout_s=5) as function:
        result = function.invoke({"names": ["boto3", "awslambdaric", "yaml", "moto", "pytest"]})

    assert result.ok, result.error
    # boto3 and the runtime client come with Lambda; yaml was asked for; dev tools were not.
    assert result.payload == {
        "boto3": True,
        "awslambdaric": True,
        "yaml": True,
        "moto": False,
        "pytest": False,
    }


def test_runtime_api_rejects_an_unknown_request_id(echo: LocalLambda) -> None:
    api_host, api_port = echo.runtime_api_address.split(":")
    connection = http.client.HTTPConnection(api_host, int(api_port), timeout=5)
    connection.request("POST", "/2018-06-01/runtime/invocation/not-a-request/response", body=b"{}")
    response = connection.getresponse()

    assert response.status == 400
    assert response.getheader("Content-Type") == "application/json"
    assert json.loads(response.read())["errorType"] == "InvalidRequestID"
    assert echo.invoke({"n": 1}).ok  # the real invocation path is unaffected


def test_a_crashed_idle_process_is_replaced_without_losing_the_event(echo: LocalLambda) -> None:
    old_pid = echo.invoke({"n": 1}).payload["pid"]
    wait_until(lambda: echo.idle)
    os.kill(old_pid, signal.SIGKILL)  # dies while its runtime client long-polls /next
    wait_until(lambda: echo.pid is None)

    result = echo.invoke({"n": 2})

    assert result.ok, result.error  # the dead process's /next must not swallow the event
    assert result.cold_start and result.payload["pid"] != old_pid
