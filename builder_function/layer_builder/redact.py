"""Secrets out of every text that leaves the builder: errors, reports, events and logs.

Index tokens sit in three places of a URL: the userinfo (`https://aws:TOKEN@host/...`), the path
(`https://host/TOKEN/simple/`) and the query (`?token=TOKEN`). Without knowing the URL, only the
first and the last can be spotted; so the configured index URL is registered once per process
(`register_secret`) and `redact` then removes:

- userinfo of any URL (`scheme://***@host`);
- values of secret-looking query keys of any URL (`?token=***`, `X-Amz-Signature=***`);
- each registered URL literally, also percent-decoded and JSON-escaped, replaced by its masked
  form (`https://***@host/***/simple/`), which keeps the host for whoever reads the message;
- each registered URL's secrets wherever they appear alone: its password, its query values and
  (http and https only) its path segments other than the public `simple` (a token copied into
  another message).

Path segments that look like words (`pypi`, `packages`, `repository`) are masked inside the
registered URL but not replaced on their own everywhere: that would eat ordinary words from
messages. Anything with a digit or mixed case, or of 20 characters or more, counts as a token.

Regular expressions, not urlsplit: `.port` and IPv6 parsing raise ValueError on a hostile URL.
"""

from __future__ import annotations

import functools
import json
import logging
import re
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote

MASK = "***"
#: scheme:// up to the last "@" of the authority: a password may hold an unencoded "@". Quotes
#: and brackets end it, so a match never runs across JSON strings or markup.
_USERINFO = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://)[^\s/?#\"'<>\\]*@")
_SECRET_QUERY = re.compile(
    r"([?&;][\w.-]*?(?:token|key|secret|passw(?:or)?d|pwd|auth|sig(?:nature)?|credential|session)"
    r"[\w.-]*=)[^&#\s\"'<>\\]+",
    re.I,
)
_URL = re.compile(
    r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?:(?P<userinfo>[^/?#]*)@)?"
    r"(?P<host>[^/?#]*)(?P<path>[^?#]*)(?:\?(?P<query>[^#]*))?(?:#.*)?$",
    re.S,
)
#: Path segments that are the public shape of an index URL, never a secret.
_PUBLIC_SEGMENTS = frozenset({"", "simple", "+simple"})
#: Shorter values are not replaced on their own (they would match inside ordinary words).
MIN_TOKEN_LENGTH = 6


def _looks_like_token(text: str) -> bool:
    if len(text) < MIN_TOKEN_LENGTH:
        return False
    mixed_case = text.lower() != text and text.upper() != text
    return len(text) >= 20 or mixed_case or any(c.isdigit() for c in text)


@dataclass(frozen=True)
class _Secret:
    #: (literal, replacement), longest first: the URL itself, decoded, JSON-escaped.
    literals: tuple[tuple[str, str], ...]
    #: Values removed wherever they appear on their own.
    tokens: tuple[str, ...]


@functools.lru_cache(maxsize=256)
def _parse(secret: str) -> _Secret:
    secret = secret.strip()
    match = _URL.match(secret)
    if match is None:  # not a URL: a bare token, removed wherever it appears
        return _Secret((), _forms(secret) if len(secret) >= MIN_TOKEN_LENGTH else ())
    userinfo, path, query = match["userinfo"], match["path"], match["query"]
    tokens: list[str] = []
    masked = match["scheme"]
    if userinfo is not None:
        user, _, password = userinfo.partition(":")
        tokens += [password or user]
        masked += f"{MASK}@"
    masked += match["host"]
    segments = path.split("/")
    # Only a served index keeps tokens in its path; a file:// index's path is a folder.
    served = match["scheme"].lower() in ("http://", "https://")
    hidden = [s for s in segments if served and unquote(s).lower() not in _PUBLIC_SEGMENTS]
    tokens += [s for s in hidden if _looks_like_token(unquote(s))]
    masked += "/".join(s if s not in hidden else MASK for s in segments)
    if query is not None:
        pairs = [p.partition("=") for p in query.split("&")]
        tokens += [value for _, _, value in pairs if value]
        masked += "?" + "&".join(f"{k}={MASK}" if eq else k for k, eq, _ in pairs)
    literals = {
        form: masked
        for form in (secret, unquote(secret), _json_escaped(secret))
        if form and form != masked
    }
    return _Secret(
        tuple(sorted(literals.items(), key=lambda kv: -len(kv[0]))),
        tuple(f for t in tokens if len(unquote(t)) >= MIN_TOKEN_LENGTH for f in _forms(t)),
    )


def _json_escaped(text: str) -> str:
    return json.dumps(text)[1:-1]


def _forms(token: str) -> tuple[str, ...]:
    """A token as it may be written: as given, percent-decoded, percent-encoded, JSON-escaped."""
    decoded = unquote(token)
    return tuple(dict.fromkeys((token, decoded, quote(decoded, safe=""), _json_escaped(decoded))))


_registered: list[str] = []
_lock = threading.Lock()


def register_secret(url: str | None) -> None:
    """Redact this URL (or bare token) from every later `redact` in this process."""
    if url and url.strip():
        with _lock:
            if url not in _registered:
                _registered.append(url)


def registered_secrets() -> tuple[str, ...]:
    with _lock:
        return tuple(_registered)


def forget_secrets() -> None:
    """Clear the registry (tests; a long-lived process whose configured index changed)."""
    with _lock:
        _registered.clear()


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """`text` without userinfo, secret query values, and the registered (and given) secrets."""
    parsed = [_parse(s) for s in (*registered_secrets(), *secrets) if s and s.strip()]
    for literal, masked in sorted(
        (lm for p in parsed for lm in p.literals), key=lambda lm: -len(lm[0])
    ):
        text = text.replace(literal, masked)
    text = _USERINFO.sub(rf"\1{MASK}@", text)
    text = _SECRET_QUERY.sub(rf"\1{MASK}", text)
    for token in sorted({t for p in parsed for t in p.tokens}, key=len, reverse=True):
        text = text.replace(token, MASK)
    return text


def redact_data(value: Any, secrets: Iterable[str] = ()) -> Any:
    """Every string in a JSON-like value (report, event detail) redacted; keys too."""
    secrets = tuple(secrets)
    if isinstance(value, str):
        return redact(value, secrets)
    if isinstance(value, dict):
        return {redact_data(k, secrets): redact_data(v, secrets) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(redact_data(v, secrets) for v in value)
    return value


#: LogRecord attributes that are the logging machinery's own, never message text.
_RECORD_FIELDS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message",
    "asctime",
}


class RedactingFilter(logging.Filter):
    """Redacts a record's message, arguments, exception text and `extra` values in place.

    Attach it to a handler (`handler.addFilter(RedactingFilter())`) so records from every logger
    pass through it. Powertools' JSON formatter renders exceptions itself, from exc_info: use
    `RedactingFormatterMixin` there as well.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, (dict, list, tuple)) and not record.args:
            record.msg = redact_data(record.msg)  # Powertools logs dicts as JSON objects
        else:
            record.msg, record.args = redact(record.getMessage()), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        for key, value in list(vars(record).items()):
            if key not in _RECORD_FIELDS and isinstance(value, (str, dict, list, tuple)):
                setattr(record, key, redact_data(value))
        return True


class RedactingFormatterMixin:
    """Put before a formatter class: its whole output is redacted, exceptions included.

    class Formatter(RedactingFormatterMixin, LambdaPowertoolsFormatter): ...
    """

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))  # type: ignore[misc]
