"""The demo's flow as a test: upload → builder (real awslambdaric bootstrap, its import check in
the stack's check function, each a local Lambda) → layer → EMR trigger; then a two-target upload.

Moto speaks HTTP on loopback; every name and setting comes from template.yaml.
"""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import pytest

from layer_builder.sandbox_local import LocalSandbox
from tests.reliability.service_env import FakeContext, load_builder_app
from tools.demo import EXAMPLE, fetch_layer, run_builder, run_emr, zip_project
from tools.lambda_runtime import extract_layer_readonly
from tools.local_aws import LocalAws
from tools.stack import provision

pytestmark = [pytest.mark.network, pytest.mark.slow]


@pytest.fixture(scope="module")
def flow(tmp_path_factory):
    work = tmp_path_factory.mktemp("flow")
    with LocalAws() as aws:
        stack = provision(aws)
        lam = aws.client("lambda")
        emr_name = stack.name("EmrTriggerFunction")
        # The consumer already uses another layer of its own: it must survive the attach.
        other = lam.publish_layer_version(
            LayerName="team-utils", Content={"ZipFile": _tiny_layer(work)},
            CompatibleRuntimes=["python3.13"])["LayerVersionArn"]
        lam.update_function_configuration(FunctionName=emr_name, Layers=[other])

        archive = zip_project(EXAMPLE, work / "aws-emr-launcher-0.1.0.zip")
        key = stack.upload_key(archive.name)
        event = stack.upload(archive, key)
        reupload = stack.upload(archive, key)  # same bytes, new object version
        first, again, unchanged = (r.payload["results"][0] for r in run_builder(
            stack, [event, event, reupload]))
        layer_dir = extract_layer_readonly(fetch_layer(stack, first["report"], work / "layer.zip"),
                                           work / "opt")
        emr = run_emr(stack, layer_dir)
        yield {
            "stack": stack, "first": first, "again": again, "unchanged": unchanged, "other": other, "emr": emr,
            "layer_dir": layer_dir,
            "versions": lam.list_layer_versions(LayerName=first["layer_name"])["LayerVersions"],
            "emr_layers": [x["Arn"] for x in lam.get_function_configuration(FunctionName=emr_name)["Layers"]],
            "pointer": aws.client("ssm").get_parameter(
                Name=stack.environment("BuilderFunction")["POINTER_PARAMETER_PREFIX"] + "/"
                + first["layer_name"])["Parameter"]["Value"],
            "report": json.loads(aws.client("s3").get_object(
                Bucket=stack.name("ArtifactBucket"), Key=first["report"])["Body"].read()),
        }


def _tiny_layer(work):
    path = work / "team-utils.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("python/team_utils.py", "VALUE = 1\n")
    return path.read_bytes()


def test_builder_publishes_one_version_for_a_duplicated_event(flow):
    assert flow["first"]["status"] == "published"
    assert flow["first"]["version_arn"].endswith(":1")
    assert len(flow["versions"]) == 1
    assert flow["again"]["version_arn"] == flow["first"]["version_arn"]


def test_reuploading_the_same_bytes_answers_without_a_build(flow):
    assert flow["unchanged"]["status"] == "unchanged"
    assert flow["unchanged"]["version_arn"] == flow["first"]["version_arn"]
    assert flow["unchanged"]["published"] is False
    assert len(flow["versions"]) == 1


def test_consumer_lists_new_layer_and_keeps_its_other_layer(flow):
    assert flow["emr_layers"] == [flow["other"], flow["first"]["version_arn"]]
    assert flow["pointer"] == flow["first"]["version_arn"]


def test_report_describes_the_build(flow):
    report = flow["report"]
    assert report["status"] == "published"
    build = report["build"]
    assert build["layer_name"] == flow["first"]["layer_name"]
    assert build["runtime"] == "python3.13"
    assert {p["name"] for p in build["packages"]} == {"pyyaml"}
    assert build["own_packages"] == ["emrlauncher"]
    assert report["attachments"][0]["status"] == "attached"
    assert report["ordering"]["compared"].startswith("S3 eventTime")


def test_layer_is_read_only_python_tree_with_bytecode(flow):
    layer = flow["layer_dir"]
    assert (layer / "emrlauncher" / "data_loader.py").is_file()
    assert list((layer / "emrlauncher" / "__pycache__").glob("*.cpython-313.pyc"))
    assert not any(p.name == "tests" for p in layer.iterdir())


def test_emr_trigger_launches_every_region_from_the_layer(flow):
    emr = flow["emr"]
    clusters = emr.get("clusters", emr)
    assert set(clusters) == {"us-east-1", "us-west-2"}
    assert all(str(c).startswith("j-") for c in clusters.values())


# ---------------------------------------------------------------- one upload, two targets

