"""A layer's life after the build: list, keep or delete, roll back, share.

Pure logic behind small protocols (the boto3 adapters are in aws_lifecycle.py), shared by the CLI
(`versions`, `prune`, `rollback`, `share`, `unshare`, `publish --attach`), the builder (retention
and sharing after each publish) and the maintenance function (daily sweep, operator rollback).

The one rule every path keeps: a version that any function in the region uses, or that the SSM
pointer names, is never deleted. "Uses" covers every version of every function: ListFunctions
with FunctionVersion=ALL returns the unpublished ($LATEST) configuration *and* every published
version (https://docs.aws.amazon.com/lambda/latest/api/API_ListFunctions.html); aliases point at
published versions, so they are covered too. A function keeps running on a deleted layer
version, but can no longer be configured with it, so deleting one in use is a trap for later.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

from ..errors import InputError, TransientError
from .attach import (
    CONFLICT_ATTEMPTS,
    ConcurrentUpdate,
    Functions,
    Pointer,
    plan_layers,
    unversioned,
)
from .settings import Team

#: Layers and versions named in a refusal, at most.
SHOWN = 20
LATEST = "$LATEST"
ACCOUNT_ID = re.compile(r"^\d{12}$")
#: AddLayerVersionPermission's OrganizationId pattern.
ORGANIZATION_ID = re.compile(r"^o-[a-z0-9]{10,32}$")
SID_PREFIX = "layer-builder-"


class UnknownLayer(InputError):
    kind = "unknown_layer"


class UnknownVersion(InputError):
    kind = "unknown_version"


class UnknownFunction(InputError):
    kind = "unknown_function"


class IncompatibleConsumer(InputError):
    kind = "incompatible_consumer"


@dataclass(frozen=True)
class LayerVersion:
    layer_name: str
    number: int
    arn: str
    created: datetime
    #: Lambda's CodeSha256: the zip's sha256 in base64.
    code_sha256: str
    code_size: int
    runtimes: tuple[str, ...] = ()
    architectures: tuple[str, ...] = ()
    description: str = ""

    @property
    def sha256(self) -> str:
        """The zip's sha256 in hex, as the artifact bucket's layers/<name>/<sha256>.zip names it."""
        return base64.b64decode(self.code_sha256).hex() if self.code_sha256 else ""

    def serves(self, function: FunctionVersion) -> bool:
        """Declared for the function's runtime and architecture (an empty list declares nothing).

        Lambda enforces neither (CompatibleRuntimes is metadata), so this is our own check."""
        runtime_ok = not self.runtimes or function.runtime in self.runtimes
        arch_ok = not self.architectures or function.arch in self.architectures
        return runtime_ok and arch_ok

    def target(self) -> str:
        return f"{'/'.join(self.runtimes) or 'any runtime'} on {'/'.join(self.architectures) or 'any arch'}"


@dataclass(frozen=True)
class FunctionVersion:
    """One configuration of a function: $LATEST or a published version."""

    name: str
    version: str
    arn: str
    runtime: str
    arch: str
    layers: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        return self.name if self.version == LATEST else f"{self.name}:{self.version}"

    def layer_arn(self, layer_name: str) -> str:
        """The unversioned ARN layer_name has in this function's account and region."""
        return f"{self.arn.split(':function:')[0]}:layer:{layer_name}"

    def uses(self, layer_name: str) -> str | None:
        """The version ARN of our layer_name this configuration lists, if any (a layer of the
        same name shared from another account is not ours)."""
        ours = self.layer_arn(layer_name)
        return next((arn for arn in self.layers if unversioned(arn) == ours), None)


class LayerStore(Protocol):
    def layer_names(self) -> list[str]: ...

    def versions(self, layer_name: str) -> list[LayerVersion]:
        """Every version, newest first; [] when the layer does not exist. From the listing, which
        carries no CodeSha256/CodeSize (code_sha256 "" and code_size 0): version() has them."""

    def version(self, layer_name: str, number: int) -> LayerVersion | None: ...

    def delete(self, version: LayerVersion) -> None: ...

    def statements(self, layer_name: str, number: int) -> list[dict]:
        """The version's resource policy statements; [] without a policy."""

    def grant(
        self, layer_name: str, number: int, sid: str, principal: str, organization: str
    ) -> None: ...

    def revoke(self, layer_name: str, number: int, sid: str) -> None: ...


class FunctionCatalog(Protocol):
    def all_versions(self) -> list[FunctionVersion]:
        """Every configuration of every function in the region ($LATEST and published)."""

    def latest(self, name: str) -> FunctionVersion | None: ...


