"""The builder's one settings object, read from the environment at the edge; fails fast.

Every check names the variable at fault (the template sets them all: template.yaml,
BuilderFunction). Teams are the stack's tenants: an upload under `incoming/<team>/` belongs to
that team, and everything it may publish or touch is named by the team's layer prefix.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from packaging.utils import canonicalize_name

from ..errors import ConfigurationError, TeamError
from ..project import layer_name
from ..target import Target

TEAM_NAME = re.compile(r"[a-z0-9][a-z0-9-]*")
FUNCTION_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
LAYER_PREFIX = re.compile(r"[A-Za-z0-9_-]+")
ACCOUNT_ID = re.compile(r"\d{12}")
ORGANIZATION_ID = re.compile(r"o-[a-z0-9]{10,32}")
#: Leaves at least 76 of Lambda's 140 characters for the project's name and target suffix.
MAX_LAYER_PREFIX = 64
TEAM_KEYS = {
    "name",
    "layer_prefix",
    "consumers",
    "subscribed_layers",
    "share_accounts",
    "share_organization",
}


def _names(raw: str) -> tuple[str, ...]:
    return tuple(sorted({n.strip() for n in raw.split(",") if n.strip()}))


def _strings(team: str, key: str, value: object) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigurationError(
            f"TEAMS: team {team!r} has a `{key}` that is not a list of strings."
        )
    return tuple(dict.fromkeys(v.strip() for v in value if v.strip()))


@dataclass(frozen=True)
class Team:
    """A tenant: its uploads live under `<source prefix><name>/`, its layers under layer_prefix."""

    name: str
    layer_prefix: str
    #: Functions this team's layers may be attached to (the only ones it may re-point).
    consumers: tuple[str, ...] = ()
    #: Full layer names (prefix included) the consumers take even where they lack them yet.
    subscribed_layers: frozenset[str] = frozenset()
    share_accounts: tuple[str, ...] = ()
    share_organization: str = ""

    def owns(self, layer: str) -> bool:
        """`layer` is a name or an ARN (arn:…:layer:NAME[:version])."""
        if ":layer:" in layer:
            layer = layer.split(":layer:", 1)[1].split(":", 1)[0]
        return layer.startswith(self.layer_prefix)

    def require_own(self, layer: str, action: str) -> None:
        """Defence in depth beside IAM: nothing outside the team's prefix is ever changed."""
        if not self.owns(layer):
            raise TeamError(
                f"Refusing to {action} {layer}: it is not a layer of team {self.name!r} "
                f"(its layers start with {self.layer_prefix!r})."
            )

    @classmethod
    def from_json(cls, data: object, stack_prefix: str) -> Team:
        if not isinstance(data, dict):
            raise ConfigurationError(f"TEAMS: every team is a JSON object, not {data!r}.")
        name = data.get("name")
        if not isinstance(name, str) or not TEAM_NAME.fullmatch(name):
            raise ConfigurationError(
                f"TEAMS: team name {name!r} must match [a-z0-9][a-z0-9-]* "
                "(it is the folder under the source prefix)."
            )
        unknown = sorted(set(data) - TEAM_KEYS)
        if unknown:
            raise ConfigurationError(
                f"TEAMS: team {name!r} has unknown keys {', '.join(unknown)}; "
                f"known keys are {', '.join(sorted(TEAM_KEYS))}."
            )
        prefix = data.get("layer_prefix")
        if (
            not isinstance(prefix, str)
            or not LAYER_PREFIX.fullmatch(prefix)
            or len(prefix) > MAX_LAYER_PREFIX
            or not prefix.startswith(stack_prefix)
        ):
            raise ConfigurationError(
                f"TEAMS: team {name!r} has layer_prefix {prefix!r}: it must start with "
                f"LAYER_NAME_PREFIX ({stack_prefix!r}), use only letters, digits, '-' and '_', "
                f"and be at most {MAX_LAYER_PREFIX} characters."
            )
        consumers = _strings(name, "consumers", data.get("consumers", []))
        bad = [c for c in consumers if not FUNCTION_NAME.fullmatch(c)]
        if bad:
            raise ConfigurationError(
                f"TEAMS: team {name!r} lists consumers {bad}: give plain "
                "function names of this account and region, not ARNs."
            )
        accounts = _strings(name, "share_accounts", data.get("share_accounts", []))
        organization = data.get("share_organization", "") or ""
        if (
            any(not ACCOUNT_ID.fullmatch(a) for a in accounts)
            or not isinstance(organization, str)
            or (organization and not ORGANIZATION_ID.fullmatch(organization))
        ):
            raise ConfigurationError(
                f"TEAMS: team {name!r} shares with {accounts} / "
                f"{organization!r}: give 12-digit account ids and an o-… "
                "organization id."
            )
        subscribed = frozenset(
            layer_name(n, prefix)
            for n in _strings(name, "subscribed_layers", data.get("subscribed_layers", []))
        )
        return cls(name, prefix, consumers, subscribed, accounts, organization)


