"""The builder's one settings object, read from the environment at the edge; fails fast."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass

from packaging.utils import canonicalize_name

from ..errors import ConfigurationError
from ..project import layer_name
from ..target import Target


def _names(raw: str) -> tuple[str, ...]:
    return tuple(sorted({n.strip() for n in raw.split(",") if n.strip()}))


def _teams_consumers(environ: Mapping[str, str]) -> tuple[str, str]:
    """CONSUMER_FUNCTIONS and CONSUMER_LAYERS (full layer names) from the template's TEAMS.

    A bridge until the service reads TEAMS itself: every team's consumers and subscribed layers.
    """
    raw = environ.get("TEAMS", "")
    if not raw:
        return environ.get("CONSUMER_FUNCTIONS", ""), ",".join(
            layer_name(n, environ.get("LAYER_NAME_PREFIX", ""))
            for n in _names(environ.get("CONSUMER_LAYERS", "")))
    try:
        teams = json.loads(raw)
        functions = {f for team in teams for f in team.get("consumers", [])}
        layers = {team["layer_prefix"] + n for team in teams
                  for n in team.get("subscribed_layers", [])}
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise ConfigurationError(f"TEAMS is not a valid JSON list of teams: {exc}") from None
    return ",".join(functions), ",".join(layers)


@dataclass(frozen=True)
class Settings:
    artifact_bucket: str
    idempotency_table: str
    pointer_parameter_prefix: str
    target: Target
    source_prefix: str = "incoming/"
    layer_name_prefix: str = ""
    consumer_functions: tuple[str, ...] = ()
    #: Layers the consumers subscribe to: added to a consumer that lacks them. Any other layer
    #: only replaces an older version of itself that a consumer already uses.
    consumer_layers: frozenset[str] = frozenset()
    package_index_url: str = ""
    allow_sdist: frozenset[str] = frozenset()
    event_bus_name: str = "default"
    #: Local dependency cache; survives warm invocations, bounded by cache_max_bytes.
    cache_dir: str = "/tmp/layer-builder-cache"
    cache_max_bytes: int = 2 * 1024**3
    #: Time kept back from the Lambda's budget for publish, attach and the report.
    finish_margin_s: float = 60.0

    REQUIRED = ("ARTIFACT_BUCKET", "STATE_TABLE", "POINTER_PARAMETER_PREFIX")

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Settings:
        # The template's names (STATE_TABLE, TARGETS, TEAMS) first; the former ones still work.
        if not environ.get("STATE_TABLE") and environ.get("IDEMPOTENCY_TABLE"):
            environ = {**environ, "STATE_TABLE": environ["IDEMPOTENCY_TABLE"]}
        missing = [name for name in cls.REQUIRED if not environ.get(name)]
        if missing:
            raise ConfigurationError(
                f"The builder is missing environment variables {', '.join(missing)}: "
                "deploy it with template.yaml, which sets them.")
        try:
            first = environ.get("TARGETS", "").split(",")[0].strip()
            runtime, _, arch = first.partition("/") if first else (
                environ.get("TARGET_RUNTIME", "python3.13"), "", environ.get("TARGET_ARCH", "x86_64"))
            target = Target(runtime, arch)
            margin = float(environ.get("FINISH_MARGIN_SECONDS", "60"))
            cache_max = int(environ.get("CACHE_MAX_BYTES", str(2 * 1024**3)))
        except ValueError as exc:
            raise ConfigurationError(f"Invalid builder setting: {exc}") from None
        except Exception as exc:  # Target raises InputError for unsupported values
            raise ConfigurationError(f"Invalid TARGETS (or TARGET_RUNTIME/TARGET_ARCH): {exc}") from None
        consumers, subscribed = _teams_consumers(environ)
        return cls(
            artifact_bucket=environ["ARTIFACT_BUCKET"],
            idempotency_table=environ["STATE_TABLE"],
            pointer_parameter_prefix=environ["POINTER_PARAMETER_PREFIX"].rstrip("/"),
            target=target,
            source_prefix=environ.get("SOURCE_PREFIX", "incoming/"),
            layer_name_prefix=environ.get("LAYER_NAME_PREFIX", ""),
            consumer_functions=_names(consumers),
            consumer_layers=frozenset(_names(subscribed)),
            package_index_url=environ.get("PACKAGE_INDEX_URL", ""),
            allow_sdist=frozenset(canonicalize_name(n) for n in _names(environ.get("ALLOW_SDIST", ""))),
            event_bus_name=environ.get("EVENT_BUS_NAME", "default"),
            cache_dir=environ.get("CACHE_DIR", "/tmp/layer-builder-cache"),
            cache_max_bytes=cache_max,
            finish_margin_s=margin,
        )
