"""Check step: binaries for the target machine and the size within Lambda's limit and the
headroom. The import check runs in a sandbox (sandbox.py, runner.py), never here."""

from __future__ import annotations

import os
import re
import struct
from collections.abc import Iterable, Mapping
from pathlib import Path

from . import limits
from .errors import LayerTooLargeError, TargetMismatchError
from .runner import RUNTIME_PROVIDED, runtime_provided_paths  # noqa: F401  (moved to runner.py)
from .target import ARCH_MACHINE, ELF_MACHINE, Target

_SHARED_OBJECT = re.compile(r"\.so(\.\d+)*$")
_MACHINE_NAMES = {number: ARCH_MACHINE[arch] for arch, number in ELF_MACHINE.items()}


def is_shared_object(name: str) -> bool:
    return bool(_SHARED_OBJECT.search(name))


def elf_machine(header: bytes) -> int | None:
    """e_machine of an ELF header, or None when the bytes are not ELF."""
    if len(header) < 20 or header[:4] != b"\x7fELF":
        return None
    order = "<" if header[5] == 1 else ">"
    return struct.unpack(order + "H", header[18:20])[0]


def machine_name(number: int | None) -> str:
    if number is None:
        return "not ELF"
    return _MACHINE_NAMES.get(number, f"ELF machine {number}")


def check_binaries(headers: Iterable[tuple[str, bytes]], target: Target) -> int:
    """Every shared object is an ELF for the target machine; returns how many were checked."""
    return check_machines(((name, elf_machine(header)) for name, header in headers), target)


def check_machines(machines: Iterable[tuple[str, int | None]], target: Target) -> int:
    """Every shared object's ELF machine (None: not ELF) is the target's; returns the count."""
    wrong: list[str] = []
    checked = 0
    for name, machine in machines:
        checked += 1
        if machine != target.elf_machine:
            wrong.append(f"{name} ({machine_name(machine)})")
    if wrong:
        shown = ", ".join(wrong[:5]) + (f" and {len(wrong) - 5} more" if len(wrong) > 5 else "")
        raise TargetMismatchError(
            f"{len(wrong)} binaries are not built for {target.machine}: {shown}. Lock versions that "
            f"publish {target.machine} wheels, or build for the architecture they were made for."
        )
    return checked


def tree_headers(tree: Path) -> Iterable[tuple[str, bytes]]:
    for dirpath, _, filenames in os.walk(tree):
        for name in filenames:
            if is_shared_object(name):
                path = Path(dirpath, name)
                with open(path, "rb") as f:
                    yield path.relative_to(tree).as_posix(), f.read(20)


def check_size(
    unzipped: int, by_package: Mapping[str, int], what: str = "The layer", headroom: int = 0
) -> None:
    """Refuse a layer over Lambda's limit, or one that leaves less than `headroom` bytes of it
    for the consumer's own code and other layers."""
    if unzipped + headroom <= limits.MAX_UNZIPPED_BYTES:
        return
    top = sorted(by_package.items(), key=lambda kv: -kv[1])[: limits.TOP_PACKAGES_SHOWN]
    breakdown = ", ".join(f"{name} {size / 1e6:.1f} MB" for name, size in top)
    if unzipped <= limits.MAX_UNZIPPED_BYTES:
        raise LayerTooLargeError(
            f"{what} unzips to {unzipped:,} bytes, which leaves "
            f"{limits.MAX_UNZIPPED_BYTES - unzipped:,} bytes of Lambda's limit of "
            f"{limits.MAX_UNZIPPED_BYTES:,} bytes, less than the headroom of {headroom:,} bytes "
            f"kept for the function's own code and other layers. Biggest: {breakdown}. Drop or "
            "split dependencies, or lower `headroom` in [tool.layer-builder] if the functions "
            "need less room."
        )
    raise LayerTooLargeError(
        f"{what} unzips to {unzipped:,} bytes, over Lambda's limit of "
        f"{limits.MAX_UNZIPPED_BYTES:,} bytes (function and all layers). Biggest: {breakdown}. "
        "Drop or split dependencies, or move the largest into a layer of their own."
    )
