"""layer_builder.redact: index secrets never leave the builder, in any form a message may carry."""

from __future__ import annotations

import io
import json
import logging
from urllib.parse import quote

import pytest

from layer_builder.redact import (
    RedactingFilter,
    RedactingFormatterMixin,
    forget_secrets,
    redact,
    redact_data,
    register_secret,
    registered_secrets,
)

TOKEN = "tK9x2Qm7LpZr4Vb8"  # what index tokens look like: long, digits, mixed case


@pytest.fixture(autouse=True)
def clean_registry():
    forget_secrets()
    yield
    forget_secrets()


# --- what any URL gives away ------------------------------------------------------------------

@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://user:pass@pkgs.example/simple", "https://***@pkgs.example/simple"),
        ("https://token@pkgs.example:8443/simple", "https://***@pkgs.example:8443/simple"),
        ("https://u:p%40ss@pkgs.example/simple?x=1", "https://***@pkgs.example/simple?x=1"),
        ("https://u:p@ss@pkgs.example/simple", "https://***@pkgs.example/simple"),
        ("https://u:p@pkgs.example:notaport/simple", "https://***@pkgs.example:notaport/simple"),
        ("https://u:p@[::1/simple", "https://***@[::1/simple"),
        ("https://pkgs.example/simple", "https://pkgs.example/simple"),
        ("https://pkgs.example/a@b", "https://pkgs.example/a@b"),
        ("${PIP_INDEX_URL}", "${PIP_INDEX_URL}"),
        # query values under secret-looking keys, wherever the URL comes from
        ("https://pkgs.example/simple?token=abc123", "https://pkgs.example/simple?token=***"),
        ("https://pkgs.example/simple/?x=1&api_key=k3y&y=2",
         "https://pkgs.example/simple/?x=1&api_key=***&y=2"),
        ("https://b.s3.example/k?X-Amz-Credential=AKIA%2F1&X-Amz-Signature=ab12&X-Amz-Expires=60",
         "https://b.s3.example/k?X-Amz-Credential=***&X-Amz-Signature=***&X-Amz-Expires=60"),
        ("https://pkgs.example/simple?Password=hunter2#frag",
         "https://pkgs.example/simple?Password=***#frag"),
    ],
    ids=["user-password", "token-user", "encoded-at", "raw-at", "bad-port", "bad-ipv6", "plain",
         "at-in-path", "variable", "query-token", "query-api-key", "presigned", "query-password"],
)
def test_any_url(url, expected):
    assert redact(url) == expected
    assert redact(f"uv said: {url} (retrying)") == f"uv said: {expected} (retrying)"


def test_matches_never_run_across_json_strings():
    text = json.dumps({"url": "https://pkgs.example", "owner": "ops@team.example"},
                      separators=(",", ":"))
    assert redact(text) == text
    assert json.loads(redact(json.dumps({"u": "https://a:b@h.example/x?token=t"}))) == {
        "u": "https://***@h.example/x?token=***"}


# --- the configured index: each form of its secrets -------------------------------------------

PATH_URL = f"https://pkgs.example/{TOKEN}/simple/"
QUERY_URL = f"https://pkgs.example/simple/?auth={TOKEN}"


@pytest.mark.parametrize(
    ("configured", "message", "leaks"),
    [
        pytest.param(f"https://aws:{TOKEN}@pkgs.example/simple/",
                     f"Could not fetch https://aws:{TOKEN}@pkgs.example/simple/six/", [TOKEN],
                     id="userinfo"),
        pytest.param(PATH_URL, f"HTTP 404 for {PATH_URL}six/", [TOKEN], id="path-token"),
        pytest.param(PATH_URL, f"the token {TOKEN} expired", [TOKEN], id="path-token-alone"),
        pytest.param(QUERY_URL, f"GET {QUERY_URL} failed", [TOKEN], id="query-token"),
        pytest.param("https://pkgs.example/simple/?t=" + TOKEN,  # a key no pattern knows
                     f"GET https://pkgs.example/simple/?t={TOKEN}", [TOKEN], id="query-any-key"),
        pytest.param("https://pkgs.example/ab%2Fcd%40" + TOKEN + "/simple",
                     f"index https://pkgs.example/ab/cd@{TOKEN}/simple is down",
                     ["ab/cd@" + TOKEN, TOKEN], id="percent-encoded-token-shown-decoded"),
        pytest.param("https://pkgs.example/ab/cd@" + TOKEN + "/simple",
                     "index https://pkgs.example/" + quote(f"ab/cd@{TOKEN}", safe="") + "/simple",
                     [TOKEN], id="token-shown-percent-encoded"),
        pytest.param(f"https://u:{quote('p@ss/' + TOKEN, safe='')}@pkgs.example/simple",
                     f"password p@ss/{TOKEN} rejected", [TOKEN], id="percent-encoded-password"),
        pytest.param(PATH_URL, f"Source 'pypi' names the index {PATH_URL!r}", [TOKEN],
                     id="literal-url-in-a-message"),
        pytest.param(PATH_URL, json.dumps({"error": f"fetch {PATH_URL} failed"}), [TOKEN],
                     id="literal-url-in-json"),
        pytest.param(TOKEN, f"bearer {TOKEN}", [TOKEN], id="bare-token"),
    ],
)
def test_registered_index_url(configured, message, leaks):
    assert all(leak in message for leak in leaks)  # the case really carries the secret
    register_secret(configured)
    redacted = redact(message)
    for leak in leaks:
        assert leak not in redacted, redacted
    assert "***" in redacted


