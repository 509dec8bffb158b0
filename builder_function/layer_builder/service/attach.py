"""Attach step: point the team's consumer functions (and the SSM pointer) at the newest version.

- Only the team's own consumers are touched, and in each only this project's layer is replaced
  (any of its targets' layers, so a function moving to arm64 does not keep its x86_64 copy);
  the functions' other layers stay, in order.
- Each consumer gets the version built for its own runtime and architecture; one with no
  matching target is reported and left alone.
- Lambda's limits are checked first: 5 layers, and 250 MB unzipped for code plus layers (Lambda
  only reports zipped sizes for the others, so this is a lower bound; Lambda has the last word).
- S3 events arrive unordered and builds finish in any order. An order book (a conditional write)
  records the newest upload per layer. Every build, also one that lost the claim, applies what
  the book holds *now*, re-reads it right before each update, and goes round again when it moved;
  so whichever build writes last writes the newest, and a build that failed after overwriting a
  consumer with an older version repairs it on its retry.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol

from .. import limits
from ..errors import InputError, OutOfTimeError, TeamError, TransientError
from .settings import Team

CONVERGE_ROUNDS = 5
CONFLICT_ATTEMPTS = 8


class ConsumerRefused(InputError):
    kind = "consumer_refused"


class ConcurrentUpdate(Exception):
    """The function changed under us (revision or an update in progress): plan again."""


@dataclass(frozen=True)
class AttachedLayer:
    arn: str
    code_size: int


@dataclass(frozen=True)
class FunctionState:
    name: str
    layers: tuple[AttachedLayer, ...]
    code_size: int
    revision_id: str
    runtime: str = ""
    architectures: tuple[str, ...] = ("x86_64",)

    @property
    def target(self) -> str:
        """`python3.13/x86_64`: which of an upload's targets this function can load."""
        return f"{self.runtime}/{(self.architectures or ('x86_64',))[0]}"


class Functions(Protocol):
    def get(self, name: str) -> FunctionState: ...

    def set_layers(
        self, state: FunctionState, layers: list[str], deadline: float | None = None
    ) -> None:
        """Update and wait (until the deadline at most) until the update finished; raises
        ConcurrentUpdate when the function changed meanwhile."""


class OrderBook(Protocol):
    def claim(self, key: str, order: str, version_arn: str) -> bool:
        """Record this upload as the newest of `key` unless a newer one is recorded."""

    def newest(self, key: str) -> str | None:
        """The version ARN of the newest recorded upload."""


class Pointer(Protocol):
    def get(self, layer_name: str) -> str | None: ...

    def put(self, layer_name: str, version_arn: str) -> None: ...


@dataclass
class Attachment:
    function: str
    status: str  # attached | unchanged | refused | not a consumer | no matching target
    layers: list[str] = field(default_factory=list)
    reason: str = ""
    target: str = ""
    #: The version of this project's layer the function holds afterwards.
    version_arn: str = ""


def unversioned(arn: str) -> str:
    """arn:aws:lambda:region:acct:layer:name:7 → arn:aws:lambda:region:acct:layer:name"""
    return arn.rsplit(":", 1)[0]


def book_key(team: Team, layer_name: str) -> str:
    return f"{team.name}/{layer_name}"


def plan_layers(
    state: FunctionState,
    version_arn: str,
    unzipped: int,
    subscribed: bool = True,
    family: Iterable[str] = (),
) -> list[str] | None:
    """The function's new layer list; None when it neither uses nor subscribes to the layer;
    ConsumerRefused naming the limit at fault. `family`: unversioned ARNs of the project's other
    targets' layers, replaced as well."""
    ours = {unversioned(version_arn), *family}
    current = [item.arn for item in state.layers]
    if any(unversioned(arn) in ours for arn in current):
        planned: list[str] = []
        for arn in current:
            if unversioned(arn) not in ours:
                planned.append(arn)
            elif version_arn not in planned:
                planned.append(version_arn)
    elif subscribed:
        planned = [*current, version_arn]
    else:
        return None
    if len(planned) > limits.MAX_LAYERS_PER_FUNCTION:
        raise ConsumerRefused(
            f"Function {state.name} already uses {len(current)} layers ({', '.join(current)}); Lambda "
            f"allows {limits.MAX_LAYERS_PER_FUNCTION}. Remove one, or merge layers, then rebuild."
        )
    others = sum(item.code_size for item in state.layers if unversioned(item.arn) not in ours)
    floor = unzipped + others + state.code_size
    if floor > limits.MAX_UNZIPPED_BYTES:
        raise ConsumerRefused(
            f"Function {state.name} would exceed Lambda's {limits.MAX_UNZIPPED_BYTES:,} bytes for code "
            f"and layers: this layer unzips to {unzipped:,} bytes and the rest is at least "
            f"{others + state.code_size:,}. Slim the layer or the function."
        )
    return planned