# -- reading ---------------------------------------------------------------------------------


def usage(configurations: Iterable[FunctionVersion]) -> dict[str, list[str]]:
    """Layer version ARN → the function configurations that list it."""
    used: dict[str, list[str]] = {}
    for config in configurations:
        for arn in config.layers:
            used.setdefault(arn, []).append(config.label)
    return used


def _similar(wanted: str, names: Sequence[str]) -> list[str]:
    """Names sharing the wanted name's first dash-separated word (the stack prefix, usually)."""
    head = wanted.split("-")[0] + "-" if "-" in wanted else wanted[:3]
    return sorted(n for n in names if n.startswith(head))


def _listing(items: Sequence[str]) -> str:
    shown = ", ".join(items[:SHOWN])
    return shown + (f" and {len(items) - SHOWN} more" if len(items) > SHOWN else "")


def require_versions(layer_name: str, layers: LayerStore) -> list[LayerVersion]:
    versions = layers.versions(layer_name)
    if versions:
        return versions
    names = layers.layer_names()
    similar = _similar(layer_name, names)
    if similar:
        hint = f"Layers named like it: {_listing(similar)}."
    elif names:
        hint = f"The account's layers here: {_listing(sorted(names))}."
    else:
        hint = "The account has no layers in this region (check --region / AWS_REGION)."
    raise UnknownLayer(f"Layer {layer_name} has no versions in this region. {hint}")


def require_version(layer_name: str, number: int, layers: LayerStore, doing: str) -> LayerVersion:
    found = layers.version(layer_name, number)
    if found is not None:
        return found
    existing = _listing([str(v.number) for v in require_versions(layer_name, layers)])
    raise UnknownVersion(
        f"Cannot {doing} version {number} of layer {layer_name}: it does not exist "
        f"(deleted, or never published). Existing versions: {existing}."
    )


def require_function(
    name: str, catalog: FunctionCatalog, suggestions: Callable[[], Sequence[str]]
) -> FunctionVersion:
    found = catalog.latest(name)
    if found is not None:
        return found
    names = list(suggestions())
    hint = (
        f"Functions that use the layer: {_listing(names)}."
        if names
        else "No function in this region uses the layer."
    )
    raise UnknownFunction(f"Function {name} does not exist in this region. {hint}")


@dataclass(frozen=True)
class VersionRow:
    version: LayerVersion
    used_by: tuple[str, ...]
    pointer: bool

    def to_dict(self) -> dict:
        v = self.version
        return {
            "version": v.number,
            "arn": v.arn,
            "created": v.created.isoformat(),
            "sha256": v.sha256,
            "code_sha256": v.code_sha256,
            "size": v.code_size,
            "runtimes": list(v.runtimes),
            "architectures": list(v.architectures),
            "used_by": list(self.used_by),
            "pointer": self.pointer,
        }


def describe(
    layer_name: str, layers: LayerStore, catalog: FunctionCatalog, pointer: Pointer | None = None
) -> list[VersionRow]:
    listed = require_versions(layer_name, layers)
    used = usage(catalog.all_versions())
    named = pointer.get(layer_name) if pointer else None
    rows = []
    for item in listed:  # the listing has no hash or size; a version deleted meanwhile is left out
        version = layers.version(layer_name, item.number)
        if version is not None:
            rows.append(VersionRow(version, tuple(used.get(version.arn, ())), version.arn == named))
    return rows


# -- retention -------------------------------------------------------------------------------


@dataclass
class Decision:
    version: LayerVersion
    action: str  # keep | delete | deleted | would delete
    reasons: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "version": self.version.number,
            "arn": self.version.arn,
            "created": self.version.created.isoformat(),
            "action": self.action,
            "reasons": self.reasons,
        }


def plan_retention(
    versions: Sequence[LayerVersion],
    keep: int,
    *,
    used: dict[str, list[str]],
    pointer: str | None,
    now: datetime,
    older_than_days: float | None = None,
    keep_label: str = "--keep",
) -> list[Decision]:
    """Keep the newest `keep` (0 keeps all), versions younger than older_than_days, and every
    version in use or named by the pointer; the rest is to delete. Every reason is listed."""
    decisions = []
    for index, version in enumerate(sorted(versions, key=lambda v: v.number, reverse=True)):
        keeping = []
        if keep == 0:
            keeping.append(f"{keep_label}=0 keeps every version")
        elif index < keep:
            keeping.append(f"among the newest {keep} ({keep_label} {keep})")
        age = now - version.created
        if older_than_days is not None and age < timedelta(days=older_than_days):
            keeping.append(f"younger than {older_than_days:g} days ({age.days} days old)")
        if version.arn in used:
            keeping.append(f"used by {', '.join(used[version.arn])}")
        if pointer and version.arn == pointer:
            keeping.append("named by the SSM pointer")
        if keeping:
            decisions.append(Decision(version, "keep", keeping))
            continue
        why = [f"beyond the newest {keep}"]
        if older_than_days is not None:
            why.append(f"older than {older_than_days:g} days ({age.days} days old)")
        why += ["used by no function", "not named by the SSM pointer"]
        decisions.append(Decision(version, "delete", why))
    return decisions


