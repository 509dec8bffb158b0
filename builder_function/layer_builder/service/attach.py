"""Attach step: point the consumer functions (and the SSM pointer) at the newest good version.

- Only the same layer's older version is replaced; the functions' other layers stay, in order.
- Lambda's limits are checked first: 5 layers, and 250 MB unzipped for code plus layers (Lambda
  only reports zipped sizes for the others, so this is a lower bound; Lambda has the last word).
- S3 events arrive unordered and builds finish in any order. An order book (a conditional write)
  records the newest upload per layer; every writer applies whatever the book holds *now* and
  re-reads it afterwards, so the last state always reflects the newest upload.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from .. import limits
from ..errors import InputError, TransientError

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


class Functions(Protocol):
    def get(self, name: str) -> FunctionState: ...

    def set_layers(self, state: FunctionState, layers: list[str]) -> None:
        """Update and wait until the update finished; retries conflicts itself."""


class OrderBook(Protocol):
    def claim(self, layer_name: str, order: str, version_arn: str) -> bool:
        """Record this upload as the layer's newest unless a newer one is recorded."""

    def newest(self, layer_name: str) -> str | None:
        """The version ARN of the newest recorded upload."""


class Pointer(Protocol):
    def get(self, layer_name: str) -> str | None: ...

    def put(self, layer_name: str, version_arn: str) -> None: ...


@dataclass
class Attachment:
    function: str
    status: str  # attached | unchanged | refused
    layers: list[str] = field(default_factory=list)
    reason: str = ""


def unversioned(arn: str) -> str:
    """arn:aws:lambda:region:acct:layer:name:7 → arn:aws:lambda:region:acct:layer:name"""
    return arn.rsplit(":", 1)[0]


def plan_layers(state: FunctionState, version_arn: str, unzipped: int,
                subscribed: bool = True) -> list[str] | None:
    """The function's new layer list; None when it neither uses nor subscribes to the layer;
    ConsumerRefused naming the limit at fault."""
    layer = unversioned(version_arn)
    current = [item.arn for item in state.layers]
    if any(unversioned(arn) == layer for arn in current):
        planned = [version_arn if unversioned(arn) == layer else arn for arn in current]
    elif subscribed:
        planned = [*current, version_arn]
    else:
        return None
    if len(planned) > limits.MAX_LAYERS_PER_FUNCTION:
        raise ConsumerRefused(
            f"Function {state.name} already uses {len(current)} layers ({', '.join(current)}); Lambda "
            f"allows {limits.MAX_LAYERS_PER_FUNCTION}. Remove one, or merge layers, then rebuild.")
    others = sum(item.code_size for item in state.layers if unversioned(item.arn) != layer)
    floor = unzipped + others + state.code_size
    if floor > limits.MAX_UNZIPPED_BYTES:
        raise ConsumerRefused(
            f"Function {state.name} would exceed Lambda's {limits.MAX_UNZIPPED_BYTES:,} bytes for code "
            f"and layers: this layer unzips to {unzipped:,} bytes and the rest is at least "
            f"{others + state.code_size:,}. Slim the layer or the function.")
    return planned


def _apply(function: str, version_arn: str, functions: Functions, unzipped: int,
           subscribed: bool) -> Attachment:
    for _ in range(CONFLICT_ATTEMPTS):
        try:
            state = functions.get(function)
            if any(item.arn == version_arn for item in state.layers):
                return Attachment(function, "unchanged", [item.arn for item in state.layers])
            planned = plan_layers(state, version_arn, unzipped, subscribed)
            if planned is None:
                return Attachment(function, "not a consumer", [item.arn for item in state.layers],
                                  "it does not use this layer, which is not in CONSUMER_LAYERS")
            functions.set_layers(state, planned)
        except InputError as exc:  # over a limit, missing function, Lambda's own refusal
            return Attachment(function, "refused", reason=str(exc))
        except ConcurrentUpdate:
            continue
        return Attachment(function, "attached", planned)
    raise TransientError(f"Function {function} kept changing while the layer was attached: retrying.")


def attach(layer_name: str, order: str, version_arn: str, unzipped: int, consumers: tuple[str, ...],
           functions: Functions, book: OrderBook, pointer: Pointer,
           subscribed: bool = True) -> tuple[str, list[Attachment]]:
    """Returns ("current" | "superseded", attachments). Superseded builds change nothing.

    `subscribed`: the consumers take this layer even where they do not use it yet. Otherwise only
    an older version of it is replaced, so an upload cannot put a new layer into functions."""
    if not book.claim(layer_name, order, version_arn):
        return "superseded", []
    results: dict[str, Attachment] = {}
    applied = None
    for _ in range(CONVERGE_ROUNDS):
        newest = book.newest(layer_name) or version_arn
        if newest == applied:
            break
        # Another build's newer version was size-checked by that build.
        size = unzipped if newest == version_arn else 0
        for function in consumers:
            results[function] = _apply(function, newest, functions, size, subscribed)
        if pointer.get(layer_name) != newest:
            pointer.put(layer_name, newest)
        applied = newest
    status = "current" if applied == version_arn else "superseded"
    return status, list(results.values())
