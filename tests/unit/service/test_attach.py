"""attach: replace only the team's layer in the team's consumers, keep the rest, respect Lambda's
limits, give each consumer its own target, and converge on the newest upload whatever order
builds finish (or fail) in."""

from __future__ import annotations

import time

import pytest

from layer_builder import limits
from layer_builder.errors import OutOfTimeError, TeamError, TransientError
from layer_builder.service.attach import (
    AttachedLayer,
    ConcurrentUpdate,
    ConsumerRefused,
    FunctionState,
    Release,
    attach,
    book_key,
    plan_layers,
    route,
    unversioned,
)
from layer_builder.service.settings import Team

LAYER = "arn:aws:lambda:us-east-1:123456789012:layer:s-data-emr-launcher"
ARM = "arn:aws:lambda:us-east-1:123456789012:layer:s-data-emr-launcher-py312-arm64"
OTHER = "arn:aws:lambda:us-east-1:123456789012:layer:team-utils:3"
TEAM = Team("data", "s-data-", consumers=("a", "b", "full", "ok", "uses", "other", "shared"))


def state(*arns: str, code_size: int = 1000, sizes: int = 100, name: str = "fn",
          runtime: str = "python3.13", arch: str = "x86_64") -> FunctionState:
    return FunctionState(name, tuple(AttachedLayer(a, sizes) for a in arns), code_size, "rev-1",
                         runtime, (arch,))


def release(version_arn: str = f"{LAYER}:2", order: str = "1", subscribed: bool = True,
            target: str = "python3.13/x86_64", family: frozenset[str] = frozenset()) -> Release:
    name = unversioned(version_arn).rsplit(":", 1)[1]
    return Release(name, version_arn, 10, order, target, subscribed, family)


class FakeFunctions:
    def __init__(self, layers: dict[str, list[str]], conflicts: int = 0,
                 runtimes: dict[str, tuple[str, str]] | None = None) -> None:
        self.layers = layers
        self.conflicts = conflicts
        self.runtimes = runtimes or {}
        self.updates: list[tuple[str, list[str]]] = []

    def get(self, name: str) -> FunctionState:
        runtime, arch = self.runtimes.get(name, ("python3.13", "x86_64"))
        return state(*self.layers[name], name=name, runtime=runtime, arch=arch)

    def set_layers(self, current: FunctionState, layers: list[str], deadline: float | None) -> None:
        if self.conflicts:
            self.conflicts -= 1
            raise ConcurrentUpdate(current.name)
        self.layers[current.name] = layers
        self.updates.append((current.name, layers))


class FakeBook:
    def __init__(self) -> None:
        self.entries: dict[str, tuple[str, str]] = {}

    def claim(self, key: str, order: str, version_arn: str) -> bool:
        if key in self.entries and order < self.entries[key][0]:
            return False
        self.entries[key] = (order, version_arn)
        return True

    def newest(self, key: str) -> str | None:
        return self.entries[key][1] if key in self.entries else None


class FakePointer:
    def __init__(self) -> None:
        self.value: str | None = None
        self.writes = 0
        self.failures = 0  # the next reads that fail (a throttle after retries)

    def get(self, layer_name: str) -> str | None:
        if self.failures:
            self.failures -= 1
            raise TransientError("GetParameter failed: ThrottlingException")
        return self.value

    def put(self, layer_name: str, version_arn: str) -> None:
        self.value = version_arn
        self.writes += 1


def run(rel: Release, consumers, functions, book=None, pointer=None, team=TEAM, deadline=None):
    return attach(rel, consumers, team, functions, book or FakeBook(), pointer or FakePointer(),
                  deadline)


def test_unversioned():
    assert unversioned(f"{LAYER}:7") == LAYER


def test_plan_replaces_our_old_version_in_place_and_keeps_the_others():
    planned = plan_layers(state(OTHER, f"{LAYER}:1", "arn:x:layer:z:2"), f"{LAYER}:2", 10)
    assert planned == [OTHER, f"{LAYER}:2", "arn:x:layer:z:2"]


def test_plan_appends_when_the_function_does_not_use_the_layer_yet():
    assert plan_layers(state(OTHER), f"{LAYER}:1", 10) == [OTHER, f"{LAYER}:1"]


