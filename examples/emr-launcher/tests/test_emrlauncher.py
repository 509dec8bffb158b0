"""emrlauncher against an in-process moto EMR (cluster states never advance there)."""

from __future__ import annotations

import copy
import shutil
from pathlib import Path
from types import MappingProxyType

import pytest
import yaml
from botocore.stub import Stubber
from emrlauncher import ConfigError, LaunchError, PlaceholderError, RequestError, trigger_data_load
from emrlauncher.config import LaunchConfig

CONFIG = Path(__file__).resolve().parents[1] / "config"
REGIONS = ("us-east-1", "eu-west-1")
# read-only, so no test (or library bug) can leak a change into another test
VARIABLES = MappingProxyType(
    {
        "ENVIRONMENT": "prod",
        "DATASET": "sales",
        "LOG_BUCKET": "example-logs",
        "CODE_BUCKET": "example-code",
        "VERSION": "1.4.2",
    }
)


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    """A private copy of the sample config, so a test may edit it."""
    names = {
        "default": "default.yaml",
        "environment": "prod.yaml",
        "configurations": "configurations.json",
    }
    for name in names.values():
        shutil.copy(CONFIG / name, tmp_path / name)
    return {key: tmp_path / name for key, name in names.items()}


def edit_yaml(path: Path, change) -> None:
    document = yaml.safe_load(path.read_text())
    change(document)
    path.write_text(yaml.safe_dump(document))


def launch(files, session=None, regions=REGIONS, variables=VARIABLES) -> dict[str, str]:
    return trigger_data_load(
        regions=regions,
        cluster_config_path=files["configurations"],
        default_config_path=files["default"],
        env_config_path=files["environment"],
        input_vars=variables,
        session=session,
    )


def clusters(session, region: str) -> list[str]:
    return [c["Id"] for c in session.client("emr", region_name=region).list_clusters()["Clusters"]]


def test_environment_is_deep_merged_over_default(files):
    config = LaunchConfig.load(files["default"], files["environment"], files["configurations"])
    pristine = copy.deepcopy(config.default)

    east = config.job_flow_request("us-east-1", VARIABLES)
    west = config.job_flow_request("eu-west-1", VARIABLES)

    # Instances: the default's flag and the region's groups, merged key by key
    assert east["Instances"]["KeepJobFlowAliveWhenNoSteps"] is False
    assert [g["InstanceRole"] for g in east["Instances"]["InstanceGroups"]] == ["MASTER", "CORE"]
    assert east["Instances"]["Ec2SubnetId"] != west["Instances"]["Ec2SubnetId"]
    # a region may override a default
    assert (east["ReleaseLabel"], west["ReleaseLabel"]) == ("emr-7.5.0", "emr-7.3.0")
    assert east["ServiceRole"] == "EMR_DefaultRole" and east["JobFlowRole"] == "EMR_EC2_DefaultRole"
    # building a request leaves the parsed default untouched for the next region
    assert config.default == pristine


def test_launches_every_region_with_its_own_client(aws, files):
    result = launch(files)  # the library's own default session, under moto

    assert list(result) == list(REGIONS)
    for region, cluster_id in result.items():
        assert clusters(aws, region) == [cluster_id]
        cluster = aws.client("emr", region_name=region).describe_cluster(ClusterId=cluster_id)[
            "Cluster"
        ]
        assert cluster["Name"] == "prod-sales-loader"
        assert cluster["ServiceRole"] == "EMR_DefaultRole"
        assert cluster["Ec2InstanceAttributes"]["IamInstanceProfile"] == "EMR_EC2_DefaultRole"
        assert cluster["LogUri"] == "s3://example-logs/emr-logs/sales/"
    west = aws.client("emr", region_name="eu-west-1").describe_cluster(
        ClusterId=result["eu-west-1"]
    )
    assert west["Cluster"]["ReleaseLabel"] == "emr-7.3.0"


def test_steps_are_part_of_the_cluster(aws, files):
    result = launch(files, aws, regions=["us-east-1"])

    steps = aws.client("emr", region_name="us-east-1").list_steps(ClusterId=result["us-east-1"])[
        "Steps"
    ]
    assert [s["Name"] for s in steps] == ["Load sales"]
    assert steps[0]["ActionOnFailure"] == "TERMINATE_CLUSTER"
    assert steps[0]["Config"]["Jar"] == "command-runner.jar"
    assert steps[0]["Config"]["Args"][:4] == [
        "spark-submit",
        "--deploy-mode",
        "cluster",
        "s3://example-code/jobs/load-1.4.2.py",
    ]


def test_full_hadoop_jar_steps_pass_through(aws, files):
    full = {
        "Name": "Custom jar",
        "HadoopJarStep": {"Jar": "s3://example-code/etl.jar", "Args": ["${DATASET}"]},
    }
    edit_yaml(files["default"], lambda d: d["Emr"]["Steps"].append(full))

    result = launch(files, aws, regions=["us-east-1"])

    steps = aws.client("emr", region_name="us-east-1").list_steps(ClusterId=result["us-east-1"])[
        "Steps"
    ]
    custom = next(s for s in steps if s["Name"] == "Custom jar")
    assert custom["Config"]["Jar"] == "s3://example-code/etl.jar"
    assert custom["Config"]["Args"] == ["sales"]


def test_placeholders_are_filled_per_region(aws, files):
    result = launch(files, aws)

    for region, cluster_id in result.items():
        emr = aws.client("emr", region_name=region)
        args = emr.list_steps(ClusterId=cluster_id)["Steps"][0]["Config"]["Args"]
        assert args[-2:] == ["--region", region]
        bootstrap = emr.list_bootstrap_actions(ClusterId=cluster_id)["BootstrapActions"][0]
        assert bootstrap["Args"] == ["--region", region]
        confs = emr.describe_cluster(ClusterId=cluster_id)["Cluster"]["Configurations"]
        core_site = next(c for c in confs if c["Classification"] == "core-site")["Properties"]
        assert core_site["fs.s3.bucket.region"] == region
        # lower-case ${...} belongs to Hadoop and is left alone
        assert core_site["hadoop.tmp.dir"] == "/mnt/tmp/hadoop-${user.name}"


