"""The local harness: handlers run through the real awslambdaric bootstrap; AWS is moto."""

from __future__ import annotations

import http.client
import json
import os
import signal
import stat
import textwrap
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from botocore.exceptions import ParamValidationError

from tools.lambda_isolation import IsolationError, alive, isolation_available, wait_until
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
    assert first.payload["task_root"] == str(echo.task_root)
    assert first.payload["custom"] == "yes"
    assert first.payload["sys_path"][0] == str(echo.task_root)
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
        seen_layer = function.visible_path(opt_python)
        seen_venv = function.visible_path(project_site_packages())
        seen_code = function.task_root

    assert result.ok, result.error
    assert result.payload["marker"] == "from the layer"
    assert result.payload["doubled"] == 42
    assert Path(result.payload["file"]).is_relative_to(seen_layer)
    sys_path = result.payload["sys_path"]
    assert (
        sys_path.index(str(seen_code))
        < sys_path.index(str(seen_layer))
        < sys_path.index(str(seen_venv))
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
    wait_until(lambda: echo.pid != old_pid)

    result = echo.invoke({"n": 2})

    assert result.ok, result.error  # the dead process's /next must not swallow the event
    assert result.cold_start and result.payload["pid"] != old_pid


# ------------------------------------------------------------------ isolation (as root)

needs_root = pytest.mark.skipif(not isolation_available(),
                                reason="giving each function a user of its own needs root")

PROBE_APP = """
    import http.client, json, os, tempfile

    def handler(event, context):
        tmp = tempfile.gettempdir()
        info = os.stat(tmp)
        seen = {"uid": os.getuid(), "tmp": tmp, "tmp_owner": info.st_uid,
                "tmp_mode": oct(info.st_mode & 0o777), "cache_dir": os.environ.get("CACHE_DIR")}
        with open(os.path.join(tmp, "mine.txt"), "w") as f:
            f.write("secret of " + context.function_name)
        for key, path in event.get("read", {}).items():
            try:
                with open(path, "rb") as f:
                    seen[key] = "read " + repr(f.read(40))
            except OSError as exc:
                seen[key] = type(exc).__name__
        if "runtime_api" in event:
            host, port = event["runtime_api"].split(":")
            conn = http.client.HTTPConnection(host, int(port), timeout=5)
            conn.request("GET", "/2018-06-01/runtime/invocation/next")
            seen["runtime_api"] = conn.getresponse().status
        return seen
"""


@pytest.fixture
def probes(tmp_path: Path) -> Iterator[tuple[LocalLambda, LocalLambda]]:
    code = write_function(tmp_path / "probe", PROBE_APP)
    env = {"CACHE_DIR": "/tmp/layer-builder-cache"}
    with LocalLambda(code, env=env, function_name="probe-a", timeout_s=10) as a, \
            LocalLambda(code, env=env, function_name="probe-b", timeout_s=10) as b:
        yield a, b


@needs_root
def test_each_function_runs_as_a_user_of_its_own_with_a_private_tmp(
    probes: tuple[LocalLambda, LocalLambda],
) -> None:
    a, b = probes
    first = b.invoke({})
    result = a.invoke({"read": {"other_tmp": str(b.tmpdir / "mine.txt"),
                                "other_environ": f"/proc/{b.pid}/environ",
                                "harness_environ": f"/proc/{os.getpid()}/environ"}})

    assert first.ok and result.ok, (first.error, result.error)
    seen = result.payload
    assert seen["uid"] == a.uid != b.uid != os.geteuid()
    assert seen["tmp"] == str(a.tmpdir) and seen["tmp_owner"] == a.uid
    assert seen["tmp_mode"] == "0o700"
    assert seen["cache_dir"] == f"{a.tmpdir}/layer-builder-cache"  # /tmp/... is its own /tmp
    assert seen["other_tmp"] == seen["other_environ"] == "PermissionError"
    assert seen["harness_environ"] == "PermissionError"
    assert (a.tmpdir / "mine.txt").read_text() == "secret of probe-a"


@needs_root
def test_a_runtime_api_answers_only_its_own_functions_processes(
    probes: tuple[LocalLambda, LocalLambda],
) -> None:
    a, b = probes
    wait_until(lambda: b.idle)
    result = a.invoke({"runtime_api": b.runtime_api_address})

    assert result.ok, result.error
    assert result.payload["runtime_api"] == 403
    assert a.uid in b.refused_connections
    assert b.invoke({}).ok  # b's own runtime is unaffected


EXIT_AFTER_ANSWER_APP = """
    import http.client, json, os, sys, time

    def post(address, path, body):
        host, port = address.split(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=5)
        conn.request("POST", path, body=json.dumps(body))
        return conn.getresponse().status

    def handler(event, context):
        api = os.environ["AWS_LAMBDA_RUNTIME_API"]
        if event.get("survivor"):
            if os.fork() == 0:  # a daemon that waits for the next event to answer it
                os.setsid()
                log = open(os.path.join(os.environ["TMPDIR"], "survivor.log"), "a", buffering=1)
                log.write(f"pid {os.getpid()}\\n")
                while True:
                    try:
                        host, port = api.split(":")
                        conn = http.client.HTTPConnection(host, int(port), timeout=60)
                        conn.request("GET", "/2018-06-01/runtime/invocation/next")
                        answer = conn.getresponse()
                        request_id = answer.getheader("Lambda-Runtime-Aws-Request-Id")
                        log.write(f"next {answer.status} {request_id}\\n")
                        if request_id:
                            post(api, f"/2018-06-01/runtime/invocation/{request_id}/response",
                                 {"forged": True})
                    except OSError as exc:
                        log.write(f"refused {type(exc).__name__}\\n")
                    time.sleep(0.05)
            time.sleep(0.3)  # the survivor is long-polling by now
        status = post(api, f"/2018-06-01/runtime/invocation/{context.aws_request_id}/response",
                      {"pid": os.getpid(), "api": api})
        sys.stdout.flush()
        os._exit(0 if status == 202 else 1)
"""


@needs_root
def test_a_runtime_that_exits_after_answering_resets_the_environment(tmp_path: Path) -> None:
    code = write_function(tmp_path / "once", EXIT_AFTER_ANSWER_APP)
    with LocalLambda(code, function_name="once", timeout_s=10) as function:
        first = function.invoke({"survivor": True})
        survivor_log = function.tmpdir / "survivor.log"
        survivor = int(survivor_log.read_text().split()[1])
        wait_until(lambda: function.resets == 1)  # the runtime exited: Lambda resets
        gone = not alive(survivor)
        second = function.invoke({})
        log = survivor_log.read_text()

    assert first.ok and second.ok, (first.error, second.error)
    assert gone  # the reset killed the daemon before any later event existed
    assert "forged" not in second.payload  # the next event went to the new runtime only
    assert second.cold_start and second.payload["pid"] != first.payload["pid"]
    assert second.payload["api"] != first.payload["api"]  # a new Runtime API endpoint
    assert "next 200" not in log


@needs_root
def test_tmp_survives_a_reset_as_in_lambda(tmp_path: Path) -> None:
    code = write_function(tmp_path / "crash", """
        import os

        def handler(event, context):
            path = os.path.join(os.environ["TMPDIR"], "kept")
            before = os.path.exists(path)
            open(path, "w").close()
            if event.get("crash"):
                os._exit(3)
            return {"before": before}
    """)
    with LocalLambda(code, function_name="crash", timeout_s=10) as function:
        crashed = function.invoke({"crash": True})
        after = function.invoke({})

    assert crashed.error_type == "Runtime.ExitError"
    assert after.ok and after.cold_start and after.payload == {"before": True}
    assert function.resets >= 1


@needs_root
def test_the_reset_kills_processes_that_keep_forking(tmp_path: Path) -> None:
    code = write_function(tmp_path / "forker", """
        import os, time

        def handler(event, context):
            if os.fork() == 0:
                os.setsid()
                while True:  # every child forks again: a scan-then-kill loop would chase them
                    try:
                        if os.fork() == 0:
                            time.sleep(0.01)
                            continue
                    except OSError:  # Lambda's 1,024 processes
                        time.sleep(0.01)
                    os._exit(0)
            time.sleep(0.5)
            os._exit(0)  # the runtime ends: Lambda resets the environment
    """)
    with LocalLambda(code, function_name="forker", timeout_s=10) as function:
        result = function.invoke({})
        wait_until(lambda: function.resets >= 1)
        # Only the next runtime process may be left, once it is up. A forker that survived stays;
        # the next runtime's start (its uid set before the harness records its PID) settles.
        user = function.user
        assert user is not None
        try:
            wait_until(lambda: set(user.processes()) <= {function.pid}, timeout_s=5)
        except IsolationError:
            pytest.fail(f"processes {user.processes()} of the forker's user survived the reset "
                        f"(runtime: {function.pid})")

    assert result.error_type == "Runtime.ExitError"


def test_an_init_longer_than_ten_seconds_goes_on_under_the_function_timeout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    import tools.lambda_runtime as runtime

    monkeypatch.setattr(runtime, "INIT_TIMEOUT_S", 0.3)  # Lambda's 10 s, scaled down
    code = write_function(tmp_path / "slow", """
        import time
        time.sleep(0.8)

        def handler(event, context):
            return "ready"
    """)
    with LocalLambda(code, timeout_s=2) as patient:
        ok = patient.invoke({})
    with LocalLambda(code, timeout_s=0.2) as hasty:
        late = hasty.invoke({})

    assert ok.ok and ok.payload == "ready"  # 0.8 s of init: over 0.3, within 0.3 + 2
    assert late.error_type == "Sandbox.Timedout" and "Init phase" in late.error["errorMessage"]
