"""What a build of one team's upload takes from elsewhere is that team's alone: its cache scope,
and the names an earlier build of the same bytes left in the state table."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from layer_builder.errors import TeamError
from layer_builder.service.service import Inputs, _remember, build_request
from layer_builder.service.settings import Settings
from layer_builder.service.uploads import Upload
from layer_builder.target import Target

TEAMS = [{"name": "data", "layer_prefix": "s-data-"}, {"name": "ops", "layer_prefix": "s-ops-"}]
ENV = {"ARTIFACT_BUCKET": "art", "STATE_TABLE": "tbl", "POINTER_PARAMETER_PREFIX": "/s/layers/",
       "LAYER_NAME_PREFIX": "s-", "TEAMS": json.dumps(TEAMS), "TARGETS": "python3.13/x86_64",
       "CHECK_FUNCTIONS": '{"python3.13/x86_64": "s-check-py313-x86_64"}'}
SETTINGS = Settings.from_env(ENV)
UPLOAD = Upload("src", "incoming/ops/app-1.0.zip", "v1", "0A", 10, "2026-12-01T00:00:00Z")


def test_the_cache_scope_of_a_build_is_its_team():
    """What the check function made for one team is reused by that team only (pipeline)."""
    for team in SETTINGS.teams:
        inputs = Inputs(UPLOAD, team, {}, None, "", None)
        request = build_request(inputs, Path("src"), Path("out.zip"), Target(), SETTINGS,
                                SimpleNamespace(sandbox=None, cache=None))
        assert request.cache_scope == team.name


def remembered(layer: str) -> dict:
    arn = f"arn:aws:lambda:us-east-1:123456789012:layer:{layer}:3"
    return {"report": "r", "targets": [{"target": "python3.13/x86_64", "layer_name": layer,
                                        "version_arn": arn, "build": {}}]}


def test_names_read_back_from_the_state_table_must_be_the_teams():
    ops = SETTINGS.team_for(UPLOAD.key)
    assert [t.layer_name for t in _remember(remembered("s-ops-app"), ops)] == ["s-ops-app"]
    with pytest.raises(TeamError, match="not a layer of team 'ops'"):
        _remember(remembered("s-data-app"), ops)
