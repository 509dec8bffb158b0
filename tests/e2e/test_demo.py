"""The demo's stack is template.yaml itself: transformed by samtranslator, packaged, and created
by moto's CloudFormation; what moto lacks is created from the transformed template. Every
resource of the template must be in the stand-in, checked through the service APIs."""

from __future__ import annotations

import pytest

from tools.local_aws import LocalAws
from tools.stack import SERVERLESS_FUNCTION, provision, source_template


@pytest.fixture(scope="module")
def deployed():
    with LocalAws() as aws:
        yield aws, provision(aws, stack_name="demo-check")


def test_every_resource_of_the_template_is_in_the_stack(deployed) -> None:
    _, stack = deployed
    assert stack.missing() == []
    source = source_template()["Resources"]
    transformed = stack.deployment.template["Resources"]
    # SAM resources expand (a function brings its role, permissions...); every other resource
    # keeps its logical id.
    assert {lid for lid, r in source.items() if not r["Type"].startswith("AWS::Serverless::")} \
        <= set(transformed)
    assert {lid for lid, r in source.items() if r["Type"] == SERVERLESS_FUNCTION} <= {
        lid for lid, r in transformed.items() if r["Type"] == "AWS::Lambda::Function"}
    # a resource whose Condition is false (a check function of a target not enabled) is in no
    # stack, in AWS either
    assert set(stack.deployment.physical_ids) | set(stack.deployment.not_in_this_stack) == set(
        transformed)
    assert "CheckPy313X86" in stack.deployment.physical_ids
    assert "CheckPy312Arm" in stack.deployment.not_in_this_stack


def test_a_resource_gone_from_the_stand_in_is_reported(deployed) -> None:
    aws, stack = deployed
    ssm = aws.client("ssm")
    name = stack.name("LayerPointerParameter")
    saved = ssm.get_parameter(Name=name)["Parameter"]
    ssm.delete_parameter(Name=name)
    try:
        assert stack.missing() == ["LayerPointerParameter (AWS::SSM::Parameter)"]
    finally:  # put it back for the other tests
        ssm.put_parameter(Name=name, Value=saved["Value"], Type=saved["Type"])
    assert stack.missing() == []


def test_the_functions_run_with_what_the_template_says(deployed) -> None:
    _, stack = deployed
    source = source_template()
    for logical_id in ("BuilderFunction", "EmrTriggerFunction"):
        config = stack.configuration(logical_id)
        props = source["Resources"][logical_id]["Properties"]
        assert config["Handler"] == props.get("Handler", source["Globals"]["Function"]["Handler"])
        assert config["Timeout"] == props["Timeout"] and config["MemorySize"] == props["MemorySize"]
        declared = set(source["Globals"]["Function"].get("Environment", {}).get("Variables", {})) \
            | set(props.get("Environment", {}).get("Variables", {}))
        assert set(stack.template_environment(logical_id)) == declared
    # Properties moto's CloudFormation ignores are applied from the transformed template.
    s3 = stack.clients.client("s3")
    assert s3.get_bucket_versioning(Bucket=stack.name("SourceBucket"))["Status"] == "Enabled"
    # ...and what moto cannot store is said, not claimed.
    assert "EphemeralStorage" in stack.deployment.not_emulated["BuilderFunction"]


def test_the_deployment_says_what_moto_lacks(deployed) -> None:
    _, stack = deployed
    lines = "\n".join(stack.deployment.lines())
    assert "created by moto's CloudFormation (create_stack of the samtranslator output)" in lines
    for kind in set(stack.deployment.created_here.values()):
        assert kind in lines
    assert "NotificationConfiguration" in lines
