"""The layer's whole life on the local stand-in, as a CI job or an operator runs it: real builds
(hermetic index on disk, real uv, python3.13 and python3.12) published by `layer-builder publish`
to moto over HTTP, then versions, prune, rollback and share on what was published.

Where moto differs from AWS, and how the tests stay honest about it:
- GetLayerVersionPolicy: moto returns the request's fields (Principal "<account>",
  OrganizationId) where AWS returns {"AWS": "arn:aws:iam::<account>:root"} and an
  aws:PrincipalOrgID condition; the assertions accept exactly those two shapes.
- moto accepts a second AddLayerVersionPermission with the same statement id (AWS answers
  ResourceConflictException); `share` reads the policy first, so the test asserts one statement.
- ListFunctions(FunctionVersion=ALL) and published function versions are real in moto, so the
  "used by a published version" case runs here for real.
- moto's Content.Location is a fake s3://; nothing here downloads a layer back from Lambda.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from lambda_account import CLI, Account
from lockfactory import make_project
from wheelhouse import lock_entry, simple_index, write_code, write_wheel

from tools.local_aws import LocalAws

pytestmark = pytest.mark.slow

BUCKET = "stack-artifacts"
PREFIX = "stack-data-"
PRIMARY = "stack-data-tools"
SECONDARY = "stack-data-tools-py312-x86_64"
POINTERS = "/stack/layers"
ARN = "arn:aws:lambda:us-east-1:123456789012:layer"
WORKFLOW = Path(__file__).parents[2] / "examples" / "ci" / "publish-layer.yml"
PYPROJECT = """[tool.layer-builder]
name = "tools"
targets = ["python3.13/x86_64", "python3.12/x86_64"]
"""


@pytest.fixture(scope="module")
def index(tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("index")
    pure = write_wheel(root / "wheels", "tinypure", "1.0.0", "py3-none-any",
                       {"tinypure.py": b"def double(x):\n    return 2 * x\n"})
    return simple_index(root, [pure]).as_uri(), pure


@pytest.fixture(scope="module")
def story(tmp_path_factory, index, make_cache_dir):
    """The whole story, recorded once (xdist may spread the tests over workers, so no test may
    depend on another's side effects): a two-target project, three consumers, then publish,
    publish again, refusals, two code changes, prune, rollback, share and the CI example."""
    url, pure = index
    work = tmp_path_factory.mktemp("life")
    project = work / "tools"
    make_project(project, {"tinypure": lock_entry(pure)}, python_version=None)
    write_code(project, {"pyproject.toml": PYPROJECT,
                         "tools_app/__init__.py": "import tinypure\nVERSION = 1\n"})
    cache = make_cache_dir(work / "cache")
    seen: dict = {}
    with LocalAws() as aws:
        account = Account(aws)
        aws.client("s3").create_bucket(Bucket=BUCKET)
        seen["utils"] = utils = account.layer(f"{PREFIX}utils", "U = 1\n")
        account.function("fn313", utils)
        account.function("fn312", runtime="python3.12")
        account.function("bystander")
        account.function("old311", runtime="python3.11")

        def publish(*args: str):
            return account.cli("publish", project, "--bucket", BUCKET, "--layer-prefix", PREFIX,
                               "--index-url", url, "--cache-dir", cache, *args)

        def snapshot(key: str) -> None:
            seen[key] = {"versions": {n: account.versions(n) for n in (PRIMARY, SECONDARY)},
                         **{f: account.layers_of(f) for f in ("fn313", "fn312", "bystander", "old311")}}

        seen["first"] = publish("--attach", "fn313", "--attach", "fn312", "--ssm-prefix", POINTERS)
        snapshot("after first")
        seen["described"] = {
            n: account.lam.get_layer_version(LayerName=n, VersionNumber=1) for n in (PRIMARY, SECONDARY)}
        seen["pointers"] = {n: account.pointer(f"{POINTERS}/{n}") for n in (PRIMARY, SECONDARY)}
        seen["keys"] = [o["Key"] for o in aws.client("s3").list_objects_v2(Bucket=BUCKET)["Contents"]]
        seen["again"] = publish("--attach", "fn313", "--attach", "fn312", "--json")
        seen["incompatible"] = publish("--attach", "fn313", "--attach", "old311")
        seen["ghost"] = publish("--attach", "ghost")
        snapshot("after refusals")

        # tools:2 and tools:3 from two code changes (python3.13 only); fn313's published
        # version 1 stays frozen on tools:1.
        account.lam.publish_version(FunctionName="fn313")
        seen["changes"] = []
        for version in (2, 3):
            (project / "tools_app" / "__init__.py").write_text(f"import tinypure\nVERSION = {version}\n")
            seen["changes"].append(publish("--runtime", "python3.13", "--attach", "fn313",
                                           "--ssm-prefix", POINTERS))
        snapshot("before prune")
        pointer = f"{POINTERS}/{PRIMARY}"
        seen["prune"] = account.cli("prune", PRIMARY, "--keep", "1", "--ssm-parameter", pointer, "--json")
        snapshot("after prune")
        seen["fn313:1"] = account.layers_of("fn313", "1")
        seen["rollback refused"] = account.cli("rollback", PRIMARY, "--to", "2", "--ssm-parameter", pointer)
        seen["pointer before rollback"] = account.pointer(pointer)
        seen["rollback"] = account.cli("rollback", PRIMARY, "--to", "1", "--attach", "fn313",
                                       "--ssm-parameter", pointer)
        snapshot("after rollback")
        seen["pointer after rollback"] = account.pointer(pointer)
        seen["versions"] = account.cli("versions", PRIMARY, "--ssm-parameter", pointer, "--json")
        share = ("share", SECONDARY, "--version", "1", "--organization", "o-a1b2c3d4e5")
        seen["share"] = [account.cli(*share), account.cli(*share)]
        seen["policy"] = account.policy(SECONDARY, 1)
        seen["ci"] = run_ci_example(account, project, work, url, cache)
        snapshot("after ci")
    return seen


def run_ci_example(account: Account, project: Path, work: Path, url: str, cache: Path) -> dict:
    """The Publish step of examples/ci/publish-layer.yml, its script and environment as written
    (the repository variables filled in), against the stand-in: what CI would run after
    configure-aws-credentials. The lock names ${PIP_INDEX_URL}, so no --index-url here."""
    if shutil.which("jq") is None:
        return {"skip": "jq (which GitHub's runners have) is not installed here"}
    workflow = yaml.safe_load(WORKFLOW.read_text())
    (step,) = [s for s in workflow["jobs"]["publish"]["steps"] if s.get("id") == "publish"]
    values = {"secrets.PIP_INDEX_URL": url, "vars.LAYER_BUCKET": BUCKET,
              "vars.LAYER_PREFIX": PREFIX, "vars.LAYER_CONSUMERS": "fn313 fn312"}
    env = {k: re.sub(r"\$\{\{ *([\w.]+) *\}\}", lambda m: values[m.group(1)], v)
           for k, v in step["env"].items()}
    output = work / "github-output"
    output.write_text("")
    done = subprocess.run(
        ["bash", "-e", "-o", "pipefail", "-c", step["run"]], cwd=project, capture_output=True,
        text=True, timeout=600, check=False,
        env={**os.environ, **account.aws.env(), **env, "GITHUB_OUTPUT": str(output),
             "LAYER_BUILDER_CACHE_DIR": str(cache),
             "PATH": f"{CLI.parent}{os.pathsep}{os.environ.get('PATH', '')}"})
    return {"returncode": done.returncode, "stdout": done.stdout, "stderr": done.stderr,
            "output": output.read_text(), "report": json.loads((project / "publish.json").read_text())}


def test_a_matrix_publish_makes_one_version_per_target_attached_by_runtime(story):
    first = story["first"]
    assert first.returncode == 0, first.stderr
    arns = first.stdout.strip().splitlines()[-2:]
    assert arns == [f"{ARN}:{PRIMARY}:1", f"{ARN}:{SECONDARY}:1"]
    state = story["after first"]
    assert state["versions"] == {PRIMARY: [1], SECONDARY: [1]}
    assert state["fn313"] == [story["utils"], arns[0]]  # its other layer stays first
    assert state["fn312"] == [arns[1]]
    assert state["bystander"] == [] and state["old311"] == []
    for name, runtime in ((PRIMARY, "python3.13"), (SECONDARY, "python3.12")):
        assert story["described"][name]["CompatibleRuntimes"] == [runtime]
        assert story["described"][name]["CompatibleArchitectures"] == ["x86_64"]
        assert story["pointers"][name] == f"{ARN}:{name}:1"
    keys = {key.split("/")[1]: key for key in story["keys"]}
    assert sorted(keys) == [PRIMARY, SECONDARY] and len(story["keys"]) == 2
    for name, key in keys.items():  # stored under the zip's sha256
        digest = base64.b64decode(story["described"][name]["Content"]["CodeSha256"]).hex()
        assert key == f"layers/{name}/{digest}.zip"


def test_publishing_the_same_content_again_makes_no_version(story):
    again = story["again"]
    assert again.returncode == 0, again.stderr
    results = again.json["targets"]
    assert [r["published"] for r in results] == [False, False]
    assert [r["version"] for r in results] == [1, 1]
    assert {a["status"] for r in results for a in r["attachments"]} == {"unchanged"}
    assert story["after refusals"]["versions"] == {PRIMARY: [1], SECONDARY: [1]}


def test_an_incompatible_or_unknown_consumer_is_refused_before_anything_is_built(story):
    refused, missing = story["incompatible"], story["ghost"]
    assert refused.returncode == 2
    assert "Function old311 runs python3.11 on x86_64, but this publish builds " \
           "python3.13/x86_64, python3.12/x86_64" in refused.stderr
    assert "Installing" not in refused.stderr  # refused before building
    assert missing.returncode == 2 and "Function ghost does not exist" in missing.stderr
    assert "Functions that use the layer: fn313, fn312" in missing.stderr
    assert story["after refusals"] == {**story["after first"]}


def test_prune_keeps_a_version_still_attached_to_a_function(story):
    assert [c.returncode for c in story["changes"]] == [0, 0], story["changes"][-1].stderr
    assert [c.stdout.strip().splitlines()[-1] for c in story["changes"]] == [
        f"{ARN}:{PRIMARY}:2", f"{ARN}:{PRIMARY}:3"]
    assert story["before prune"]["versions"][PRIMARY] == [1, 2, 3]
    pruned = story["prune"]
    assert pruned.returncode == 0, pruned.stderr
    actions = {d["version"]: (d["action"], d["reasons"]) for d in pruned.json["decisions"]}
    assert actions[1] == ("keep", ["used by fn313:1"])
    assert actions[2][0] == "deleted"
    assert actions[3] == ("keep", ["among the newest 1 (--keep 1)", "used by fn313",
                                   "named by the SSM pointer"])
    assert story["after prune"]["versions"][PRIMARY] == [1, 3]
    assert story["fn313:1"] == [story["utils"], f"{ARN}:{PRIMARY}:1"]


def test_rollback_puts_the_consumer_and_the_pointer_on_the_older_version(story):
    refused = story["rollback refused"]
    assert refused.returncode == 2 and "Existing versions: 3, 1." in refused.stderr
    assert story["pointer before rollback"] == f"{ARN}:{PRIMARY}:3"
    done = story["rollback"]
    assert done.returncode == 0, done.stderr
    assert story["after rollback"]["fn313"] == [story["utils"], f"{ARN}:{PRIMARY}:1"]
    assert story["pointer after rollback"] == f"{ARN}:{PRIMARY}:1"
    listed = story["versions"].json["versions"]
    assert [(v["version"], v["pointer"], v["used_by"]) for v in listed] == [
        (3, False, []), (1, True, ["fn313", "fn313:1"])]


def test_share_grants_get_layer_version_in_the_policy_lambda_returns(story):
    assert [r.returncode for r in story["share"]] == [0, 0]
    assert "was granted already" in story["share"][1].stdout
    (statement,) = story["policy"]  # one statement, even after sharing twice
    assert statement["Sid"] == "layer-builder-o-a1b2c3d4e5"
    assert statement["Action"] == "lambda:GetLayerVersion" and statement["Principal"] == "*"
    assert statement["Resource"] == f"{ARN}:{SECONDARY}:1"
    org = statement.get("OrganizationId") or \
        statement["Condition"]["StringEquals"]["aws:PrincipalOrgID"]
    assert org == "o-a1b2c3d4e5"


def test_the_ci_examples_publish_step_publishes_and_attaches(story):
    ci = story["ci"]
    if "skip" in ci:
        pytest.skip(ci["skip"])
    assert ci["returncode"] == 0, ci["stderr"]
    # python3.13 holds the bytes of tools:3 already (no new version; fn313, rolled back to 1,
    # is attached to it again as the workflow asks); python3.12 changed since its version 1.
    assert ci["stdout"].splitlines() == [
        f"python3.13/x86_64 {ARN}:{PRIMARY}:3 published=false",
        f"python3.12/x86_64 {ARN}:{SECONDARY}:2 published=true"]
    assert ci["output"] == f"arn={ARN}:{PRIMARY}:3\n"
    after = story["after ci"]
    assert after["versions"] == {PRIMARY: [1, 3], SECONDARY: [1, 2]}
    assert after["fn313"] == [story["utils"], f"{ARN}:{PRIMARY}:3"]
    assert after["fn312"] == [f"{ARN}:{SECONDARY}:2"]


# -- the stack on its own: the maintenance function --------------------------------------------

STACK = "layer-builder"  # tools.stack.provision's stack name: its prefix is "layer-builder-"
DATA, ML, OUTSIDE = f"{STACK}-data-emr", f"{STACK}-ml-x", "outside-prefix"
TEAMS = [{"name": "data", "layer_prefix": f"{STACK}-data-", "consumers": ["data-consumer"]},
         {"name": "ml", "layer_prefix": f"{STACK}-ml-", "consumers": ["ml-consumer"]}]
STACK_SHARE = "111122223333"
EVENTS = Path(__file__).parents[2] / "events"
CONSUMERS = ("data-consumer", "not-a-consumer", "ml-consumer")


def sample_event(name: str, **changes) -> dict:
    return json.loads((EVENTS / name).read_text(encoding="utf-8")) | changes


@pytest.fixture(scope="module")
def maintenance():
    """template.yaml deployed into moto (Teams, KeepVersions=1, ShareAccounts), and its
    LayerMaintenanceFunction run through the real runtime client (awslambdaric) as a local Lambda
    with the environment the stack gave it: the schedule's sweep, then operator rollbacks."""
    from tools.demo import BUILDER_PACKAGES
    from tools.local_lambda_service import LocalLambdaService
    from tools.stack import provision

    seen: dict = {}
    with LocalAws() as aws, LocalLambdaService(aws) as lambdas:
        stack = provision(aws, overrides={"Teams": json.dumps(TEAMS), "KeepVersions": "1",
                                          "ShareAccounts": STACK_SHARE}, stack_name=STACK)
        account = Account(aws)
        emr = [account.layer(DATA, f"V = {n}\n") for n in range(1, 6)]
        ml = [account.layer(ML, f"V = {n}\n") for n in range(1, 4)]
        for n in range(1, 4):
            account.layer(OUTSIDE, f"V = {n}\n")
        account.function("data-consumer", emr[0])
        account.lam.publish_version(FunctionName="data-consumer")  # data-consumer:1 keeps emr:1
        account.set_layers("data-consumer", emr[2])
        account.function("ml-consumer", ml[1])
        account.function("not-a-consumer", emr[2])
        pointers = stack.template_environment("LayerMaintenanceFunction")["POINTER_PARAMETER_PREFIX"]
        account.set_pointer(f"{pointers}/{DATA}", emr[1])
        account.set_pointer(f"{pointers}/{ML}", ml[2])
        name = lambdas.register_from_stack(stack, "LayerMaintenanceFunction",
                                           packages=BUILDER_PACKAGES)

        def invoke(event: dict) -> dict:
            result = lambdas.invoke(name, event)
            assert result is not None and result.error is None, \
                f"{result and result.error}\n{result and result.logs[-3000:]}"
            return result.payload

        def state() -> dict:
            return {**{f: account.layers_of(f) for f in CONSUMERS},
                    "pointers": [account.pointer(f"{pointers}/{n}") for n in (DATA, ML)],
                    "versions": {n: account.versions(n) for n in (DATA, ML, OUTSIDE)}}

        seen["schedule"] = _scheduled_inputs(aws, name)
        seen["sweep"] = invoke(sample_event("maintenance-sweep.json"))
        seen["after sweep"] = state()
        seen["policies"] = {n: account.policy(DATA, n) for n in (1, 5)}
        seen["outside policy"] = _policy_or_none(account, OUTSIDE, 3)
        seen["sweep again"] = invoke(sample_event("maintenance-sweep.json"))
        rollback = dict(team="data", layer=DATA)
        seen["rollback"] = invoke(sample_event("maintenance-rollback.json", **rollback, version=1))
        seen["after rollback"] = state()
        seen["refused"] = {
            "other team's layer": invoke(sample_event("maintenance-rollback.json", team="data",
                                                      layer=ML, version=1)),
            "deleted version": invoke(sample_event("maintenance-rollback.json", **rollback,
                                                   version=4)),
            "unknown team": invoke(sample_event("maintenance-rollback.json", team="nobody",
                                                layer=DATA, version=2)),
            "no version": invoke({"action": "rollback", **rollback}),
            "unknown action": invoke({"action": "delete-everything"}),
        }
        seen["after refusals"] = state()
        seen["arns"] = {"emr": emr, "ml": ml}
        seen["function"] = stack.configuration("LayerMaintenanceFunction")["FunctionName"]
    return seen


def _scheduled_inputs(aws: LocalAws, function: str) -> list[dict]:
    """The events the stack's schedule rules send the function (a target's Input)."""
    events = aws.client("events")
    return [json.loads(target["Input"])
            for rule in events.list_rules()["Rules"] if rule.get("ScheduleExpression")
            for target in events.list_targets_by_rule(Rule=rule["Name"])["Targets"]
            if target["Arn"].endswith(f":function:{function}")]


def _policy_or_none(account: Account, layer: str, version: int) -> list[dict] | None:
    try:
        return account.policy(layer, version)
    except account.lam.exceptions.ResourceNotFoundException:
        return None


def test_the_daily_sweep_keeps_the_newest_and_every_version_in_use(maintenance):
    # the deployed daily schedule sends exactly events/maintenance-sweep.json, which ran here
    assert maintenance["schedule"] == [sample_event("maintenance-sweep.json")]
    sweep = maintenance["sweep"]
    assert sweep["status"] == "done" and sweep["keep_versions"] == 1
    assert sweep["deleted"] == {DATA: [4], ML: [1]}
    assert maintenance["after sweep"]["versions"] == {
        DATA: [1, 2, 3, 5],  # 5 newest; 3 used; 2 the pointer's; 1 used by data-consumer:1
        ML: [2, 3],  # 3 newest (and the pointer's); 2 used by ml-consumer
        OUTSIDE: [1, 2, 3]}


def test_the_sweep_shares_what_it_keeps_with_the_stacks_grantees(maintenance):
    for number, statements in maintenance["policies"].items():
        assert [s["Sid"] for s in statements] == [f"layer-builder-{STACK_SHARE}"], number
        assert STACK_SHARE in json.dumps(statements[0]["Principal"])
    assert maintenance["outside policy"] is None  # not the stack's layer: never touched
    again = maintenance["sweep again"]
    assert (again["deleted"], again["shared"]) == ({}, {})


def test_an_operator_rollback_moves_only_the_teams_consumers_and_the_pointer(maintenance):
    arns = maintenance["arns"]["emr"]
    done = maintenance["rollback"]
    assert done["status"] == "done" and done["version_arn"] == arns[0]
    assert [c["function"] for c in done["consumers"]] == ["data-consumer"]
    after = maintenance["after rollback"]
    assert after["data-consumer"] == [arns[0]]
    assert after["not-a-consumer"] == [arns[2]]  # uses the layer, but is not the team's consumer
    assert after["pointers"][0] == arns[0]


def test_refused_maintenance_events_change_nothing(maintenance):
    refused = maintenance["refused"]
    assert {k: v["status"] for k, v in refused.items()} == dict.fromkeys(refused, "refused")
    assert f"{ML}: it is not a layer of team 'data'" in refused["other team's layer"]["error"]
    assert "Existing versions: 5, 3, 2, 1." in refused["deleted version"]["error"]
    assert "the stack's teams are data, ml" in refused["unknown team"]["error"]
    assert "rollback.version: Field required" in refused["no version"]["error"]
    assert "'sweep', 'rollback'" in refused["unknown action"]["error"]
    assert maintenance["after refusals"] == maintenance["after rollback"]
