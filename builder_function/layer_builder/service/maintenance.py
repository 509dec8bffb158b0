"""The maintenance function's work (builder_function/maintenance.py is its handler).

- `{"action": "sweep"}` (the template's daily schedule sends exactly this): KEEP_VERSIONS for
  every layer under LAYER_NAME_PREFIX, with prune's rule (lifecycle.apply_retention): never a
  version that a function configuration uses or that the SSM pointer names. Then the stack's and
  the owning team's sharing on every version left, so a grantee added later reaches the versions
  published before (sharing is idempotent; nothing is ever revoked here: `unshare` does that).
- `{"action": "rollback", "team": T, "layer": NAME, "version": N}`: the operators' rollback. Only
  a layer under team T's prefix, only T's consumers whose $LATEST uses it, and its pointer.

Every check runs before the first change (lifecycle.rollback); a refusal is an InputError.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, RootModel, ValidationError

from ..limits import LAYER_NAME_PATTERN, MAX_LAYER_NAME_LENGTH
from . import lifecycle
from .attach import Functions, Pointer
from .settings import TEAM_NAME, MaintenanceSettings


class SweepRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    action: Literal["sweep"]


class RollbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    action: Literal["rollback"]
    team: Annotated[str, Field(pattern=f"^{TEAM_NAME.pattern}$")]
    layer: Annotated[
        str, Field(pattern=f"^{LAYER_NAME_PATTERN}$", max_length=MAX_LAYER_NAME_LENGTH)
    ]
    version: Annotated[int, Field(gt=0)]


class Request(RootModel[Annotated[SweepRequest | RollbackRequest, Field(discriminator="action")]]):
    """What the function accepts; Powertools' parse() validates an event against it (`.root`)."""


EXPECTED = (
    '{"action": "sweep"}, or {"action": "rollback", "team": TEAM, "layer": LAYER, '
    '"version": N} (events/maintenance-*.json)'
)


def refusal(exc: Exception) -> str:
    """One line naming each field at fault (pydantic's own text is a multi-line table)."""
    if not isinstance(exc, ValidationError):
        return str(exc)
    problems = "; ".join(
        f"{'.'.join(map(str, e['loc'])) or 'event'}: {e['msg']}"
        for e in exc.errors(include_url=False)
    )
    return f"Not a maintenance event ({problems}). Send {EXPECTED}."


@dataclass(frozen=True)
class Stores:
    """lifecycle.py's views of the account."""

    layers: lifecycle.LayerStore
    catalog: lifecycle.FunctionCatalog
    functions: Functions
    pointer: Pointer

    @classmethod
    def create(cls, settings: MaintenanceSettings) -> Stores:
        """boto3 adapters from the standard AWS environment (AWS_ENDPOINT_URL included)."""
        import boto3  # here: the domain above is tested without AWS

        from .aws import RETRY_CONFIG, LambdaFunctions, SsmPointer
        from .aws_lifecycle import LambdaFunctionCatalog, LambdaLayerStore

        session = boto3.session.Session()
        lam = session.client("lambda", config=RETRY_CONFIG)
        ssm = session.client("ssm", config=RETRY_CONFIG)
        return cls(
            LambdaLayerStore(lam),
            LambdaFunctionCatalog(lam),
            LambdaFunctions(lam),
            SsmPointer(ssm, settings.pointer_parameter_prefix),
        )


def run(
    request: SweepRequest | RollbackRequest,
    settings: MaintenanceSettings,
    stores: Stores,
    now: datetime,
) -> dict[str, Any]:
    if isinstance(request, RollbackRequest):
        return rollback(request, settings, stores)
    return sweep(settings, stores, now)


def sweep(settings: MaintenanceSettings, stores: Stores, now: datetime) -> dict[str, Any]:
    results = lifecycle.sweep(
        settings.layer_name_prefix,
        settings.keep_versions,
        layers=stores.layers,
        catalog=stores.catalog,
        pointer=stores.pointer,
        now=now,
    )
    deleted, shared = {}, {}
    for name, decisions in results.items():
        gone = [d.version.number for d in decisions if d.action == "deleted"]
        if gone:
            deleted[name] = gone
        grants = lifecycle.team_grants(
            settings.owner(name), settings.share_accounts, settings.share_organization
        )
        for d in (d for d in decisions if grants and d.action != "deleted"):
            added = lifecycle.ensure_shared(d.version, grants, stores.layers)
            if added:
                shared[d.version.arn] = added
    return {
        "status": "done",
        "action": "sweep",
        "keep_versions": settings.keep_versions,
        "layers": sorted(results),
        "deleted": deleted,
        "shared": shared,
    }


def rollback(
    request: RollbackRequest, settings: MaintenanceSettings, stores: Stores
) -> dict[str, Any]:
    team = settings.team(request.team)
    done = lifecycle.team_rollback(
        request.layer,
        request.version,
        team,
        layers=stores.layers,
        catalog=stores.catalog,
        functions=stores.functions,
        pointer=stores.pointer,
    )
    return {"status": "done", "action": "rollback", "team": team.name, **done.to_dict()}
