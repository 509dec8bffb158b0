"""stripping: which shared objects are worth stripping, from what planning read of them."""

from __future__ import annotations

from pathlib import Path

from layer_builder import limits, stripping
from layer_builder.wheel import Member, Plan

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
