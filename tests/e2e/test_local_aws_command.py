"""`make local-aws`: the stand-in alone, template.yaml deployed, its endpoint and exports printed;
the names are those events/env.json holds (sam local invoke --env-vars)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys

import boto3

from tools.cfn import ROOT


def test_local_aws_serves_the_stack_that_env_json_names() -> None:
    process = subprocess.Popen([sys.executable, "-m", "tools.local_aws", "--port", "0", "--deploy"],
                               cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        exports: dict[str, str] = {}
        endpoint_line = ""
        assert process.stdout is not None
        for line in process.stdout:  # until the last export, printed once it serves
            if line.startswith("# Local AWS (moto) listening on "):
                endpoint_line = line
            elif line.startswith("export "):
                key, value = line.removeprefix("export ").rstrip("\n").split("=", 1)
                exports[key] = json.loads(value)
                if key == "NO_PROXY":
                    break
        assert endpoint_line.split()[-1] == exports["AWS_ENDPOINT_URL"]
        assert exports["AWS_ENDPOINT_URL"].startswith("http://127.0.0.1:")
        session = boto3.session.Session(aws_access_key_id=exports["AWS_ACCESS_KEY_ID"],
                                        aws_secret_access_key=exports["AWS_SECRET_ACCESS_KEY"],
                                        region_name=exports["AWS_DEFAULT_REGION"])
        lam = session.client("lambda", endpoint_url=exports["AWS_ENDPOINT_URL"])
        cfn = session.client("cloudformation", endpoint_url=exports["AWS_ENDPOINT_URL"])
        functions = {r["LogicalResourceId"]: r["PhysicalResourceId"] for r in cfn.describe_stack_resources(
            StackName="layer-builder")["StackResources"] if r.get("ResourceType") == "AWS::Lambda::Function"}
        env_file = json.loads((ROOT / "events" / "env.json").read_text(encoding="utf-8"))
        named = [k for k in env_file if k != "Parameters"]
        assert named and set(named) <= set(functions)
        for logical_id in named:
            deployed = lam.get_function_configuration(
                FunctionName=functions[logical_id])["Environment"]["Variables"]
            assert {k: deployed[k] for k in env_file[logical_id]} == env_file[logical_id], logical_id
    finally:
        process.send_signal(signal.SIGTERM)  # our own child, by its PID
        process.wait(timeout=30)
    assert process.returncode == 0
