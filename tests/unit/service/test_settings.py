"""settings: one typed object from the environment; fails fast and names what is missing."""

from __future__ import annotations

import pytest

from layer_builder.errors import ConfigurationError
from layer_builder.service.settings import Settings
from tools.cfn import Resolver, load_template

REQUIRED = {"ARTIFACT_BUCKET": "art", "STATE_TABLE": "tbl", "POINTER_PARAMETER_PREFIX": "/s/layers/"}


def test_the_template_environment_makes_valid_settings():
    env = Resolver(load_template()).function_environment("BuilderFunction")
    settings = Settings.from_env(env)
    assert settings.target.runtime == "python3.13"
    assert settings.consumer_functions == ("layer-builder-emr-trigger",)
    # the default team: the stack's derived prefix, the EMR trigger, the emr-launcher layer
    assert settings.consumer_layers == frozenset({"layer-builder-emr-launcher"})
    assert settings.layer_name_prefix == "layer-builder-"
    assert settings.package_index_url == ""


def test_teams_give_the_consumers_and_their_layers():
    teams = ('[{"name": "a", "layer_prefix": "s-a-", "consumers": ["f1"], "subscribed_layers": ["x"]},'
             ' {"name": "b", "layer_prefix": "s-b-", "consumers": ["f2", "f1"], "subscribed_layers": []}]')
    settings = Settings.from_env(REQUIRED | {"TEAMS": teams, "TARGETS": "python3.12/arm64,python3.13/x86_64"})
    assert settings.consumer_functions == ("f1", "f2")
    assert settings.consumer_layers == frozenset({"s-a-x"})
    assert (settings.target.runtime, settings.target.arch) == ("python3.12", "arm64")
    with pytest.raises(ConfigurationError, match="TEAMS"):
        Settings.from_env(REQUIRED | {"TEAMS": "[{"})


@pytest.mark.parametrize("missing", sorted(REQUIRED))
def test_missing_required_variables_are_named(missing):
    env = {k: v for k, v in REQUIRED.items() if k != missing}
    with pytest.raises(ConfigurationError, match=missing):
        Settings.from_env(env)


def test_consumer_layers_carry_the_layer_name_prefix():
    settings = Settings.from_env(REQUIRED | {"LAYER_NAME_PREFIX": "team-", "CONSUMER_LAYERS": "emr-launcher,x"})
    assert settings.consumer_layers == frozenset({"team-emr-launcher", "team-x"})


def test_lists_are_trimmed_deduplicated_and_names_canonical():
    settings = Settings.from_env(REQUIRED | {"CONSUMER_FUNCTIONS": " b, a ,,b",
                                             "ALLOW_SDIST": "PyYAML, zope.interface"})
    assert settings.consumer_functions == ("a", "b")
    assert settings.allow_sdist == frozenset({"pyyaml", "zope-interface"})
    assert settings.pointer_parameter_prefix == "/s/layers"


@pytest.mark.parametrize("name, value", [("TARGET_ARCH", "sparc"), ("TARGET_RUNTIME", "python2.7"),
                                         ("FINISH_MARGIN_SECONDS", "soon")])
def test_invalid_values_fail_fast(name, value):
    with pytest.raises(ConfigurationError):
        Settings.from_env(REQUIRED | {name: value})