MATRIX = ["python3.13/x86_64", "python3.12/arm64"]


@pytest.fixture(scope="module")
def matrix(tmp_path_factory):
    """A stack building python3.13 and 3.12 on x86_64 and arm64; team data's project asks for two
    of them; its consumers run python3.13/x86_64 (the EMR trigger), python3.12/arm64 and
    python3.11/x86_64 (no matching target).

    The builder runs in this process (service_env.load_builder_app, a cold start of app.py) with
    LocalSandbox: the arm64 and python3.12 check functions cannot run on this machine, so the
    arm64 layer is checked through its x86_64 twin, as the CLI does."""
    work = tmp_path_factory.mktemp("matrix")
    name = "matrix"
    arm, old = f"{name}-arm-consumer", f"{name}-py311-consumer"
    with LocalAws() as aws, pytest.MonkeyPatch.context() as env:
        teams = [{"name": "data", "layer_prefix": f"{name}-data-",
                  "consumers": [f"{name}-emr-trigger", arm, old],
                  "subscribed_layers": ["emr-launcher"]}]
        stack = provision(aws, overrides={"Teams": json.dumps(teams),
                                          "Runtimes": "python3.13,python3.12",
                                          "Architectures": "x86_64,arm64"}, stack_name=name)
        lam = aws.client("lambda")
        role = lam.get_function_configuration(FunctionName=f"{name}-emr-trigger")["Role"]
        for function, runtime, arch in ((arm, "python3.12", "arm64"), (old, "python3.11", "x86_64")):
            lam.create_function(FunctionName=function, Runtime=runtime, Architectures=[arch],
                                Role=role, Handler="app.handler",
                                Code={"ZipFile": _tiny_layer(work)})
        project = Path(shutil.copytree(EXAMPLE, work / "emr-launcher",
                                       ignore=shutil.ignore_patterns(".venv", "__pycache__")))
        pyproject = project / "pyproject.toml"
        pyproject.write_text(pyproject.read_text(encoding="utf-8") + f"targets = {json.dumps(MATRIX)}\n",
                             encoding="utf-8")
        archive = zip_project(project, work / "aws-emr-launcher-0.2.0.zip")
        event = stack.upload(archive, f"incoming/data/{archive.name}")
        for key, value in (stack.environment("BuilderFunction") | {
                "CACHE_DIR": str(work / "cache")}).items():
            env.setenv(key, value)
        app = load_builder_app()
        app.adapters.sandbox = LocalSandbox()
        result = app.handler(event, FakeContext(function_name=stack.name("BuilderFunction")))[
            "results"][0]
        yield {
            "result": result,
            "report": json.loads(aws.client("s3").get_object(
                Bucket=stack.name("ArtifactBucket"), Key=result["report"])["Body"].read()),
            "layers": {t["target"]: _version(lam, t["version_arn"]) for t in result["targets"]},
            "consumers": {f: [x["Arn"] for x in lam.get_function_configuration(
                FunctionName=f).get("Layers", [])] for f in (f"{name}-emr-trigger", arm, old)},
            "names": (f"{name}-emr-trigger", arm, old),
        }


def _version(lam, arn):
    layer, _, number = arn.rpartition(":")
    return lam.get_layer_version(LayerName=layer, VersionNumber=int(number))


def test_a_matrix_upload_publishes_one_version_per_target(matrix):
    result = matrix["result"]
    assert result["status"] == "published", result["error"]
    assert [t["target"] for t in result["targets"]] == MATRIX
    names = [t["layer_name"] for t in result["targets"]]
    assert names == ["matrix-data-emr-launcher", "matrix-data-emr-launcher-py312-arm64"]
    for target, version in matrix["layers"].items():
        runtime, arch = target.split("/")
        assert version["CompatibleRuntimes"] == [runtime]
        assert version["CompatibleArchitectures"] == [arch]
        assert version["Version"] == 1


def test_each_consumer_gets_only_the_version_for_its_runtime_and_architecture(matrix):
    x86, arm = (t["version_arn"] for t in matrix["result"]["targets"])
    emr, arm_fn, old = matrix["names"]
    assert matrix["consumers"][emr] == [x86]
    assert matrix["consumers"][arm_fn] == [arm]
    assert matrix["consumers"][old] == []
    by_function = {a["function"]: a for a in matrix["result"]["attachments"]}
    assert by_function[old]["status"] == "no matching target"
    assert "python3.11/x86_64" in by_function[old]["reason"]


def test_one_report_lists_every_target(matrix):
    report = matrix["report"]
    assert [t["target"] for t in report["targets"]] == MATRIX
    assert [t["build"]["arch"] for t in report["targets"]] == ["x86_64", "arm64"]
    assert all(t["html"].endswith(".html") for t in report["targets"])
