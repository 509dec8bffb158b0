"""settings: one typed object from the environment; fails fast and names the variable at fault."""

from __future__ import annotations

import json

import pytest

from layer_builder.errors import ConfigurationError, TeamError
from layer_builder.service.settings import Settings, Team
from layer_builder.target import Target
from tools.cfn import Resolver, load_template

TEAM = {"name": "data", "layer_prefix": "s-data-", "consumers": ["fn"],
        "subscribed_layers": ["emr-launcher"]}
REQUIRED = {"ARTIFACT_BUCKET": "art", "STATE_TABLE": "tbl", "POINTER_PARAMETER_PREFIX": "/s/layers/",
            "LAYER_NAME_PREFIX": "s-", "TEAMS": json.dumps([TEAM]), "TARGETS": "python3.13/x86_64",
            "CHECK_FUNCTIONS": '{"python3.13/x86_64": "s-check-py313-x86_64"}'}


def teams(*items: dict) -> dict[str, str]:
    return REQUIRED | {"TEAMS": json.dumps(list(items))}


def test_the_template_environment_makes_valid_settings():
    env = Resolver(load_template()).function_environment("BuilderFunction")
    settings = Settings.from_env(env)
    assert settings.targets[0] == Target("python3.13", "x86_64")
    [team] = settings.teams
    assert team.layer_prefix.startswith(settings.layer_name_prefix) and settings.layer_name_prefix
    assert "layer-builder-emr-trigger" in team.consumers
    assert settings.package_index_secret == "" or settings.package_index_secret.startswith("arn:")
    assert "PACKAGE_INDEX_URL" not in env and "IDEMPOTENCY_TABLE" not in env


@pytest.mark.parametrize("missing", sorted(REQUIRED))
def test_missing_required_variables_are_named(missing):
    env = {k: v for k, v in REQUIRED.items() if k != missing}
    with pytest.raises(ConfigurationError, match=missing):
        Settings.from_env(env)


def test_teams_are_typed_and_subscribed_layers_carry_the_team_prefix():
    settings = Settings.from_env(REQUIRED)
    assert settings.teams == (Team("data", "s-data-", ("fn",), frozenset({"s-data-emr-launcher"})),)


def test_the_team_comes_from_the_key_alone():
    settings = Settings.from_env(teams(TEAM, {"name": "ops", "layer_prefix": "s-ops-"}))
    assert settings.team_for("incoming/ops/emr-launcher-1.0.zip").name == "ops"
    assert settings.team_for("incoming/data/deep/x.zip").name == "data"
    for key in ("incoming/x.zip", "incoming/Data/x.zip", "incoming/data-x/x.zip", "incoming/opsx.zip"):
        with pytest.raises(TeamError, match="incoming/data/, incoming/ops/"):
            settings.team_for(key)


@pytest.mark.parametrize("team, fault", [
    ({"name": "Data", "layer_prefix": "s-d-"}, "must match"),
    ({"name": "-x", "layer_prefix": "s-d-"}, "must match"),
    ({"name": "data", "layer_prefix": ""}, "must start with LAYER_NAME_PREFIX"),
    ({"name": "data", "layer_prefix": "other-"}, "must start with LAYER_NAME_PREFIX"),
    ({"name": "data", "layer_prefix": "s-da ta-"}, "letters, digits"),
    ({"name": "data", "layer_prefix": "s-d-", "consumers": ["arn:aws:lambda:x"]}, "plain function names"),
    ({"name": "data", "layer_prefix": "s-d-", "consumers": "fn"}, "not a list"),
    ({"name": "data", "layer_prefix": "s-d-", "share_accounts": ["12"]}, "12-digit"),
    ({"name": "data", "layer_prefix": "s-d-", "prefix": "x"}, "unknown keys prefix"),
])
def test_invalid_teams_fail_fast_naming_teams(team, fault):
    with pytest.raises(ConfigurationError, match=f"TEAMS.*{fault}"):
        Settings.from_env(teams(team))


def test_team_prefixes_that_start_with_one_another_are_refused():
    """s-data- and s-data-x-: team data could publish project x-foo as team data-x's foo."""
    with pytest.raises(ConfigurationError, match="is a prefix of team 'data-x'"):
        Settings.from_env(teams({"name": "data", "layer_prefix": "s-data-"},
                                {"name": "data-x", "layer_prefix": "s-data-x-"}))


@pytest.mark.parametrize("raw", ["", "[]", "{", '{"name": "data"}'])
def test_teams_must_be_a_non_empty_json_list(raw):
    with pytest.raises(ConfigurationError, match="TEAMS"):
        Settings.from_env(REQUIRED | {"TEAMS": raw})


def test_an_empty_stack_prefix_is_refused():
    with pytest.raises(ConfigurationError, match="LAYER_NAME_PREFIX"):
        Settings.from_env(REQUIRED | {"LAYER_NAME_PREFIX": ""})


def test_targets_and_check_functions():
    checks = {"python3.13/x86_64": "s-check-py313-x86_64", "python3.12/arm64": "s-check-py312-arm64"}
    settings = Settings.from_env(REQUIRED | {"TARGETS": "python3.13/x86_64, python3.12/arm64",
                                             "CHECK_FUNCTIONS": json.dumps(checks)})
    assert settings.targets == (Target("python3.13", "x86_64"), Target("python3.12", "arm64"))
    assert settings.check_functions[Target("python3.12", "arm64")] == "s-check-py312-arm64"
    assert settings.enabled_targets == settings.targets


def test_a_default_target_without_a_check_function_is_refused():
    with pytest.raises(ConfigurationError, match="TARGETS lists python3.12/arm64.*CHECK_FUNCTIONS"):
        Settings.from_env(REQUIRED | {"TARGETS": "python3.13/x86_64,python3.12/arm64",
                                      "CHECK_FUNCTIONS": '{"python3.13/x86_64": "c"}'})


def test_no_check_function_means_no_builder():
    """Without one, the upload's code would run in the builder, beside its rights."""
    with pytest.raises(ConfigurationError, match="CHECK_FUNCTIONS names no check function"):
        Settings.from_env(REQUIRED | {"CHECK_FUNCTIONS": "{}"})


def test_lists_are_trimmed_deduplicated_and_names_canonical():
    settings = Settings.from_env(REQUIRED | {"ALLOW_SDIST": "PyYAML, zope.interface,,pyyaml",
                                             "KEEP_VERSIONS": "3"})
    assert settings.allow_sdist == frozenset({"pyyaml", "zope-interface"})
    assert settings.pointer_parameter_prefix == "/s/layers"
    assert settings.keep_versions == 3


@pytest.mark.parametrize("name, value", [("TARGETS", "python3.13/sparc"), ("TARGETS", "python2.7"),
                                         ("FINISH_MARGIN_SECONDS", "soon"), ("KEEP_VERSIONS", "-1"),
                                         ("CHECK_FUNCTIONS", "[1]")])
def test_invalid_values_fail_fast_naming_the_variable(name, value):
    with pytest.raises(ConfigurationError, match=name):
        Settings.from_env(REQUIRED | {name: value})


def test_a_team_owns_only_names_under_its_prefix():
    team = Team("data", "s-data-")
    assert team.owns("s-data-x") and team.owns("arn:aws:lambda:r:1:layer:s-data-x:3")
    assert not team.owns("s-ops-x") and not team.owns("arn:aws:lambda:r:1:layer:s-datax:3")
    with pytest.raises(TeamError, match="Refusing to publish s-ops-x"):
        team.require_own("s-ops-x", "publish")
