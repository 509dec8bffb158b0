"""examples/ci: the workflow assumes a role through OIDC and runs `layer-builder publish` when
Pipfile.lock changes; every LAYER_BUILDER_* variable it sets is a real option of `publish`.
(tests/e2e/test_lifecycle.py runs its Publish step against the local stand-in.)"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import yaml

from layer_builder import cli
from layer_builder.cli import common

CI = Path(__file__).parents[2] / "examples" / "ci"


def workflow() -> dict:
    return yaml.safe_load((CI / "publish-layer.yml").read_text())


def test_it_runs_on_a_push_that_changes_the_lock_with_an_oidc_token():
    flow = workflow()
    on = flow[True] if True in flow else flow["on"]  # YAML 1.1 reads the key `on` as true
    assert on["push"]["paths"] == ["Pipfile.lock"]
    assert flow["permissions"]["id-token"] == "write"


def test_it_assumes_a_role_then_publishes():
    steps = workflow()["jobs"]["publish"]["steps"]
    uses = [s.get("uses", "") for s in steps]
    login = next(i for i, u in enumerate(uses) if u.startswith("aws-actions/configure-aws-credentials@"))
    assert "role-to-assume" in steps[login]["with"]
    assert not {"aws-access-key-id", "aws-secret-access-key"} & set(steps[login]["with"])
    publish = next(i for i, s in enumerate(steps) if "layer-builder publish" in s.get("run", ""))
    assert publish > login


def test_every_layer_builder_variable_is_an_option_of_publish():
    parser = common.build_parser("layer-builder", "", cli.COMMANDS, "0")
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    known = {common.env_name(a) for a in sub.choices["publish"]._actions} - {None}
    used = {k for s in workflow()["jobs"]["publish"]["steps"] for k in s.get("env", {})
            if k.startswith(common.ENV_PREFIX)}
    assert used and used <= known, used - known


def test_the_policies_are_json_an_operator_can_paste():
    trust = json.loads((CI / "trust-policy.json").read_text())
    (statement,) = trust["Statement"]
    assert statement["Action"] == "sts:AssumeRoleWithWebIdentity"
    condition = statement["Condition"]["StringEquals"]
    assert condition["token.actions.githubusercontent.com:aud"] == "sts.amazonaws.com"
    assert condition["token.actions.githubusercontent.com:sub"].startswith("repo:")
    actions = {a for s in json.loads((CI / "publisher-policy.json").read_text())["Statement"]
               for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])}
    assert {"lambda:PublishLayerVersion", "lambda:UpdateFunctionConfiguration",
            "s3:PutObject", "s3:GetObject"} <= actions