def parse_teams(raw: str, stack_prefix: str) -> tuple[Team, ...]:
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise ConfigurationError(f"TEAMS is not valid JSON: {exc}.") from None
    if not isinstance(data, list) or not data:
        raise ConfigurationError("TEAMS must be a non-empty JSON list of teams.")
    teams = tuple(Team.from_json(item, stack_prefix) for item in data)
    names = [t.name for t in teams]
    if len(set(names)) != len(names):
        raise ConfigurationError(f"TEAMS names a team twice: {sorted(names)}.")
    # A name starting with two teams' prefixes would belong to both: "s-data-" and "s-data-x-"
    # let team data publish project "x-foo" as team data-x's layer "foo".
    for a in teams:
        for b in teams:
            if a is not b and b.layer_prefix.startswith(a.layer_prefix):
                raise ConfigurationError(
                    f"TEAMS: team {a.name!r}'s layer_prefix {a.layer_prefix!r} is a prefix of team "
                    f"{b.name!r}'s {b.layer_prefix!r}, so one team could publish the other's "
                    "layers: give teams prefixes that do not start with one another."
                )
    return teams


def parse_targets(raw: str, variable: str) -> tuple[Target, ...]:
    targets = []
    for item in (part.strip() for part in raw.split(",")):
        if not item:
            continue
        runtime, _, arch = item.partition("/")
        try:
            targets.append(Target(runtime, arch or "x86_64"))
        except Exception as exc:  # Target raises InputError naming what it supports
            raise ConfigurationError(f"{variable}: {item!r} is not a target: {exc}") from None
    if not targets:
        raise ConfigurationError(f"{variable} names no target (e.g. python3.13/x86_64).")
    return tuple(dict.fromkeys(targets))


def target_label(target: Target) -> str:
    return f"{target.runtime}/{target.arch}"


def parse_check_functions(raw: str) -> dict[Target, str]:
    try:
        data = json.loads(raw or "{}")
    except ValueError as exc:
        raise ConfigurationError(f"CHECK_FUNCTIONS is not valid JSON: {exc}.") from None
    if not isinstance(data, dict) or not all(
        isinstance(v, str) and FUNCTION_NAME.fullmatch(v) for v in data.values()
    ):
        raise ConfigurationError(
            "CHECK_FUNCTIONS must map targets to function names, e.g. "
            '{"python3.13/x86_64": "<stack>-check-py313-x86_64"}.'
        )
    return {parse_targets(key, "CHECK_FUNCTIONS")[0]: name for key, name in data.items()}


def parse_layer_name_prefix(environ: Mapping[str, str]) -> str:
    prefix = environ["LAYER_NAME_PREFIX"]
    if not LAYER_PREFIX.fullmatch(prefix) or len(prefix) > MAX_LAYER_PREFIX:
        raise ConfigurationError(
            f"LAYER_NAME_PREFIX {prefix!r} must be letters, digits, '-' "
            f"or '_', at most {MAX_LAYER_PREFIX} characters."
        )
    return prefix