def apply_retention(
    layer_name: str,
    keep: int,
    *,
    layers: LayerStore,
    catalog: FunctionCatalog,
    pointer: Pointer | None,
    now: datetime,
    older_than_days: float | None = None,
    dry_run: bool = False,
    keep_label: str = "--keep",
    versions: Sequence[LayerVersion] | None = None,
    used: dict[str, list[str]] | None = None,
) -> list[Decision]:
    """Delete what plan_retention marks, after looking at the functions and the pointer again
    right before deleting: a version attached meanwhile is kept. (A window of one API call
    remains; the function would keep running on the deleted version, see the module's note.)"""
    if versions is None:
        versions = layers.versions(layer_name)
    if keep < 0:
        raise InputError(f"{keep_label} must be 0 (keep all) or more, not {keep}.")
    named = pointer.get(layer_name) if pointer else None
    decisions = plan_retention(
        versions,
        keep,
        used=usage(catalog.all_versions()) if used is None else used,
        pointer=named,
        now=now,
        older_than_days=older_than_days,
        keep_label=keep_label,
    )
    doomed = [d for d in decisions if d.action == "delete"]
    if not doomed:
        return decisions
    if dry_run:
        for decision in doomed:
            decision.action = "would delete"
        return decisions
    fresh = usage(catalog.all_versions())
    named = pointer.get(layer_name) if pointer else None
    for decision in doomed:
        arn = decision.version.arn
        if arn in fresh or arn == named:
            decision.action = "keep"
            decision.reasons = [
                f"used by {', '.join(fresh[arn])}" if arn in fresh else "named by the SSM pointer",
                "(attached while pruning)",
            ]
            continue
        layers.delete(decision.version)
        decision.action = "deleted"
    return decisions


def sweep(
    prefix: str,
    keep: int,
    *,
    layers: LayerStore,
    catalog: FunctionCatalog,
    pointer: Pointer | None,
    now: datetime,
) -> dict[str, list[Decision]]:
    """Retention for every layer whose name starts with prefix (the stack's, never empty)."""
    if not prefix:
        raise InputError("The sweep needs a layer-name prefix: it never touches every layer.")
    if keep == 0:
        return {}
    used = usage(catalog.all_versions())  # once for the sweep; refreshed before each deletion
    results = {}
    for name in sorted(n for n in layers.layer_names() if n.startswith(prefix)):
        results[name] = apply_retention(
            name,
            keep,
            layers=layers,
            catalog=catalog,
            pointer=pointer,
            now=now,
            used=used,
            keep_label="KEEP_VERSIONS",
        )
    return results


# -- re-pointing consumers -------------------------------------------------------------------


@dataclass
class Repointed:
    function: str
    status: str  # attached | unchanged
    layers: list[str]
    previous: str | None = None

    def to_dict(self) -> dict:
        return {
            "function": self.function,
            "status": self.status,
            "layers": self.layers,
            "previous": self.previous,
        }


def check_consumer(
    function: FunctionVersion,
    version: LayerVersion,
    functions: Functions,
    unzipped: int = 0,
    subscribed: bool = False,
) -> None:
    """Refuse before changing anything: an incompatible target, a function that does not use
    the layer (unless subscribed), or one over Lambda's limits (attach.plan_layers)."""
    if not version.serves(function):
        raise IncompatibleConsumer(
            f"Function {function.name} runs {function.runtime} on {function.arch}, but "
            f"{version.arn} is for {version.target()}: choose a version built for that target."
        )
    state = functions.get(function.name)
    if plan_layers(state, version.arn, unzipped, subscribed) is None:
        raise UnknownFunction(
            f"Function {function.name} does not use layer {version.layer_name} (its layers: "
            f"{', '.join(a.arn for a in state.layers) or 'none'}): only a version it already "
            "uses can be replaced."
        )


