"""versions, prune, rollback, share and unshare as a user runs them: the installed `layer-builder`
process against moto on loopback through AWS_ENDPOINT_URL. Refusals exit 2 naming what exists
and change nothing. (tests/e2e/test_lifecycle.py runs publish with real builds.)"""

from __future__ import annotations

import pytest
from lambda_account import Account

from tools.local_aws import LocalAws

LAYER = "stack-data-emr"
POINTER = "/stack/layers/stack-data-emr"


@pytest.fixture(scope="module")
def aws():
    with LocalAws() as local:
        yield local


@pytest.fixture
def account(aws) -> Account:
    aws.reset()
    return Account(aws)


@pytest.fixture
def history(account):
    """Four versions; fn's published version 1 is frozen on v1, its $LATEST uses v3 beside
    another layer; the pointer names v3; v2 and v4 are used by nothing."""
    arns = [account.layer(LAYER, f"V = {n}\n") for n in range(1, 5)]
    other = account.layer("stack-data-utils", "U = 1\n")
    account.function("fn", other, arns[0])
    account.lam.publish_version(FunctionName="fn")
    account.set_layers("fn", other, arns[2])
    account.set_pointer(POINTER, arns[2])
    return arns, other


def test_versions_lists_content_users_and_the_pointer(account, history):
    arns, _ = history
    shown = account.cli("versions", LAYER, "--ssm-parameter", POINTER, "--json")
    assert shown.returncode == 0, shown.stderr
    rows = {row["version"]: row for row in shown.json["versions"]}
    assert sorted(rows) == [1, 2, 3, 4]
    assert rows[1]["used_by"] == ["fn:1"] and rows[3]["used_by"] == ["fn"]
    assert rows[2]["used_by"] == [] and [n for n, r in rows.items() if r["pointer"]] == [3]
    described = account.lam.get_layer_version(LayerName=LAYER, VersionNumber=3)["Content"]
    assert rows[3]["code_sha256"] == described["CodeSha256"]
    assert rows[3]["size"] == described["CodeSize"] and len(rows[3]["sha256"]) == 64
    table = account.cli("versions", LAYER, "--ssm-parameter", POINTER).stdout.splitlines()
    assert table[0] == f"Layer {LAYER}: 4 versions (* = named by {POINTER})"
    marked = [line for line in table if line.startswith("*")]
    assert len(marked) == 1 and marked[0].split()[1] == "3" and marked[0].endswith(" fn")


def test_prune_keeps_what_is_used_or_pointed_at_and_says_why(account, history):
    arns, _ = history
    dry = account.cli("prune", LAYER, "--keep", "1", "--ssm-parameter", POINTER, "--dry-run")
    assert dry.returncode == 0 and account.versions(LAYER) == [1, 2, 3, 4]
    assert "would delete     2" in dry.stdout
    done = account.cli("prune", LAYER, "--keep", "1", "--ssm-parameter", POINTER, "--json")
    assert done.returncode == 0, done.stderr
    decisions = {d["version"]: d for d in done.json["decisions"]}
    assert {n: d["action"] for n, d in decisions.items()} == {4: "keep", 3: "keep", 2: "deleted",
                                                                1: "keep"}
    assert decisions[1]["reasons"] == ["used by fn:1"]
    assert decisions[3]["reasons"] == ["used by fn", "named by the SSM pointer"]
    assert account.versions(LAYER) == [1, 3, 4]
    assert account.layers_of("fn", "1") == [history[1], arns[0]]


def test_prune_without_the_pointer_still_keeps_versions_in_use(account, history):
    account.set_layers("fn", history[1])  # $LATEST lets go of v3; fn:1 still holds v1
    done = account.cli("prune", LAYER, "--keep", "1", "--json")
    assert done.returncode == 0, done.stderr
    assert account.versions(LAYER) == [1, 4]
    assert "no pointer was consulted" not in done.stderr  # --json keeps stderr for errors


@pytest.mark.parametrize("args, words", [
    (["--keep", "0"], "--keep 0 would delete every version: keep 1 or more"),
    (["--keep", "2", "--older-than", "-1"], "--older-than -1 is negative"),
])
def test_prune_refuses_bad_numbers_and_deletes_nothing(account, history, args, words):
    refused = account.cli("prune", LAYER, *args)
    assert refused.returncode == 2 and words in refused.stderr
    assert account.versions(LAYER) == [1, 2, 3, 4]


def test_an_unknown_layer_names_the_layers_with_its_prefix(account, history):
    refused = account.cli("versions", "stack-data-emx")
    assert refused.returncode == 2
    assert "Layer stack-data-emx has no versions in this region. Layers named like it: " \
           "stack-data-emr, stack-data-utils." in refused.stderr
    assert account.cli("prune", "stack-data-emx", "--keep", "1").returncode == 2


