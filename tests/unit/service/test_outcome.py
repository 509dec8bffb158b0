"""A stopped build's report keeps the failed tool's log; the event and the log line do not."""

from layer_builder.errors import SourceBuildError, error_report
from layer_builder.redact import forget_secrets, redact_data, register_secret
from layer_builder.service.service import Outcome
from layer_builder.service.uploads import Upload

UPLOAD = Upload("bucket", "incoming/data/app-1.0.zip", "v1", "0A", 10, "2026-12-01T00:00:00Z")


def refused(log: str, max_chars: int = 1000) -> Outcome:
    exc = SourceBuildError("Building brokenc 1.0 from source failed: error: expected ';'", log=log)
    return Outcome(status="refused", upload=UPLOAD, error=redact_data(error_report(exc, max_chars)))


def test_the_report_keeps_the_end_of_the_log_and_the_event_leaves_it_out():
    outcome = refused("x" * 5000 + "\nsrc/speed.c:3: error: expected ';'", max_chars=100)
    report, event = outcome.to_dict()["error"], outcome.summary()["error"]
    assert report["kind"] == "source_build_failed" and report["retryable"] == "False"
    assert report["log"].endswith("error: expected ';'") and len(report["log"]) == 100
    assert "log" not in event and event["message"] == report["message"]


def test_the_log_is_redacted_like_every_other_text():
    register_secret("https://build:s3cr3t-token@index.example/simple/")
    try:
        outcome = refused("fetching https://build:s3cr3t-token@index.example/simple/setuptools/")
    finally:
        forget_secrets()
    assert "s3cr3t-token" not in outcome.to_dict()["error"]["log"]


def test_an_error_without_a_log_has_no_log_key():
    exc = SourceBuildError("no log here")
    assert "log" not in error_report(exc, 100)