def parse_number(environ: Mapping[str, str], name: str, default: str, kind: type = int) -> float:
    try:
        value = kind(environ.get(name) or default)
    except ValueError:
        raise ConfigurationError(f"{name} must be a number, not {environ[name]!r}.") from None
    if value < 0:
        raise ConfigurationError(f"{name} cannot be negative.")
    return value


def parse_sharing(environ: Mapping[str, str]) -> tuple[tuple[str, ...], str]:
    """SHARE_ACCOUNTS and SHARE_ORGANIZATION_ID (template: ShareAccounts, ShareOrganizationId):
    the stack's grantees, on every version of every team (each team's own come on top)."""
    accounts = _names(environ.get("SHARE_ACCOUNTS", ""))
    organization = environ.get("SHARE_ORGANIZATION_ID", "").strip()
    bad = [a for a in accounts if not ACCOUNT_ID.fullmatch(a)]
    if bad or (organization and not ORGANIZATION_ID.fullmatch(organization)):
        raise ConfigurationError(
            f"SHARE_ACCOUNTS {list(accounts)} / SHARE_ORGANIZATION_ID "
            f"{organization!r}: give 12-digit account ids (comma-separated) "
            "and an o-… organization id."
        )
    return accounts, organization


def require(environ: Mapping[str, str], names: tuple[str, ...], function: str) -> None:
    missing = [name for name in names if not environ.get(name, "").strip()]
    if missing:
        raise ConfigurationError(
            f"The {function} is missing environment variables {', '.join(missing)}: "
            "deploy it with template.yaml, which sets them."
        )


@dataclass(frozen=True)
class Settings:
    artifact_bucket: str
    state_table: str
    pointer_parameter_prefix: str
    layer_name_prefix: str
    teams: tuple[Team, ...]
    #: The stack's default targets; the first is a project's primary target unless it names its own.
    targets: tuple[Target, ...] = (Target(),)
    #: Target → the check function (sandbox) of that runtime and architecture.
    check_functions: Mapping[Target, str] = field(default_factory=dict)
    source_prefix: str = "incoming/"
    #: Secrets Manager ARN (or SSM SecureString name) holding the index URL; "" = default index.
    package_index_secret: str = ""
    #: Secrets Manager ARN of the HMAC key for cache entries; "" = no shared (S3) cache level.
    cache_key_secret: str = ""
    allow_sdist: frozenset[str] = frozenset()
    #: Versions kept per layer after each publish (0 = all).
    keep_versions: int = 0
    #: The stack's grantees of lambda:GetLayerVersion on every version (SHARE_ACCOUNTS,
    #: SHARE_ORGANIZATION_ID); each team's share_accounts / share_organization add to them.
    share_accounts: tuple[str, ...] = ()
    share_organization: str = ""
    event_bus_name: str = "default"
    #: Local dependency cache; survives warm invocations, bounded by cache_max_bytes.
    cache_dir: str = "/tmp/layer-builder-cache"
    cache_max_bytes: int = 2 * 1024**3
    #: Time kept back from the Lambda's budget for publish, attach and the report.
    finish_margin_s: float = 60.0

    #: CHECK_FUNCTIONS is required: without a check function the upload's code would run in
    #: the builder, next to its rights.
    REQUIRED = (
        "ARTIFACT_BUCKET",
        "STATE_TABLE",
        "POINTER_PARAMETER_PREFIX",
        "LAYER_NAME_PREFIX",
        "TEAMS",
        "TARGETS",
        "CHECK_FUNCTIONS",
    )

    @property
    def enabled_targets(self) -> tuple[Target, ...]:
        """What a project may ask for: the targets the stack deployed a check function for."""
        return tuple(self.check_functions)

    def team_prefixes(self) -> list[str]:
        return [f"{self.source_prefix}{team.name}/" for team in self.teams]

    def team_for(self, key: str) -> Team:
        """The team owning an upload, from its key alone (never from the archive's content)."""
        for team in self.teams:
            if key.startswith(f"{self.source_prefix}{team.name}/"):
                return team
        raise TeamError(
            f"{key} is not under any team's folder: upload to one of "
            f"{', '.join(self.team_prefixes())} (the stack's TEAMS)."
        )

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Settings:
        require(environ, cls.REQUIRED, "builder")
        prefix = parse_layer_name_prefix(environ)
        targets = parse_targets(environ["TARGETS"], "TARGETS")
        checks = parse_check_functions(environ["CHECK_FUNCTIONS"])
        if not checks:
            raise ConfigurationError(
                "CHECK_FUNCTIONS names no check function: deploy one per "
                "target (the builder never runs uploaded code itself)."
            )
        unchecked = [target_label(t) for t in targets if t not in checks]
        if unchecked:
            raise ConfigurationError(
                f"TARGETS lists {', '.join(unchecked)}, which CHECK_FUNCTIONS "
                "has no check function for: deploy one per target."
            )
        numbers = {
            name: parse_number(environ, name, default, kind)
            for name, default, kind in (
                ("FINISH_MARGIN_SECONDS", "60", float),
                ("CACHE_MAX_BYTES", str(2 * 1024**3), int),
                ("KEEP_VERSIONS", "0", int),
            )
        }
        share_accounts, share_organization = parse_sharing(environ)
        return cls(
            artifact_bucket=environ["ARTIFACT_BUCKET"],
            state_table=environ["STATE_TABLE"],
            pointer_parameter_prefix=environ["POINTER_PARAMETER_PREFIX"].rstrip("/"),
            layer_name_prefix=prefix,
            teams=parse_teams(environ["TEAMS"], prefix),
            targets=targets,
            check_functions=checks,
            source_prefix=environ.get("SOURCE_PREFIX") or "incoming/",
            package_index_secret=environ.get("PACKAGE_INDEX_SECRET", "").strip(),
            cache_key_secret=environ.get("CACHE_KEY_SECRET", "").strip(),
            allow_sdist=frozenset(
                canonicalize_name(n) for n in _names(environ.get("ALLOW_SDIST", ""))
            ),
            keep_versions=int(numbers["KEEP_VERSIONS"]),
            share_accounts=share_accounts,
            share_organization=share_organization,
            event_bus_name=environ.get("EVENT_BUS_NAME") or "default",
            cache_dir=environ.get("CACHE_DIR") or "/tmp/layer-builder-cache",
            cache_max_bytes=int(numbers["CACHE_MAX_BYTES"]),
            finish_margin_s=numbers["FINISH_MARGIN_SECONDS"],
        )