def test_plan_replaces_the_projects_layer_of_another_target_once():
    """A function that moved to arm64 takes the arm64 layer instead of keeping the x86_64 one."""
    planned = plan_layers(state(OTHER, f"{LAYER}:4"), f"{ARM}:1", 10, family={LAYER})
    assert planned == [OTHER, f"{ARM}:1"]


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
    status, results = run(release(), ("a", "b"), functions, pointer=pointer)
    assert status == "current"
    assert functions.layers == {"a": [OTHER, f"{LAYER}:2"], "b": [f"{LAYER}:2"]}
    assert [(r.status, r.version_arn) for r in results] == [("attached", f"{LAYER}:2")] * 2
    assert pointer.value == f"{LAYER}:2"


def test_functions_outside_the_teams_consumers_are_never_touched():
    functions = FakeFunctions({"a": [], "ops-fn": [f"{LAYER}:1"]})
    _, results = run(release(), ("a", "ops-fn"), functions)
    assert [r.function for r in results] == ["a"]
    assert functions.layers["ops-fn"] == [f"{LAYER}:1"]


def test_another_teams_layer_is_refused_before_anything_changes():
    functions, book, pointer = FakeFunctions({"a": []}), FakeBook(), FakePointer()
    foreign = "arn:aws:lambda:us-east-1:123456789012:layer:s-ops-emr-launcher:1"
    with pytest.raises(TeamError, match="not a layer of team 'data'"):
        run(release(foreign), ("a",), functions, book, pointer)
    assert functions.updates == [] and pointer.writes == 0
    assert book.entries == {}  # not even claimed in the order book


def test_a_forged_order_book_entry_naming_another_teams_layer_changes_nothing():
    """Defence in depth: even a book entry pointing elsewhere is never attached."""
    functions, book, pointer = FakeFunctions({"a": []}), FakeBook(), FakePointer()
    book.entries[book_key(TEAM, "s-data-emr-launcher")] = ("9999", "arn:x:layer:s-ops-evil:1")
    with pytest.raises(TeamError):
        run(release(), ("a",), functions, book, pointer)
    assert functions.updates == [] and pointer.writes == 0


def test_a_forged_order_book_entry_never_reaches_the_pointer_either():
    """With no consumer to attach to, the pointer is the only thing the entry could move."""
    book, pointer = FakeBook(), FakePointer()
    book.entries[book_key(TEAM, "s-data-emr-launcher")] = ("9999", "arn:x:layer:s-ops-evil:1")
    with pytest.raises(TeamError):
        run(release(), (), FakeFunctions({}), book, pointer)
    assert pointer.writes == 0


def test_an_older_upload_finishing_later_changes_nothing():
    functions = FakeFunctions({"a": [f"{LAYER}:5"]})
    book, pointer = FakeBook(), FakePointer()
    run(release(f"{LAYER}:5", "2026-11-27T10:00:02|02"), ("a",), functions, book, pointer)
    writes = (len(functions.updates), pointer.writes)
    status, results = run(release(f"{LAYER}:4", "2026-11-27T10:00:01|01"), ("a",), functions,
                          book, pointer)
    assert status == "superseded"
    assert [(r.status, r.version_arn) for r in results] == [("unchanged", f"{LAYER}:5")]
    assert functions.layers["a"] == [f"{LAYER}:5"]
    assert pointer.value == f"{LAYER}:5"
    assert (len(functions.updates), pointer.writes) == writes


def test_a_build_that_lost_the_race_mid_attach_converges_on_the_newest():
    """Our claim succeeded, then a newer upload claimed before we attached: apply the newest."""
    functions, book, pointer = FakeFunctions({"a": []}), FakeBook(), FakePointer()
    key = book_key(TEAM, "s-data-emr-launcher")
    real_claim = book.claim

    def claim_then_newer(k, order, version_arn):
        ok = real_claim(k, order, version_arn)
        real_claim(key, "9999", f"{LAYER}:9")  # a newer upload lands right after
        return ok

    book.claim = claim_then_newer
    status, _ = run(release(f"{LAYER}:8", "2026"), ("a",), functions, book, pointer)
    assert status == "superseded"
    assert functions.layers["a"] == [f"{LAYER}:9"]
    assert pointer.value == f"{LAYER}:9"


def test_the_book_is_read_again_right_before_each_update():
    """A newer upload claims between our plan and our update: we apply the newer one."""
    functions, book = FakeFunctions({"a": []}), FakeBook()
    key = book_key(TEAM, "s-data-emr-launcher")
    real_get = functions.get

    def get_then_newer(name):
        found = real_get(name)
        book.entries[key] = ("9999", f"{LAYER}:9")
        return found

    functions.get = get_then_newer
    run(release(f"{LAYER}:8", "2026"), ("a",), functions, book)
    assert functions.updates == [("a", [f"{LAYER}:9"])]


