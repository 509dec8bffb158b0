"""attach: replace only our layer's old version, keep the rest, respect Lambda's limits,
and converge on the newest upload whatever order builds finish in."""

from __future__ import annotations

import pytest

from layer_builder import limits
from layer_builder.service.attach import (
    AttachedLayer,
    ConcurrentUpdate,
    ConsumerRefused,
    FunctionState,
    attach,
    plan_layers,
    unversioned,
)

LAYER = "arn:aws:lambda:us-east-1:123456789012:layer:emr-launcher"
OTHER = "arn:aws:lambda:us-east-1:123456789012:layer:team-utils:3"


def state(*arns: str, code_size: int = 1000, sizes: int = 100, name: str = "fn") -> FunctionState:
    return FunctionState(name, tuple(AttachedLayer(a, sizes) for a in arns), code_size, "rev-1")


class FakeFunctions:
    def __init__(self, layers: dict[str, list[str]], conflicts: int = 0) -> None:
        self.layers = layers
        self.conflicts = conflicts
        self.updates: list[tuple[str, list[str]]] = []

    def get(self, name: str) -> FunctionState:
        return state(*self.layers[name], name=name)

    def set_layers(self, current: FunctionState, layers: list[str]) -> None:
        if self.conflicts:
            self.conflicts -= 1
            raise ConcurrentUpdate(current.name)
        self.layers[current.name] = layers
        self.updates.append((current.name, layers))


class FakeBook:
    def __init__(self) -> None:
        self.order = ""
        self.arn: str | None = None

    def claim(self, layer_name: str, order: str, version_arn: str) -> bool:
        if order < self.order:
            return False
        self.order, self.arn = order, version_arn
        return True

    def newest(self, layer_name: str) -> str | None:
        return self.arn


class FakePointer:
    def __init__(self) -> None:
        self.value: str | None = None
        self.writes = 0

    def get(self, layer_name: str) -> str | None:
        return self.value

    def put(self, layer_name: str, version_arn: str) -> None:
        self.value = version_arn
        self.writes += 1


def test_unversioned():
    assert unversioned(f"{LAYER}:7") == LAYER


def test_plan_replaces_our_old_version_in_place_and_keeps_the_others():
    planned = plan_layers(state(OTHER, f"{LAYER}:1", "arn:x:layer:z:2"), f"{LAYER}:2", 10)
    assert planned == [OTHER, f"{LAYER}:2", "arn:x:layer:z:2"]


def test_plan_appends_when_the_function_does_not_use_the_layer_yet():
    assert plan_layers(state(OTHER), f"{LAYER}:1", 10) == [OTHER, f"{LAYER}:1"]


def test_plan_refuses_a_sixth_layer_naming_the_limit():
    five = [f"arn:x:layer:l{i}:1" for i in range(limits.MAX_LAYERS_PER_FUNCTION)]
    with pytest.raises(ConsumerRefused, match="allows 5"):
        plan_layers(state(*five), f"{LAYER}:1", 10)


def test_plan_refuses_when_code_and_layers_exceed_the_unzipped_limit():
    with pytest.raises(ConsumerRefused, match="262,144,000"):
        plan_layers(state(OTHER, code_size=10_000_000, sizes=2_000_000), f"{LAYER}:1",
                    limits.MAX_UNZIPPED_BYTES - 11_000_000)


def test_attach_updates_every_consumer_and_the_pointer():
    functions = FakeFunctions({"a": [OTHER], "b": [f"{LAYER}:1"]})
    pointer = FakePointer()
    status, results = attach("emr-launcher", "2026|01", f"{LAYER}:2", 10, ("a", "b"), functions,
                             FakeBook(), pointer)
    assert status == "current"
    assert functions.layers == {"a": [OTHER, f"{LAYER}:2"], "b": [f"{LAYER}:2"]}
    assert [r.status for r in results] == ["attached", "attached"]
    assert pointer.value == f"{LAYER}:2"


def test_an_older_upload_finishing_later_changes_nothing():
    functions = FakeFunctions({"a": [f"{LAYER}:5"]})
    book, pointer = FakeBook(), FakePointer()
    attach("emr-launcher", "2026-11-27T10:00:02|02", f"{LAYER}:5", 10, ("a",), functions, book, pointer)
    status, results = attach("emr-launcher", "2026-11-27T10:00:01|01", f"{LAYER}:4", 10, ("a",),
                             functions, book, pointer)
    assert status == "superseded" and results == []
    assert functions.layers["a"] == [f"{LAYER}:5"]
    assert pointer.value == f"{LAYER}:5"


def test_a_build_that_lost_the_race_mid_attach_converges_on_the_newest():
    """Our claim succeeded, then a newer upload claimed before we attached: apply the newest."""
    functions = FakeFunctions({"a": []})
    book, pointer = FakeBook(), FakePointer()

    class Racing(FakeBook):
        def claim(self, layer_name, order, version_arn):
            ok = book.claim(layer_name, order, version_arn)
            book.claim(layer_name, "9999", f"{LAYER}:9")  # newer upload lands right after
            return ok

        def newest(self, layer_name):
            return book.newest(layer_name)

    status, _ = attach("emr-launcher", "2026", f"{LAYER}:8", 10, ("a",), functions, Racing(), pointer)
    assert status == "superseded"
    assert functions.layers["a"] == [f"{LAYER}:9"]
    assert pointer.value == f"{LAYER}:9"


def test_conflicting_updates_are_planned_again_then_applied():
    functions = FakeFunctions({"a": [OTHER]}, conflicts=2)
    status, results = attach("l", "1", f"{LAYER}:1", 10, ("a",), functions, FakeBook(), FakePointer())
    assert results[0].status == "attached"
    assert functions.layers["a"] == [OTHER, f"{LAYER}:1"]


def test_a_consumer_over_the_limit_is_refused_and_the_others_proceed():
    five = [f"arn:x:layer:l{i}:1" for i in range(5)]
    functions = FakeFunctions({"full": five, "ok": []})
    _, results = attach("l", "1", f"{LAYER}:1", 10, ("full", "ok"), functions, FakeBook(), FakePointer())
    by_name = {r.function: r for r in results}
    assert by_name["full"].status == "refused" and "allows 5" in by_name["full"].reason
    assert functions.layers["full"] == five
    assert by_name["ok"].status == "attached"


def test_an_unsubscribed_layer_only_replaces_its_own_older_version():
    """An upload can name any layer: it must not land in functions that do not use it."""
    functions = FakeFunctions({"uses": [OTHER, f"{LAYER}:1"], "other": [OTHER]})
    _, results = attach("emr-launcher", "1", f"{LAYER}:2", 10, ("uses", "other"), functions,
                        FakeBook(), FakePointer(), subscribed=False)
    by_name = {r.function: r for r in results}
    assert functions.layers == {"uses": [OTHER, f"{LAYER}:2"], "other": [OTHER]}
    assert by_name["other"].status == "not a consumer"
    assert by_name["uses"].status == "attached"


def test_already_attached_is_unchanged_and_writes_nothing():
    functions = FakeFunctions({"a": [f"{LAYER}:3"]})
    pointer = FakePointer()
    pointer.value = f"{LAYER}:3"
    _, results = attach("l", "1", f"{LAYER}:3", 10, ("a",), functions, FakeBook(), pointer)
    assert results[0].status == "unchanged"
    assert functions.updates == [] and pointer.writes == 0