@dataclass(frozen=True)
class MaintenanceSettings:
    """The maintenance function's environment (template.yaml, LayerMaintenanceFunction): the
    builder's variables for the same things, nothing about uploads, caches or secrets."""

    layer_name_prefix: str
    pointer_parameter_prefix: str
    teams: tuple[Team, ...]
    keep_versions: int = 0
    share_accounts: tuple[str, ...] = ()
    share_organization: str = ""

    REQUIRED = ("LAYER_NAME_PREFIX", "POINTER_PARAMETER_PREFIX", "TEAMS")
    #: Every variable it reads (the template's, less AWS_ENDPOINT_URL and POWERTOOLS_*, which
    #: boto3 and Powertools read themselves).
    VARIABLES = (*REQUIRED, "KEEP_VERSIONS", "SHARE_ACCOUNTS", "SHARE_ORGANIZATION_ID")

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> MaintenanceSettings:
        require(environ, cls.REQUIRED, "maintenance function")
        prefix = parse_layer_name_prefix(environ)
        accounts, organization = parse_sharing(environ)
        return cls(
            prefix,
            environ["POINTER_PARAMETER_PREFIX"].rstrip("/"),
            parse_teams(environ["TEAMS"], prefix),
            int(parse_number(environ, "KEEP_VERSIONS", "0")),
            accounts,
            organization,
        )

    def team(self, name: str) -> Team:
        for team in self.teams:
            if team.name == name:
                return team
        raise TeamError(
            f"No team {name!r}: the stack's teams are "
            f"{', '.join(t.name for t in self.teams)} (TEAMS)."
        )

    def owner(self, layer: str) -> Team | None:
        return next((t for t in self.teams if t.owns(layer)), None)