def test_rollback_moves_the_consumer_and_the_pointer_only_for_this_layer(account, history):
    arns, other = history
    done = account.cli("rollback", LAYER, "--to", "2", "--ssm-parameter", POINTER)
    assert done.returncode == 0, done.stderr
    assert account.layers_of("fn") == [other, arns[1]]
    assert account.pointer(POINTER) == arns[1]
    assert f"fn: {arns[2]} -> version 2" in done.stdout
    assert account.layers_of("fn", "1") == [other, arns[0]]  # a published version is frozen


@pytest.mark.parametrize("args, words", [
    (["--to", "9"], "Cannot roll back to version 9 of layer stack-data-emr: it does not exist "
                    "(deleted, or never published). Existing versions: 4, 3, 2, 1."),
    (["--to", "2", "--attach", "fn", "--attach", "ghost"],
     "Function ghost does not exist in this region. Functions that use the layer: fn, arm."),
    (["--to", "2", "--attach", "fn", "--attach", "bystander"],
     "Function bystander does not use layer stack-data-emr"),
    (["--to", "2", "--attach", "arm"], "Function arm runs python3.13 on arm64"),
])
def test_a_refused_rollback_changes_nothing(account, history, args, words):
    arns, other = history
    account.function("bystander", other)
    account.function("arm", arch="arm64")
    account.set_layers("arm", arns[2])
    account.lam.delete_layer_version(LayerName=LAYER, VersionNumber=1)  # "deleted" covers 9 too
    refused = account.cli("rollback", LAYER, *args, "--ssm-parameter", POINTER)
    assert refused.returncode == 2, refused.stderr
    assert words.replace("4, 3, 2, 1", "4, 3, 2") in refused.stderr
    assert account.layers_of("fn") == [other, arns[2]] and account.layers_of("arm") == [arns[2]]
    assert account.pointer(POINTER) == arns[2]


def test_share_and_unshare_write_the_policy_getlayerversionpolicy_returns(account, history):
    granted = account.cli("share", LAYER, "--version", "3", "--account", "210987654321")
    assert granted.returncode == 0, granted.stderr
    org = account.cli("share", LAYER, "--version", "3", "--organization", "o-abcdefghij", "--json")
    assert org.json["status"] == "granted" and org.json["statement_id"] == "layer-builder-o-abcdefghij"
    again = account.cli("share", LAYER, "--version", "3", "--account", "210987654321")
    assert again.returncode == 0 and "was granted already" in again.stdout
    statements = {s["Sid"]: s for s in account.policy(LAYER, 3)}
    assert set(statements) == {"layer-builder-210987654321", "layer-builder-o-abcdefghij"}
    for statement in statements.values():
        assert statement["Action"] == "lambda:GetLayerVersion" and statement["Effect"] == "Allow"
        assert statement["Resource"] == f"{account.lam.get_layer_version(LayerName=LAYER, VersionNumber=3)['LayerVersionArn']}"
    # moto keeps the request's fields; AWS shows {"AWS": "arn:aws:iam::ID:root"} and a
    # aws:PrincipalOrgID condition (lifecycle.grantees reads both shapes).
    assert statements["layer-builder-210987654321"]["Principal"] == "210987654321"
    org_statement = statements["layer-builder-o-abcdefghij"]
    assert org_statement["Principal"] == "*"
    assert org_statement.get("OrganizationId") == "o-abcdefghij" or \
        org_statement["Condition"]["StringEquals"]["aws:PrincipalOrgID"] == "o-abcdefghij"
    revoked = account.cli("unshare", LAYER, "--version", "3", "--account", "210987654321")
    assert revoked.returncode == 0, revoked.stderr
    assert [s["Sid"] for s in account.policy(LAYER, 3)] == ["layer-builder-o-abcdefghij"]
    missing = account.cli("unshare", LAYER, "--version", "3", "--account", "210987654321")
    assert missing.returncode == 2
    assert "It is shared with: organization o-abcdefghij (layer-builder-o-abcdefghij)." in missing.stderr


@pytest.mark.parametrize("args, words", [
    (["--version", "7", "--account", "210987654321"], "Existing versions: 4, 3, 2, 1."),
    (["--version", "3", "--account", "2109"], "'2109' is not an AWS account id"),
    (["--version", "3", "--organization", "org"], "'org' is not an organization id"),
])
def test_share_refuses_bad_input_and_grants_nothing(account, history, args, words):
    refused = account.cli("share", LAYER, *args)
    assert refused.returncode == 2 and words in refused.stderr
    for number in (3, 7):
        with pytest.raises(account.lam.exceptions.ResourceNotFoundException):
            account.policy(LAYER, number)


def test_no_region_is_a_refusal_that_says_how_to_set_one(account):
    run = account.cli("versions", LAYER, env={"AWS_REGION": "", "AWS_DEFAULT_REGION": ""})
    assert run.returncode == 2 and "No AWS region is set: pass --region" in run.stderr