def test_values_are_never_reparsed(files):
    """A value full of quotes and braces stays one string (the seed round-tripped through str())."""
    config = LaunchConfig.load(files["default"], files["environment"], files["configurations"])
    hostile = "x'], 'Evil': {'a': 1}, '${REGION}"

    request = config.job_flow_request("us-east-1", {**VARIABLES, "DATASET": hostile})

    assert request["Steps"][0]["HadoopJarStep"]["Args"][5] == hostile
    assert "Evil" not in request


def test_unknown_placeholder_names_it_and_where_it_is(aws, files):
    variables = {k: v for k, v in VARIABLES.items() if k != "VERSION"}

    with pytest.raises(PlaceholderError) as caught:
        launch(files, aws, variables=variables)

    assert caught.value.placeholder == "VERSION"
    assert "${VERSION} at Emr.Steps[0].Args[3] in default.yaml" in str(caught.value)
    assert all(clusters(aws, region) == [] for region in REGIONS)


@pytest.mark.parametrize(
    ("file", "change", "message"),
    [
        (
            "default",
            lambda d: d["Emr"].pop("ReleaseLabel"),
            "Emr.ReleaseLabel is missing in default.yaml",
        ),
        ("default", lambda d: d["Emr"].pop("Name"), "Emr.Name is missing in default.yaml"),
        (
            "default",
            lambda d: d["Emr"]["Steps"][0].pop("Args"),
            "Emr.Steps[0].Args is missing in default.yaml",
        ),
        (
            "default",
            lambda d: d["Emr"].update(Steps=[]),
            "Emr.Steps in default.yaml must be a non-empty list",
        ),
        ("default", lambda d: d.pop("Emr"), "Emr is missing in default.yaml"),
        (
            "environment",
            lambda d: d["Emr"]["eu-west-1"].pop("ServiceRole"),
            "Emr.eu-west-1.ServiceRole is missing in prod.yaml",
        ),
        (
            "environment",
            lambda d: d["Emr"].pop("eu-west-1"),
            "Region eu-west-1 is not configured in prod.yaml",
        ),
        (
            "environment",
            lambda d: d["Emr"]["eu-west-1"].update(Bogus=1),
            "The EMR request for eu-west-1 is invalid: Parameter validation failed:\n"
            'Unknown parameter in input: "Bogus"',
        ),
    ],
)
def test_invalid_config_names_the_field_and_starts_nothing(aws, files, file, change, message):
    edit_yaml(files[file], change)

    with pytest.raises(ConfigError) as caught:
        launch(files, aws)

    assert message in str(caught.value)
    # us-east-1 is valid, but nothing starts until every region's request is sound
    assert all(clusters(aws, region) == [] for region in REGIONS)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"Classification": "spark"}', "configurations.json must hold a JSON list"),
        ("[{,]", "configurations.json is not valid JSON"),
    ],
)
def test_invalid_configurations_file(files, content, message):
    files["configurations"].write_text(content)

    with pytest.raises(ConfigError, match=message):
        launch(files)


def test_unreadable_and_malformed_yaml(files):
    files["environment"].write_text("Emr: [unclosed")
    with pytest.raises(ConfigError, match="prod.yaml is not valid YAML"):
        launch(files)
    files["environment"].unlink()
    with pytest.raises(ConfigError, match="Cannot read config file .*prod.yaml"):
        launch(files)


@pytest.mark.parametrize(
    ("regions", "variables", "message"),
    [
        ("us-east-1", VARIABLES, "regions must be a non-empty list"),
        ([], VARIABLES, "regions must be a non-empty list"),
        (["us-east-1", "us-east-1"], VARIABLES, "lists us-east-1 more than once"),
        (REGIONS, {**VARIABLES, "REGION": "x"}, "Do not pass REGION"),
        (REGIONS, {**VARIABLES, "lower": "x"}, "Variable name 'lower' cannot match a placeholder"),
        (REGIONS, {**VARIABLES, "VERSION": ["1"]}, "Variable VERSION must be a string or a number"),
    ],
)
def test_bad_arguments_are_refused(files, regions, variables, message):
    with pytest.raises(RequestError, match=message):
        launch(files, regions=regions, variables=variables)


def test_callers_variables_are_not_modified(aws, files):
    given = dict(VARIABLES)
    before = copy.deepcopy(given)

    launch(files, aws, variables=given)
    assert given == before

    launch(
        files, aws, variables=MappingProxyType(given), regions=["us-east-1"]
    )  # read-only works too
    assert given == before


def test_a_refused_launch_reports_the_clusters_already_started(aws, files):
    class HalfBrokenSession:
        """eu-west-1's EMR refuses; us-east-1's is moto."""

        def client(self, service_name: str, region_name: str):
            client = aws.client(service_name, region_name=region_name)
            if region_name == "eu-west-1":
                stubber = Stubber(client)
                stubber.add_client_error("run_job_flow", "ValidationException", "Subnet not found")
                stubber.activate()
            return client

    with pytest.raises(LaunchError) as caught:
        launch(files, session=HalfBrokenSession())

    assert caught.value.region == "eu-west-1"
    assert caught.value.launched == {"us-east-1": clusters(aws, "us-east-1")[0]}
    assert "Subnet not found" in str(caught.value) and "Already started: us-east-1=j-" in str(
        caught.value
    )
