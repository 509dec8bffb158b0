"""The maintenance function's settings (exactly the template's variables), its events, and its
work on the in-memory account of test_lifecycle.py: the sweep keeps what is in use and shares
what is left, an operator's rollback stays inside the team. tests/e2e/test_lifecycle.py runs the
handler itself on moto."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from aws_lambda_powertools.utilities.parser import ValidationError, parse

from layer_builder.errors import ConfigurationError, TeamError
from layer_builder.service import maintenance
from layer_builder.service.lifecycle import UnknownVersion, team_grants, team_rollback
from layer_builder.service.settings import MaintenanceSettings, Settings, Team
from tools.cfn import Resolver, load_template

from .test_lifecycle import NOW, Account, Pointer, arn

EVENTS = Path(__file__).resolve().parents[3] / "events"
DATA = {
    "name": "data",
    "layer_prefix": "s-data-",
    "consumers": ["data-fn", "absent"],
    "share_accounts": ["210987654321"],
}
ML = {"name": "ml", "layer_prefix": "s-ml-", "consumers": ["ml-fn"]}
ENV = {
    "LAYER_NAME_PREFIX": "s-",
    "POINTER_PARAMETER_PREFIX": "/s/layers/",
    "TEAMS": json.dumps([DATA, ML]),
    "KEEP_VERSIONS": "1",
    "SHARE_ACCOUNTS": "111122223333",
    "SHARE_ORGANIZATION_ID": "o-abcdefghij",
}
#: Read by boto3 (AWS_ENDPOINT_URL) and Powertools (POWERTOOLS_*), not by the settings.
NOT_SETTINGS = {
    "AWS_ENDPOINT_URL",
    "POWERTOOLS_SERVICE_NAME",
    "POWERTOOLS_METRICS_NAMESPACE",
    "POWERTOOLS_LOG_LEVEL",
}


# -- settings ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {
            "KeepVersions": "5",
            "LayerNamePrefix": "acme-",
            "ShareAccounts": "111122223333,444455556666",
            "ShareOrganizationId": "o-abcdefghij",
        },
    ],
)
def test_the_templates_environment_for_the_function_parses(overrides):
    env = Resolver(load_template(), overrides=overrides).function_environment(
        "LayerMaintenanceFunction"
    )
    assert set(env) - NOT_SETTINGS == set(MaintenanceSettings.VARIABLES)  # names match exactly
    settings = MaintenanceSettings.from_env(env)
    assert settings.keep_versions == int(overrides.get("KeepVersions", 0))
    assert settings.layer_name_prefix == overrides.get("LayerNamePrefix", "layer-builder-")
    assert settings.pointer_parameter_prefix == "/layer-builder/layers"
    assert [t.name for t in settings.teams] == ["default"]
    assert settings.share_accounts == tuple(
        filter(None, overrides.get("ShareAccounts", "").split(","))
    )
    assert settings.share_organization == overrides.get("ShareOrganizationId", "")


def test_the_builder_reads_the_stacks_sharing_too():
    env = Resolver(
        load_template(),
        overrides={"ShareAccounts": "111122223333", "ShareOrganizationId": "o-abcdefghij"},
    ).function_environment("BuilderFunction")
    settings = Settings.from_env(env)
    assert (settings.share_accounts, settings.share_organization) == (
        ("111122223333",),
        "o-abcdefghij",
    )


def test_maintenance_settings_read_only_what_the_function_needs():
    settings = MaintenanceSettings.from_env(ENV)
    assert (settings.keep_versions, settings.pointer_parameter_prefix) == (1, "/s/layers")
    assert settings.team("data").consumers == ("data-fn", "absent")
    assert settings.owner("s-ml-x") == settings.team("ml") and settings.owner("s-other") is None
    with pytest.raises(TeamError, match="the stack's teams are data, ml"):
        settings.team("ops")


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"TEAMS": ""}, "TEAMS"),
        ({"POINTER_PARAMETER_PREFIX": ""}, "POINTER_PARAMETER_PREFIX"),
        ({"KEEP_VERSIONS": "-1"}, "KEEP_VERSIONS"),
        ({"KEEP_VERSIONS": "all"}, "KEEP_VERSIONS"),
        ({"SHARE_ACCOUNTS": "1234"}, "SHARE_ACCOUNTS"),
        ({"SHARE_ORGANIZATION_ID": "org"}, "SHARE_"),
        ({"LAYER_NAME_PREFIX": "a b"}, "LAYER_NAME_PREFIX"),
    ],
)
def test_a_wrong_environment_names_the_variable(change, named):
    with pytest.raises(ConfigurationError, match=named):
        MaintenanceSettings.from_env(ENV | change)


# -- events ------------------------------------------------------------------------------------


def test_the_sample_events_are_what_the_function_accepts():
    template = load_template()["Resources"]["LayerMaintenanceFunction"]["Properties"]
    [schedule] = template["Events"].values()
    scheduled = json.loads(schedule["Properties"]["Input"])
    sample = json.loads((EVENTS / "maintenance-sweep.json").read_text())
    assert sample == scheduled  # the schedule's own event
    assert isinstance(parse(event=sample, model=maintenance.Request).root, maintenance.SweepRequest)
    rollback = parse(
        event=json.loads((EVENTS / "maintenance-rollback.json").read_text()),
        model=maintenance.Request,
    ).root
    assert (rollback.team, rollback.layer, rollback.version) == (
        "default",
        "layer-builder-emr-launcher",
        1,
    )


@pytest.mark.parametrize(
    ("event", "named"),
    [
        ({"action": "delete-everything"}, "'sweep', 'rollback'"),
        (
            {"action": "rollback", "team": "data", "layer": "s-data-emr"},
            "rollback.version: Field required",
        ),
        (
            {"action": "rollback", "team": "data", "layer": "s-data-emr", "version": 0},
            "rollback.version",
        ),
        (
            {"action": "rollback", "team": "data", "layer": "arn:aws:x", "version": 1},
            "rollback.layer",
        ),
        (
            {"action": "rollback", "team": "data", "layer": "x" * 141, "version": 1},
            "rollback.layer: String should have at most 140 characters",
        ),
        ({"action": "sweep", "keep": 0}, "sweep.keep: Extra inputs are not permitted"),
        ({}, "Unable to extract tag"),
    ],
)
def test_a_malformed_event_is_refused_naming_the_field(event, named):
    with pytest.raises(ValidationError) as caught:
        parse(event=event, model=maintenance.Request)
    message = maintenance.refusal(caught.value)
    assert named in message and '{"action": "sweep"}' in message and "\n" not in message


# -- the work ----------------------------------------------------------------------------------


@pytest.fixture
def account() -> Account:
    return Account()


def stores(account: Account) -> maintenance.Stores:
    return maintenance.Stores(account, account, account, Pointer(account))


def test_the_sweep_keeps_whats_in_use_and_shares_whats_left(account):
    settings = MaintenanceSettings.from_env(ENV)
    emr = [account.publish("s-data-emr", age) for age in (40, 30, 20, 10)]
    ml = [account.publish("s-ml-x", age) for age in (20, 10)]
    outside = [account.publish("other-layer", age) for age in (20, 10)]
    account.function("data-fn", emr[0])
    account.pointers["s-data-emr"] = emr[1]
    result = maintenance.run(
        maintenance.SweepRequest(action="sweep"), settings, stores(account), NOW
    )
    assert result["deleted"] == {"s-data-emr": [3], "s-ml-x": [1]}
    assert sorted(account.layers["s-data-emr"]) == [1, 2, 4] and sorted(
        account.layers["other-layer"]
    ) == [1, 2]
    stack = ["account 111122223333", "organization o-abcdefghij"]
    assert result["shared"] == {
        emr[3]: ["account 111122223333", "account 210987654321", "organization o-abcdefghij"],
        emr[1]: ["account 111122223333", "account 210987654321", "organization o-abcdefghij"],
        emr[0]: ["account 111122223333", "account 210987654321", "organization o-abcdefghij"],
        ml[1]: stack,
    }
    assert not any(name == "other-layer" for name, _ in account.policies)
    again = maintenance.run(
        maintenance.SweepRequest(action="sweep"), settings, stores(account), NOW
    )
    assert (again["deleted"], again["shared"]) == ({}, {})  # idempotent
    assert outside == [arn("other-layer", 1), arn("other-layer", 2)]


def test_keep_versions_0_deletes_nothing(account):
    settings = MaintenanceSettings.from_env(
        ENV | {"KEEP_VERSIONS": "0", "SHARE_ACCOUNTS": "", "SHARE_ORGANIZATION_ID": ""}
    )
    for age in (30, 20, 10):
        account.publish("s-data-emr", age)
    result = maintenance.sweep(settings, stores(account), NOW)
    assert (result["deleted"], result["shared"], account.deleted) == ({}, {}, [])


def test_a_team_rollback_touches_only_the_teams_layers_and_consumers(account):
    one, two = account.publish("s-data-emr", 2), account.publish("s-data-emr", 1)
    account.publish("s-ml-x", 1)
    account.function("data-fn", two)
    account.function("someone-else", two)
    team = Team("data", "s-data-", ("data-fn", "absent"))
    args = dict(layers=account, catalog=account, functions=account, pointer=Pointer(account))
    with pytest.raises(TeamError, match="not a layer of team 'data'"):
        team_rollback("s-ml-x", 1, team, **args)
    result = team_rollback("s-data-emr", 1, team, **args)
    assert [c.function for c in result.consumers] == ["data-fn"]
    assert account.functions["data-fn"][0].layers == (one,)
    assert account.functions["someone-else"][0].layers == (two,)
    assert account.pointers["s-data-emr"] == one


def test_a_refused_rollback_changes_nothing(account):
    settings = MaintenanceSettings.from_env(ENV)
    one, two = account.publish("s-data-emr", 2), account.publish("s-data-emr", 1)
    ml = account.publish("s-ml-x", 1)
    account.function("data-fn", two)
    account.function("ml-fn", ml)
    account.pointers["s-data-emr"] = two
    refused = [
        maintenance.RollbackRequest(action="rollback", team="data", layer="s-ml-x", version=1),
        maintenance.RollbackRequest(action="rollback", team="ml", layer="s-data-emr", version=1),
        maintenance.RollbackRequest(action="rollback", team="data", layer="s-data-emr", version=3),
        maintenance.RollbackRequest(action="rollback", team="ops", layer="s-data-emr", version=1),
    ]
    errors = []
    for request in refused:
        with pytest.raises((TeamError, UnknownVersion)) as caught:
            maintenance.run(request, settings, stores(account), NOW)
        errors.append(str(caught.value))
    assert "s-ml-x: it is not a layer of team 'data'" in errors[0]
    assert "s-data-emr: it is not a layer of team 'ml'" in errors[1]
    assert "Existing versions: 2, 1." in errors[2]
    assert "No team 'ops'" in errors[3]
    assert account.updates == [] and account.pointers == {"s-data-emr": two}
    assert one != two


def test_team_grants_add_the_teams_to_the_stacks():
    team = Team(
        "data",
        "s-data-",
        share_accounts=("111122223333", "210987654321"),
        share_organization="o-abcdefghij",
    )
    grants = team_grants(team, ["111122223333"], "o-abcdefghij")
    assert [str(g) for g in grants] == [
        "account 111122223333",
        "account 210987654321",
        "organization o-abcdefghij",
    ]
    assert team_grants(None, [], "") == []
