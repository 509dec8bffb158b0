"""`sam local invoke` as the README documents it, minus the container: both functions run from a
real `sam build` layout (aws-lambda-builders, the library `sam build` uses) with the events in
events/ and the variables from events/env.json, through the real runtime client, with the
layer unpacked read-only as /opt."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tools import sam_local
from tools.cfn import ROOT
from tools.demo import EXAMPLE, fetch_layer
from tools.lambda_runtime import find_python313
from tools.local_aws import LocalAws

pytestmark = [pytest.mark.network, pytest.mark.slow]
EVENTS = ROOT / "events"


@pytest.fixture(scope="module")
def build_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`make build` into a private directory (pip downloads the functions' requirements)."""
    dest = tmp_path_factory.mktemp("sam") / "build"
    path = os.environ.get("PATH", "")
    # aws-lambda-builders checks a python3.13 on PATH against the runtime, as sam build does.
    os.environ["PATH"] = f"{Path(find_python313()).parent}{os.pathsep}{path}"
    try:
        # the two functions the flow runs (`make build` builds every one, as sam build does)
        sam_local.build(dest, only=("BuilderFunction", "EmrTriggerFunction"))
    finally:
        os.environ["PATH"] = path
    return dest


@pytest.fixture(scope="module")
def env_file() -> dict:
    return json.loads((EVENTS / "env.json").read_text(encoding="utf-8"))


def test_env_json_is_what_the_template_deploys(env_file: dict) -> None:
    """events/env.json names what `make local-aws` creates; `make env-vars` rewrites it."""
    with LocalAws() as aws:
        expected = sam_local.env_vars(sam_local.deployed_stack(aws))
    assert env_file == expected, "events/env.json is stale: run `make env-vars`"
    assert env_file["Parameters"]["AWS_ENDPOINT_URL"] == "http://host.docker.internal:5000"


def test_every_variable_in_env_json_is_declared_by_the_template(env_file: dict) -> None:
    """sam local invoke ignores keys the template does not declare (aws-sam-cli#1553)."""
    template = sam_local.source_template()
    globals_ = set(template["Globals"]["Function"].get("Environment", {}).get("Variables", {}))
    functions = sam_local.functions()
    for logical_id in set(env_file) - {"Parameters"}:
        props = functions[logical_id]
        declared = globals_ | set(props.get("Environment", {}).get("Variables", {}))
        assert set(env_file[logical_id]) <= declared, logical_id
        if declared:  # Parameters applies to every function that declares its variables
            assert set(env_file["Parameters"]) <= declared, logical_id


@pytest.fixture(scope="module")
def flow(build_dir: Path, env_file: dict, tmp_path_factory: pytest.TempPathFactory):
    work = tmp_path_factory.mktemp("invoke")
    opt = work / "opt"
    with LocalAws() as aws:
        stack = sam_local.deployed_stack(aws)
        event = json.loads((EVENTS / "s3-put.json").read_text(encoding="utf-8"))
        event = sam_local.upload_for_event(stack, event, EXAMPLE, work)
        builder = sam_local.invoke(stack, "BuilderFunction", event, env_file, build_dir=build_dir,
                                   opt_dir=opt)
        assert builder.ok, builder.logs[-3000:]
        result = builder.payload["results"][0]
        layer = fetch_layer(stack, result["report"], work / "layer.zip")
        emr_event = json.loads((EVENTS / "emr-direct.json").read_text(encoding="utf-8"))
        emr = sam_local.invoke(stack, "EmrTriggerFunction", emr_event, env_file, [layer],
                               build_dir=build_dir, opt_dir=opt)
        prefix = stack.template_environment("BuilderFunction")["LAYER_NAME_PREFIX"]
        yield {"builder": builder, "result": result, "emr": emr, "layer": layer, "opt": opt,
               "prefix": prefix}


def test_the_builder_runs_from_its_build_output_with_the_s3_event(flow) -> None:
    assert flow["result"]["status"] == "published"
    # the stack's layer prefix, derived from its name when LayerNamePrefix is empty
    assert flow["prefix"] == "layer-builder-"
    assert flow["result"]["layer_name"] == flow["prefix"] + "emr-launcher"


def test_the_emr_trigger_imports_its_layer_from_the_read_only_opt(flow) -> None:
    emr = flow["emr"]
    assert emr.ok, emr.logs[-3000:]
    clusters = emr.payload.get("clusters", emr.payload)
    assert set(clusters) == {"us-east-1", "us-west-2"}
    python = flow["opt"] / "EmrTriggerFunction" / "0-layer" / "python"
    assert (python / "emrlauncher").is_dir()
    assert not os.access(python / "emrlauncher", os.W_OK) or os.geteuid() == 0
    assert (python / "emrlauncher").stat().st_mode & 0o222 == 0  # read-only, as /opt is


def test_the_command_line_twin_prints_the_response(flow, build_dir: Path, tmp_path: Path) -> None:
    """What `make local-invoke FUNCTION=EmrTriggerFunction LAYER=...` runs."""
    done = subprocess.run(
        [sys.executable, "-m", "tools.sam_local", "invoke", "EmrTriggerFunction",
         "-e", str(EVENTS / "emr-direct.json"), "--layer", str(flow["layer"]),
         "--build-dir", str(build_dir)],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Invoking app.handler (EmrTriggerFunction)" in done.stderr
    payload = json.loads(done.stdout.strip().splitlines()[-1])
    assert set(payload.get("clusters", payload)) == {"us-east-1", "us-west-2"}
