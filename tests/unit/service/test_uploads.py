"""uploads: S3 events (events/*.json) → typed uploads with each record's key decoded."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from layer_builder.errors import InputError
from layer_builder.service.uploads import Upload, parse_uploads

EVENTS = Path(__file__).resolve().parents[3] / "events"


def load(name: str) -> dict:
    return json.loads((EVENTS / name).read_text(encoding="utf-8"))


def test_a_put_event_becomes_one_upload_of_that_object_version():
    [upload], ignored = parse_uploads(load("s3-put.json"), "incoming/")
    record = load("s3-put.json")["Records"][0]["s3"]
    assert ignored == []
    assert upload.bucket == record["bucket"]["name"]
    assert upload.key == "incoming/default/aws-emr-launcher-0.1.0.zip"
    assert upload.version_id == record["object"]["versionId"]
    assert upload.filename == "aws-emr-launcher-0.1.0.zip"
    assert isinstance(upload.size, int)


def test_every_record_key_is_decoded_not_just_the_first():
    event = load("s3-put-encoded-key.json")
    second = copy.deepcopy(event["Records"][0])
    second["s3"]["object"]["key"] = "incoming/default/second+file%2B%C3%A9.tgz"
    event["Records"].append(second)
    uploads, _ = parse_uploads(event, "incoming/")
    assert uploads[1].key == "incoming/default/second file+é.tgz"
    assert all("%" not in u.key for u in uploads)


def test_several_records_each_become_an_upload():
    uploads, _ = parse_uploads(load("s3-put-multiple.json"), "incoming/")
    assert len(uploads) == len(load("s3-put-multiple.json")["Records"])


def test_keys_outside_the_prefix_or_not_archives_are_ignored():
    event = load("s3-put.json")
    other = copy.deepcopy(event["Records"][0])
    other["s3"]["object"]["key"] = "reports/x.json"
    readme = copy.deepcopy(event["Records"][0])
    readme["s3"]["object"]["key"] = "incoming/default/README.md"
    event["Records"] += [other, readme]
    uploads, ignored = parse_uploads(event, "incoming/")
    assert len(uploads) == 1
    assert ignored == ["reports/x.json", "incoming/default/README.md"]


def test_not_an_s3_event_is_refused_with_what_to_send():
    with pytest.raises(InputError, match="not an S3 notification"):
        parse_uploads({"hello": "world"}, "incoming/")


def test_order_compares_event_time_then_sequencer_as_equal_length_hex():
    early = Upload("b", "k", "v1", "FF", 1, "2026-11-27T10:00:00.000000Z")
    later = Upload("b", "k", "v2", "0100", 1, "2026-11-27T10:00:00.000000Z")
    assert early.order < later.order  # "FF" < "0100" only once padded
    assert Upload("b", "k", "v", "FFFF", 1, "2026-11-27T09:00:00.000000Z").order < early.order


def test_identity_round_trips():
    upload = Upload("b", "incoming/a b.zip", "v", "01", 12, "2026-11-27T10:00:00.000000Z")
    assert Upload.from_identity(upload.identity()) == upload


def test_a_key_too_long_for_a_file_name_is_stored_under_a_short_one():
    from layer_builder.service.service import local_name

    long_name = "x" * 300 + "-1.0.0.tar.gz"
    assert local_name(long_name) == "upload.tar.gz"
    assert local_name("aws-emr-launcher-0.1.0.zip") == "aws-emr-launcher-0.1.0.zip"
