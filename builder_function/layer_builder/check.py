"""Check step: binaries for the target machine, own packages import, and the size fits Lambda."""

from __future__ import annotations

import os
import re
import struct
import subprocess
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path

from . import limits
from .bytecode import out_of_time, run_bounded
from .errors import InputError, LayerTooLargeError, TargetMismatchError
from .runner import RUNTIME_PROVIDED, runtime_provided_paths  # noqa: F401  (moved to runner.py)
from .runner import runtime_shim as _runtime_shim
from .target import ARCH_MACHINE, ELF_MACHINE, Target

_SHARED_OBJECT = re.compile(r"\.so(\.\d+)*$")
_MACHINE_NAMES = {number: ARCH_MACHINE[arch] for arch, number in ELF_MACHINE.items()}
#: Longer than this at import is the project's fault (Lambda's init phase allows 10 s), not time.
IMPORT_CHECK_TIMEOUT = 120.0


def is_shared_object(name: str) -> bool:
    return bool(_SHARED_OBJECT.search(name))


def elf_machine(header: bytes) -> int | None:
    """e_machine of an ELF header, or None when the bytes are not ELF."""
    if len(header) < 20 or header[:4] != b"\x7fELF":
        return None
    order = "<" if header[5] == 1 else ">"
    return struct.unpack(order + "H", header[18:20])[0]


def machine_name(number: int | None) -> str:
    return _MACHINE_NAMES.get(number, "not ELF" if number is None else f"ELF machine {number}")


def check_binaries(headers: Iterable[tuple[str, bytes]], target: Target) -> int:
    """Every shared object is an ELF for the target machine; returns how many were checked."""
    wrong: list[str] = []
    checked = 0
    for name, header in headers:
        checked += 1
        machine = elf_machine(header)
        if machine != target.elf_machine:
            wrong.append(f"{name} ({machine_name(machine)})")
    if wrong:
        shown = ", ".join(wrong[:5]) + (f" and {len(wrong) - 5} more" if len(wrong) > 5 else "")
        raise TargetMismatchError(
            f"{len(wrong)} binaries are not built for {target.machine}: {shown}. Lock versions that "
            f"publish {target.machine} wheels, or build for the architecture they were made for.")
    return checked


def tree_headers(tree: Path) -> Iterable[tuple[str, bytes]]:
    for dirpath, _, filenames in os.walk(tree):
        for name in filenames:
            if is_shared_object(name):
                path = Path(dirpath, name)
                with open(path, "rb") as f:
                    yield path.relative_to(tree).as_posix(), f.read(20)


def check_size(unzipped: int, by_package: Mapping[str, int], what: str = "The layer") -> None:
    if unzipped <= limits.MAX_UNZIPPED_BYTES:
        return
    top = sorted(by_package.items(), key=lambda kv: -kv[1])[: limits.TOP_PACKAGES_SHOWN]
    breakdown = ", ".join(f"{name} {size / 1e6:.1f} MB" for name, size in top)
    raise LayerTooLargeError(
        f"{what} unzips to {unzipped:,} bytes, over Lambda's limit of "
        f"{limits.MAX_UNZIPPED_BYTES:,} bytes (function and all layers). Biggest: {breakdown}. "
        "Drop or split dependencies, or move the largest into a layer of their own.")


def check_imports(python: str, paths: list[Path], modules: list[str], timeout: float | None = None) -> None:
    """Import the project's own packages from the built tree under the target interpreter.

    `timeout` is the build's time left (None: no deadline): running out of it is OutOfTimeError
    (transient); an import slower than IMPORT_CHECK_TIMEOUT with time to spare is InputError.
    """
    if not modules:
        return
    code = ("import importlib, sys; sys.path[:0] = sys.argv[1].split(sys.argv[2]); "
            "[importlib.import_module(m) for m in sys.argv[3:]]")
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONDONTWRITEBYTECODE": "1"}
    with tempfile.TemporaryDirectory(prefix="runtime-shim-") as tmp:
        # -S -I: nothing of the builder's site-packages leaks in; only the layer and runtime copies.
        search = [str(p) for p in paths] + [str(_runtime_shim(Path(tmp) / "runtime"))]
        limit = IMPORT_CHECK_TIMEOUT if timeout is None else min(timeout, IMPORT_CHECK_TIMEOUT)
        try:
            done = run_bounded([python, "-S", "-I", "-c", code, os.pathsep.join(search), os.pathsep, *modules],
                               env=env, timeout=limit)
        except subprocess.TimeoutExpired:
            if timeout is not None and timeout <= IMPORT_CHECK_TIMEOUT:
                raise out_of_time(f"The import check of {', '.join(modules)}") from None
            raise InputError(f"Importing {', '.join(modules)} took over {limit:.0f} s: "
                             "import-time work in the project must be light.") from None
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines()
        raise InputError(
            f"The project's packages do not import from the built layer under {Path(python).name}: "
            f"{lines[-1] if lines else 'exit ' + str(done.returncode)}. Add the missing dependency "
            "to the Pipfile (then `pipenv lock`) or fix the import.")