def test_registered_url_keeps_its_host_and_public_shape():
    register_secret(PATH_URL)
    assert redact(f"GET {PATH_URL}six/ gave 404") == "GET https://pkgs.example/***/simple/six/ gave 404"
    register_secret(QUERY_URL)
    assert redact(QUERY_URL) == "https://pkgs.example/simple/?auth=***"


def test_secrets_can_be_given_per_call_without_registering():
    assert TOKEN not in redact(f"at {PATH_URL}", secrets=[PATH_URL])
    assert registered_secrets() == ()
    assert TOKEN in redact(f"at {PATH_URL}")  # nothing about the path says "secret" on its own


def test_word_like_path_segments_are_masked_in_the_url_but_not_everywhere():
    url = "https://pkgs.example/repository/pypi-remote/simple"
    register_secret(url)
    assert redact(f"{url}/six/") == "https://pkgs.example/***/***/simple/six/"
    assert redact("installing 3 packages from the repository") == (
        "installing 3 packages from the repository")


def test_register_is_idempotent_and_ignores_empty_values():
    register_secret(PATH_URL)
    register_secret(PATH_URL)
    register_secret("")
    register_secret(None)
    register_secret("   ")
    assert registered_secrets() == (PATH_URL,)
    forget_secrets()
    assert registered_secrets() == ()


def test_redact_data_reaches_nested_values():
    register_secret(PATH_URL)
    event = {"detail": {"error": {"message": f"fetch {PATH_URL}"}, "warnings": [TOKEN],
                        "count": 3, TOKEN: True}}
    text = json.dumps(redact_data(event))
    assert TOKEN not in text
    assert json.loads(text)["detail"]["count"] == 3


# --- logs ---------------------------------------------------------------------------------------

def _logger(handler: logging.Handler) -> logging.Logger:
    logger = logging.getLogger(f"test-redact-{id(handler)}")
    logger.propagate = False
    logger.handlers = [handler]
    logger.setLevel(logging.INFO)
    return logger


def test_logging_filter_redacts_message_args_extra_and_exception():
    register_secret(PATH_URL)
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(message)s|%(index)s"))
    handler.addFilter(RedactingFilter())
    logger = _logger(handler)
    try:
        raise RuntimeError(f"boom at https://aws:{TOKEN}@pkgs.example/simple")
    except RuntimeError:
        logger.exception("installing from %s", PATH_URL, extra={"index": PATH_URL})
    out = stream.getvalue()
    assert TOKEN not in out
    assert "installing from https://pkgs.example/***/simple/|https://pkgs.example/***/simple/" in out
    assert "RuntimeError: boom at https://***@pkgs.example/simple" in out


def test_logging_filter_keeps_dict_messages_structured():
    register_secret(QUERY_URL)
    record = logging.LogRecord("x", logging.INFO, __file__, 1, {"index": QUERY_URL, "n": 1}, None,
                               None)
    assert RedactingFilter().filter(record)
    assert record.msg == {"index": "https://pkgs.example/simple/?auth=***", "n": 1}


def test_formatter_mixin_redacts_the_whole_output_of_a_json_formatter():
    from aws_lambda_powertools.logging.formatter import LambdaPowertoolsFormatter

    class Formatter(RedactingFormatterMixin, LambdaPowertoolsFormatter):
        pass

    register_secret(PATH_URL)
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(Formatter())
    logger = _logger(handler)
    try:
        raise ValueError(f"index {PATH_URL} refused")
    except ValueError:
        logger.exception({"event": "install", "index": PATH_URL})
    line = stream.getvalue().strip()
    assert TOKEN not in line
    payload = json.loads(line)  # still valid JSON
    assert payload["message"]["index"] == "https://pkgs.example/***/simple/"
    assert "https://pkgs.example/***/simple/ refused" in payload["exception"]


def test_a_file_index_path_is_a_folder_not_a_secret():
    register_secret("file:///tmp/pytest-of-ci/pytest-12/house0/simple")
    assert redact("built in /tmp/pytest-of-ci/pytest-12/out") == "built in /tmp/pytest-of-ci/pytest-12/out"
    register_secret("file://u:s3cr3tpw@host/srv/simple")
    assert redact("file://u:s3cr3tpw@host/srv/simple/six") == "file://***@host/srv/simple/six"