def test_a_retry_of_a_build_that_overwrote_a_newer_version_repairs_it():
    """Issue 9: build A (older) is in round 1 when B (newer) finishes; A overwrites the consumer,
    then fails before round 2. A's retry cannot claim the book (B is newer) and must still put the
    consumer and the pointer back on B, not return "superseded" with A left in place."""
    functions, book, pointer = FakeFunctions({"a": []}), FakeBook(), FakePointer()
    a, b = release(f"{LAYER}:1", "2026|01"), release(f"{LAYER}:2", "2026|02")
    real_set = functions.set_layers
    fired = []

    def b_finishes_first(current, layers, deadline):
        if layers == [f"{LAYER}:1"] and not fired:
            fired.append(run(b, ("a",), functions, book, pointer))  # B: claim, attach, pointer
            pointer.failures = 1  # then A's next AWS call fails for good (a transient error)
        real_set(current, layers, deadline)

    functions.set_layers = b_finishes_first
    with pytest.raises(TransientError):
        run(a, ("a",), functions, book, pointer)
    assert fired[0][0] == "current"
    assert functions.layers["a"] == [f"{LAYER}:1"] and pointer.value == f"{LAYER}:2"  # stale

    status, results = run(a, ("a",), functions, book, pointer)  # Lambda retries A

    assert status == "superseded"
    assert functions.layers["a"] == [f"{LAYER}:2"]
    assert pointer.value == f"{LAYER}:2"
    assert [(r.status, r.version_arn) for r in results] == [("attached", f"{LAYER}:2")]


def test_no_update_starts_after_the_deadline():
    functions, pointer = FakeFunctions({"a": []}), FakePointer()
    with pytest.raises(OutOfTimeError, match="the retry attaches it"):
        run(release(), ("a",), functions, pointer=pointer, deadline=time.monotonic() - 1)
    assert functions.updates == [] and pointer.writes == 0


def test_conflicting_updates_are_planned_again_then_applied():
    functions = FakeFunctions({"a": [OTHER]}, conflicts=2)
    _, results = run(release(f"{LAYER}:1"), ("a",), functions)
    assert results[0].status == "attached"
    assert functions.layers["a"] == [OTHER, f"{LAYER}:1"]


def test_a_consumer_over_the_limit_is_refused_and_the_others_proceed():
    five = [f"arn:x:layer:l{i}:1" for i in range(5)]
    functions = FakeFunctions({"full": five, "ok": []})
    _, results = run(release(f"{LAYER}:1"), ("full", "ok"), functions)
    by_name = {r.function: r for r in results}
    assert by_name["full"].status == "refused" and "allows 5" in by_name["full"].reason
    assert functions.layers["full"] == five
    assert by_name["ok"].status == "attached"


def test_an_unsubscribed_layer_only_replaces_its_own_older_version():
    """An upload can name any layer of its team: it must not land in functions that do not use it."""
    functions = FakeFunctions({"uses": [OTHER, f"{LAYER}:1"], "other": [OTHER]})
    _, results = run(release(subscribed=False), ("uses", "other"), functions)
    by_name = {r.function: r for r in results}
    assert functions.layers == {"uses": [OTHER, f"{LAYER}:2"], "other": [OTHER]}
    assert by_name["other"].status == "not a consumer"
    assert by_name["uses"].status == "attached"


def test_already_attached_is_unchanged_and_writes_nothing():
    functions = FakeFunctions({"a": [f"{LAYER}:3"]})
    pointer = FakePointer()
    pointer.value = f"{LAYER}:3"
    _, results = run(release(f"{LAYER}:3"), ("a",), functions, pointer=pointer)
    assert results[0].status == "unchanged"
    assert functions.updates == [] and pointer.writes == 0


def test_route_gives_each_consumer_its_own_target_and_reports_the_rest():
    functions = FakeFunctions(
        {"a": [], "b": [], "old": [f"{LAYER}:1"], "other": [OTHER]},
        runtimes={"b": ("python3.12", "arm64"), "old": ("python3.11", "x86_64"),
                  "other": ("python3.10", "x86_64")})
    groups, alone = route(["a", "b", "old", "other"], functions,
                          ["python3.13/x86_64", "python3.12/arm64"],
                          lambda s: any(unversioned(x.arn) == LAYER for x in s.layers),
                          subscribed=False)
    assert groups == {"python3.13/x86_64": ["a"], "python3.12/arm64": ["b"]}
    by_name = {a.function: a for a in alone}
    assert by_name["old"].status == "no matching target"
    assert "runs python3.11/x86_64" in by_name["old"].reason
    assert by_name["other"].status == "not a consumer"
