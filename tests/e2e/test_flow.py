"""The demo's flow as a test: upload → builder (real awslambdaric bootstrap) → layer → EMR trigger.

Moto speaks HTTP on loopback; every name and setting comes from template.yaml.
"""

from __future__ import annotations

import json
import zipfile

import pytest

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
        event = stack.upload(archive, f"incoming/{archive.name}")
        reupload = stack.upload(archive, f"incoming/{archive.name}")  # same bytes, new object version
        first, again, unchanged = (r.payload["results"][0] for r in run_builder(
            stack, [event, event, reupload], work / "cache"))
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
