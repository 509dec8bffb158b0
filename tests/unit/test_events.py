"""Sample events in events/: all parse, and S3 keys decode the way S3 encodes them."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import unquote_plus

import pytest
from aws_lambda_powertools.utilities.data_classes import S3Event
from aws_lambda_powertools.utilities.parser.models import S3Model

EVENTS = Path(__file__).resolve().parents[2] / "events"
SOURCE_BUCKET = "layer-builder-source-123456789012-us-east-1"  # stack layer-builder, us-east-1
# Under the default team's folder: the template's one team when Teams is empty.
EMR_LAUNCHER = "incoming/default/aws-emr-launcher-0.1.0.zip"
# Decoded keys, record by record: S3 sends keys URL-encoded with a space as "+".
EXPECTED_KEYS = {
    "s3-put.json": [EMR_LAUNCHER],
    "s3-put-encoded-key.json": ["incoming/default/my team+layer é-1.0.0.zip"],
    "s3-put-multiple.json": [EMR_LAUNCHER, "incoming/default/data-tools-2.3.1.tar.gz", EMR_LAUNCHER],
}


def load(name: str) -> dict:
    return json.loads((EVENTS / name).read_text(encoding="utf-8"))


@pytest.mark.parametrize("path", sorted(EVENTS.glob("*.json")), ids=lambda p: p.name)
def test_every_event_is_a_json_object(path):
    assert isinstance(json.loads(path.read_text(encoding="utf-8")), dict)


def test_every_s3_event_has_expected_keys():
    assert {p.name for p in EVENTS.glob("s3-*.json")} == set(EXPECTED_KEYS)


@pytest.mark.parametrize("name", sorted(EXPECTED_KEYS))
def test_s3_event_keys_decode_per_record(name):
    event = S3Event(load(name))
    # S3Event.object_key decodes the first record only, so every record is decoded here.
    keys = [unquote_plus(record.s3.get_object.key) for record in event.records]
    assert keys == EXPECTED_KEYS[name]


@pytest.mark.parametrize("name", sorted(EXPECTED_KEYS))
def test_s3_event_has_the_fields_the_builder_relies_on(name):
    data = load(name)
    S3Model.model_validate(data)  # the strict schema, not only the lazy data class
    for record in S3Event(data).records:
        obj = record.s3.get_object
        assert record.raw_event["eventVersion"] == "2.1"
        assert record.event_name.startswith("ObjectCreated:")
        assert (record.aws_region, record.s3.bucket.name) == ("us-east-1", SOURCE_BUCKET)
        assert obj.version_id, "a versioned bucket sends versionId"
        int(obj.sequencer, 16)  # hex, compared per key to order events
        assert obj.size > 0 and obj.etag


def test_encoded_key_exercises_space_plus_and_unicode():
    [record] = load("s3-put-encoded-key.json")["Records"]
    raw = record["s3"]["object"]["key"]
    assert "+" in raw and "%2B" in raw and "%C3%A9" in raw and " " not in raw
    assert {" ", "+", "é"} <= set(unquote_plus(raw))


def test_multiple_event_repeats_the_first_record():
    first, second, duplicate = load("s3-put-multiple.json")["Records"]
    assert duplicate == first  # at-least-once delivery: same key, version and sequencer
    assert second["s3"]["object"]["key"] != first["s3"]["object"]["key"]