def repoint(
    function: str,
    version_arn: str,
    functions: Functions,
    *,
    unzipped: int = 0,
    subscribed: bool = False,
) -> Repointed:
    """Replace only this layer's version in the function (or add it when subscribed); the other
    layers stay in order. Retries while the function changes under us."""
    layer = unversioned(version_arn)
    for _ in range(CONFLICT_ATTEMPTS):
        state = functions.get(function)
        current = [item.arn for item in state.layers]
        previous = next((arn for arn in current if unversioned(arn) == layer), None)
        if version_arn in current:
            return Repointed(function, "unchanged", current, previous)
        planned = plan_layers(state, version_arn, unzipped, subscribed)
        if planned is None:
            raise UnknownFunction(f"Function {function} no longer uses layer {layer}: not changed.")
        try:
            functions.set_layers(state, planned)
        except ConcurrentUpdate:
            continue
        return Repointed(function, "attached", planned, previous)
    raise TransientError(f"Function {function} kept changing while its layers were updated: retry.")


def assign_consumers(
    consumers: Sequence[FunctionVersion], targets: Sequence[tuple[str, str]]
) -> dict[tuple[str, str], list[FunctionVersion]]:
    """Each consumer to the one (runtime, architecture) target that is its own, or a refusal:
    a layer built for another Python or machine would fail at import, or worse, later."""
    assigned: dict[tuple[str, str], list[FunctionVersion]] = {t: [] for t in targets}
    for function in consumers:
        key = (function.runtime, function.arch)
        if key not in assigned:
            built = ", ".join(f"{runtime}/{arch}" for runtime, arch in targets)
            raise IncompatibleConsumer(
                f"Function {function.name} runs {function.runtime or 'a container image'} on "
                f"{function.arch}, but this publish builds {built}: add {function.runtime}/"
                f"{function.arch} to the project's targets ([tool.layer-builder] targets, or "
                "--runtime/--arch), or leave the function out."
            )
        assigned[key].append(function)
    return assigned


def check_attach(
    function: FunctionVersion, layer_name: str, unzipped: int, functions: Functions
) -> None:
    """Before publishing: adding (or replacing) the layer keeps the function within Lambda's
    limits (attach.plan_layers raises ConsumerRefused naming the limit)."""
    plan_layers(
        functions.get(function.name),
        f"{function.layer_arn(layer_name)}:0",
        unzipped,
        subscribed=True,
    )


def consumers_of(
    layer_name: str, catalog: FunctionCatalog, among: Iterable[str] | None = None
) -> list[FunctionVersion]:
    """Functions whose $LATEST uses some version of the layer (published versions are frozen)."""
    wanted = set(among) if among is not None else None
    return [
        c
        for c in catalog.all_versions()
        if c.version == LATEST and c.uses(layer_name) and (wanted is None or c.name in wanted)
    ]


@dataclass
class Rollback:
    layer_name: str
    version: LayerVersion
    consumers: list[Repointed]
    pointer: str | None = None

    def to_dict(self) -> dict:
        return {
            "layer": self.layer_name,
            "version": self.version.number,
            "version_arn": self.version.arn,
            "pointer": self.pointer,
            "consumers": [c.to_dict() for c in self.consumers],
        }


def rollback(
    layer_name: str,
    number: int,
    *,
    layers: LayerStore,
    catalog: FunctionCatalog,
    functions: Functions,
    pointer: Pointer | None,
    consumers: Sequence[str] | None = None,
) -> Rollback:
    """Point the consumers (default: every function whose $LATEST uses the layer) and the pointer
    at an existing version. Everything is checked before the first change."""
    version = require_version(layer_name, number, layers, "roll back to")
    if consumers is None:
        targets = consumers_of(layer_name, catalog)
    else:
        users = lambda: [c.name for c in consumers_of(layer_name, catalog)]  # noqa: E731
        targets = [require_function(name, catalog, users) for name in dict.fromkeys(consumers)]
    for function in targets:
        check_consumer(function, version, functions)
    done = [repoint(f.name, version.arn, functions) for f in targets]
    if pointer is not None:
        pointer.put(layer_name, version.arn)
    return Rollback(layer_name, version, done, version.arn if pointer is not None else None)


def team_rollback(
    layer_name: str,
    number: int,
    team: Team,
    *,
    layers: LayerStore,
    catalog: FunctionCatalog,
    functions: Functions,
    pointer: Pointer | None,
) -> Rollback:
    """The operators' rollback through the maintenance function: only a layer under the team's
    prefix, and only the team's consumers whose $LATEST uses it now, are re-pointed."""
    team.require_own(layer_name, "roll back")
    users = [f.name for f in consumers_of(layer_name, catalog, among=team.consumers)]
    return rollback(
        layer_name,
        number,
        layers=layers,
        catalog=catalog,
        functions=functions,
        pointer=pointer,
        consumers=users,
    )