def _in_time(deadline: float | None, function: str) -> None:
    if deadline is not None and time.monotonic() >= deadline:
        raise OutOfTimeError(
            f"No time left to update {function}: the layer version is published; "
            "the retry attaches it."
        )


@dataclass(frozen=True)
class Release:
    """One target's version from this upload, and what attaching it needs."""

    layer_name: str
    version_arn: str
    unzipped: int
    order: str
    target: str = ""
    subscribed: bool = True
    #: Unversioned ARNs of the project's layers for its other targets.
    family: frozenset[str] = frozenset()


@dataclass
class _Context:
    release: Release
    team: Team
    functions: Functions
    book: OrderBook
    deadline: float | None

    def newest(self) -> str:
        """The version to converge on; every value, the book's above all, is the team's own."""
        newest = (
            self.book.newest(book_key(self.team, self.release.layer_name))
            or self.release.version_arn
        )
        self.team.require_own(newest, "attach or point the pointer at")
        return newest


def _apply(function: str, ctx: _Context) -> Attachment:
    release = ctx.release
    for _ in range(CONFLICT_ATTEMPTS):
        _in_time(ctx.deadline, function)
        newest = ctx.newest()
        try:
            state = ctx.functions.get(function)
            current = [item.arn for item in state.layers]
            if newest in current:
                return Attachment(
                    function, "unchanged", current, target=release.target, version_arn=newest
                )
            # Another build's newer version was size-checked by that build.
            size = release.unzipped if newest == release.version_arn else 0
            planned = plan_layers(state, newest, size, release.subscribed, release.family)
            if planned is None:
                return Attachment(
                    function,
                    "not a consumer",
                    current,
                    target=release.target,
                    reason="it does not use this layer, which is not among the "
                    "team's subscribed_layers",
                )
            if ctx.newest() != newest:  # a newer upload claimed meanwhile: plan with it
                continue
            ctx.functions.set_layers(state, planned, ctx.deadline)
        except TeamError:
            raise
        except InputError as exc:  # over a limit, missing function, Lambda's own refusal
            return Attachment(function, "refused", reason=str(exc), target=release.target)
        except ConcurrentUpdate:
            continue
        return Attachment(function, "attached", planned, target=release.target, version_arn=newest)
    raise TransientError(
        f"Function {function} kept changing while the layer was attached: retrying."
    )


def attach(
    release: Release,
    consumers: Iterable[str],
    team: Team,
    functions: Functions,
    book: OrderBook,
    pointer: Pointer,
    deadline: float | None = None,
) -> tuple[str, list[Attachment]]:
    """Returns ("current" | "superseded", attachments).

    A superseded build (a newer upload was recorded) still converges the consumers and the
    pointer on the newest version: it may be the retry of a build that overwrote them."""
    team.require_own(release.layer_name, "attach")
    consumers = [c for c in consumers if c in team.consumers]
    ctx = _Context(release, team, functions, book, deadline)
    claimed = book.claim(book_key(team, release.layer_name), release.order, release.version_arn)
    results: dict[str, Attachment] = {}
    newest = ctx.newest()
    for _ in range(CONVERGE_ROUNDS):
        for function in consumers:
            results[function] = _apply(function, ctx)
        if pointer.get(release.layer_name) != newest:
            _in_time(deadline, f"the pointer of {release.layer_name}")
            pointer.put(release.layer_name, newest)
        latest = ctx.newest()
        if latest == newest:
            break
        newest = latest  # a newer upload landed during this round: apply it everywhere
    status = "current" if claimed and newest == release.version_arn else "superseded"
    return status, list(results.values())


def route(
    consumers: Iterable[str],
    functions: Functions,
    targets: Iterable[str],
    uses: Callable[[FunctionState], bool],
    subscribed: bool,
) -> tuple[dict[str, list[str]], list[Attachment]]:
    """Consumers grouped by the target matching their runtime and architecture, and the ones
    left alone (no matching target, or not found)."""
    groups: dict[str, list[str]] = {t: [] for t in targets}
    alone: list[Attachment] = []
    for function in consumers:
        try:
            state = functions.get(function)
        except TeamError:
            raise
        except InputError as exc:
            alone.append(Attachment(function, "refused", reason=str(exc)))
            continue
        if state.target in groups:
            groups[state.target].append(function)
        elif subscribed or uses(state):
            alone.append(
                Attachment(
                    function,
                    "no matching target",
                    [item.arn for item in state.layers],
                    reason=f"it runs {state.target}; this upload built {', '.join(groups)}. Add "
                    f"{state.target} to the project's targets (the stack must build it too).",
                    target=state.target,
                )
            )
        else:
            alone.append(
                Attachment(
                    function,
                    "not a consumer",
                    [item.arn for item in state.layers],
                    reason="it does not use this layer, which is not among the "
                    "team's subscribed_layers",
                )
            )
    return groups, alone
