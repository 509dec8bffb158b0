"""stripping: which shared objects are worth stripping, from what planning read of them."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest
import wheelhouse
from layer_builder import limits, stripping, wheel
from layer_builder.cache import BuildCache
from layer_builder.wheel import Member, Plan

from tests.unit.test_cache import KEY, Remote

MiB = 1024 * 1024


def member(dest: str, size: int, packed: int) -> Member:
    return Member(dest, 0, 8, packed, size, 0, "0" * 64, False)


def plan(*rows: tuple[str, int, int, int]) -> Plan:
    """(dest, file size, compressed size, tail) per shared object."""
    return Plan(
        name="lib",
        version="1",
        dist_info="lib-1.dist-info",
        members=[member(dest, size, packed) for dest, size, packed, _ in rows],
        tails={dest: tail for dest, _, _, tail in rows},
    )


def test_most_room_per_byte_deflated_again_comes_first() -> None:
    plans = [
        (
            plan(("big.so", 40 * MiB, 16 * MiB, 8 * MiB), ("debug.so", 3 * MiB, MiB, 2 * MiB)),
            Path("a.whl"),
        ),
        (plan(("tiny.so", MiB, MiB // 3, 8 * 1024)), Path("b.whl")),  # frees too little to count
    ]
    assert stripping.candidates(plans) == [(0, "debug.so"), (0, "big.so")]
    assert stripping.estimate(plans) == 10 * MiB


def test_members_planning_cannot_vouch_for_are_not_candidates() -> None:
    # The tail is read from the wheel's own header, so a bomb can claim to free almost all of a
    # huge member: it would be inflated whole, in memory, before the size check refused it.
    over = limits.MAX_STRIP_MEMBER_BYTES + 1
    packed_too_tight = 50 * MiB  # under the size cap, but 1000 times its compressed size
    plans = [
        (plan(("huge.so", over, over // 3, over - 4096)), Path("a.whl")),
        (plan(("bomb.so", packed_too_tight, packed_too_tight // 1000, 40 * MiB)), Path("b.whl")),
        (plan(("liar.so", MiB, MiB // 3, 2 * MiB)), Path("c.whl")),  # frees more than it holds
    ]
    assert stripping.candidates(plans) == []
    assert stripping.estimate(plans) == 0


@pytest.fixture(scope="module")
def built_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A wheel holding a real library with symbols (the same bytes for every container here)."""
    root = tmp_path_factory.mktemp("strip-wheel")
    library = wheelhouse.compile_shared_object(root / "cc", wheelhouse.MANY_C)
    if library is None:
        pytest.skip("no C compiler (cc): the test wheel needs a real shared object with symbols")
    made = wheelhouse.write_wheel(root, "many", "1.0", "cp313-cp313-linux_x86_64",
                                  wheelhouse.native_files("many", library))  # fmt: skip
    return made.path


def plans_in(cache: BuildCache, built: Path) -> list[tuple[Plan, Path]]:
    """The wheel as the install step leaves it: in the cache, named by its sha256."""
    path = cache.wheel_path(hashlib.sha256(built.read_bytes()).hexdigest())
    shutil.copyfile(built, path)
    return [(wheel.plan(path, python_version="3.13"), path)]


def shipped(outcome: stripping.Outcome) -> str:
    return {m.dest: m for m in outcome.plans[0][0].members}["many/libtiny.so"].sha256


def test_another_container_reuses_stripped_files_through_the_shared_level(
    tmp_path: Path, built_wheel: Path
) -> None:
    remote = Remote()
    first = BuildCache(tmp_path / "one", KEY, remote)
    done = stripping.strip(plans_in(first, built_wheel), None, first)
    assert (done.files, done.reused) == (1, 0)
    second = BuildCache(tmp_path / "two", KEY, remote)  # a fresh container: only the bucket
    again = stripping.strip(plans_in(second, built_wheel), None, second)
    assert (again.files, again.reused) == (1, 1)
    assert shipped(again) == shipped(done)
    # A blob altered in the bucket fails its sha256: made again, never shipped.
    for name in [n for n in remote.blobs if n.endswith(".strip")]:
        remote.blobs[name] = remote.blobs[name][:-1] + bytes([remote.blobs[name][-1] ^ 1])
    third = BuildCache(tmp_path / "three", KEY, remote)
    fresh = stripping.strip(plans_in(third, built_wheel), None, third)
    assert (fresh.files, fresh.reused) == (1, 0)
    assert any("did not match its sha256" in w for w in third.warnings)
    assert shipped(fresh) == shipped(done)