# -- sharing ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Grant:
    """lambda:GetLayerVersion for one account, or for every account of an organization
    (principal "*" narrowed by OrganizationId; AddLayerVersionPermission,
    https://docs.aws.amazon.com/lambda/latest/api/API_AddLayerVersionPermission.html)."""

    account: str = ""
    organization: str = ""

    def __post_init__(self) -> None:
        if bool(self.account) == bool(self.organization):
            raise InputError("Share with one account id or one organization id (o-…).")
        if self.account and not ACCOUNT_ID.match(self.account):
            raise InputError(f"{self.account!r} is not an AWS account id (12 digits).")
        if self.organization and not ORGANIZATION_ID.match(self.organization):
            raise InputError(
                f"{self.organization!r} is not an organization id "
                "(o- and 10 to 32 lower-case letters or digits)."
            )

    @property
    def sid(self) -> str:
        """One statement per grantee, so unshare finds it from the grantee alone."""
        return SID_PREFIX + (self.account or self.organization)

    @property
    def principal(self) -> str:
        return self.account or "*"

    def __str__(self) -> str:
        return f"account {self.account}" if self.account else f"organization {self.organization}"


def grantees(statements: Iterable[dict]) -> list[str]:
    """Who a version's policy lets in, in words: AWS shows account principals as
    {"AWS": "arn:aws:iam::ID:root"} and organizations as a aws:PrincipalOrgID condition; moto
    stores the request's fields (Principal "ID", OrganizationId) as they came."""
    found = []
    for statement in statements:
        principal = statement.get("Principal", "")
        if isinstance(principal, dict):
            principal = principal.get("AWS", "")
        account = str(principal).removeprefix("arn:aws:iam::").removesuffix(":root")
        condition = statement.get("Condition", {}).get("StringEquals", {})
        organization = condition.get("aws:PrincipalOrgID") or statement.get("OrganizationId", "")
        who = (
            f"organization {organization}"
            if organization
            else "every AWS account"
            if account == "*"
            else f"account {account}"
        )
        found.append(f"{who} ({statement.get('Sid', 'no sid')})")
    return found


def share(layer_name: str, number: int, grant: Grant, layers: LayerStore) -> str:
    """ "granted", or "unchanged" when our statement for this grantee exists already."""
    return apply_sharing(layer_name, number, [grant], layers)[str(grant)]


def unshare(layer_name: str, number: int, grant: Grant, layers: LayerStore) -> str:
    version = require_version(layer_name, number, layers, "unshare")
    statements = layers.statements(layer_name, version.number)
    if not any(s.get("Sid") == grant.sid for s in statements):
        raise InputError(
            f"Version {number} of layer {layer_name} is not shared with {grant}: nothing to revoke. "
            f"It is shared with: {', '.join(grantees(statements)) or 'nobody'}."
        )
    layers.revoke(layer_name, version.number, grant.sid)
    return "revoked"


def apply_sharing(
    layer_name: str, number: int, grants: Iterable[Grant], layers: LayerStore
) -> dict[str, str]:
    """The stack's (or team's) sharing settings on a published version; idempotent: each grant
    is "granted" or "unchanged". One version check and one policy read for all of them."""
    grants = list(grants)
    version = require_version(layer_name, number, layers, "share")
    added = set(ensure_shared(version, grants, layers))
    return {str(g): "granted" if str(g) in added else "unchanged" for g in grants}


def ensure_shared(version: LayerVersion, grants: Iterable[Grant], layers: LayerStore) -> list[str]:
    """The grants a version lacks, added; one policy read (the sweep's catch-up, and the core
    of apply_sharing, which checks that the version exists first)."""
    present = {s.get("Sid") for s in layers.statements(version.layer_name, version.number)}
    missing = [g for g in grants if g.sid not in present]
    for g in missing:
        layers.grant(version.layer_name, version.number, g.sid, g.principal, g.organization)
    return [str(g) for g in missing]


def grants_from(accounts: Iterable[str], *organizations: str) -> list[Grant]:
    found = [Grant(account=a) for a in dict.fromkeys(accounts) if a]
    return found + [Grant(organization=o) for o in dict.fromkeys(organizations) if o]


def team_grants(team: Team | None, accounts: Iterable[str], organization: str) -> list[Grant]:
    """The stack's grantees (ShareAccounts, ShareOrganizationId) and the owning team's."""
    if team is None:
        return grants_from(accounts, organization)
    return grants_from([*accounts, *team.share_accounts], organization, team.share_organization)
