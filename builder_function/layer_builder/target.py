"""The runtime and architecture a layer is built for, and everything derived from them."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property

from packaging import tags

from .errors import InputError

#: Lambda runtime → glibc of its Amazon Linux. Wheels up to this manylinux tag run there.
RUNTIME_GLIBC = {
    "python3.10": (2, 26),
    "python3.11": (2, 26),
    "python3.12": (2, 34),
    "python3.13": (2, 34),
    "python3.14": (2, 34),
}
ARCH_MACHINE = {"x86_64": "x86_64", "arm64": "aarch64"}
#: ELF e_machine values (elf.h): EM_X86_64 and EM_AARCH64.
ELF_MACHINE = {"x86_64": 62, "arm64": 183}
#: The manylinux_2_X minors uv accepts in --python-platform (uv 0.13: `--python-platform help`
#: lists 2_17, 2_28, 2_31 … 2_40). Amazon Linux 2's 2.26 is not among them, so uv (kept only for
#: operator-allowed source builds) gets the newest one at or below the target's glibc.
UV_MANYLINUX_MINORS = (17, 28, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40)
DEFAULT_RUNTIME = "python3.13"
DEFAULT_ARCH = "x86_64"


@dataclass(frozen=True)
class Target:
    runtime: str = DEFAULT_RUNTIME
    arch: str = DEFAULT_ARCH

    def __post_init__(self) -> None:
        if self.runtime not in RUNTIME_GLIBC:
            raise InputError(
                f"Unsupported runtime {self.runtime!r}: choose one of {', '.join(RUNTIME_GLIBC)}."
            )
        if self.arch not in ARCH_MACHINE:
            raise InputError(f"Unsupported architecture {self.arch!r}: choose x86_64 or arm64.")

    @property
    def python_version(self) -> str:
        """'3.13' for python3.13."""
        return re.sub(r"^python", "", self.runtime)

    @property
    def version_tuple(self) -> tuple[int, int]:
        major, minor = self.python_version.split(".")
        return int(major), int(minor)

    @property
    def machine(self) -> str:
        """`platform.machine()` on the target: x86_64 or aarch64."""
        return ARCH_MACHINE[self.arch]

    @property
    def elf_machine(self) -> int:
        return ELF_MACHINE[self.arch]

    @property
    def glibc(self) -> tuple[int, int]:
        return RUNTIME_GLIBC[self.runtime]

    @property
    def platform(self) -> str:
        """The newest platform tag the target runs, e.g. x86_64-manylinux_2_34 (2_26 on AL2)."""
        major, minor = self.glibc
        return f"{self.machine}-manylinux_{major}_{minor}"

    @property
    def uv_platform(self) -> str:
        """uv's --python-platform: a value uv accepts, never newer than the target's glibc."""
        major, top = self.glibc
        minor = max(m for m in UV_MANYLINUX_MINORS if m <= top)
        return f"{self.machine}-manylinux_{major}_{minor}"

    @cached_property
    def wheel_tags(self) -> dict[tags.Tag, int]:
        """Every wheel tag the target's interpreter accepts → its priority (0 is best).

        As installers rank them (packaging.tags.sys_tags on the target): cpXY-cpXY, abi3 and
        none on the manylinux ladder, then the pure-Python tags. Built for a foreign platform
        from the runtime, never from the host.
        """
        version = self.version_tuple
        abi = f"cp{version[0]}{version[1]}"
        ladder = self.pip_platforms
        ordered = [
            *tags.cpython_tags(version, abis=[abi], platforms=ladder),
            *tags.compatible_tags(version, abi, ladder),
        ]
        return {tag: rank for rank, tag in enumerate(dict.fromkeys(ordered))}

    @property
    def pip_platforms(self) -> list[str]:
        """pip needs the whole tag ladder as repeated --platform flags (newest first).

        As packaging.tags builds it: down to glibc 2.5 on x86_64 (2.17 on aarch64, whose first
        policy was manylinux2014), each legacy alias right after the glibc it stands for.
        """
        major, top = self.glibc
        oldest = 5 if self.machine == "x86_64" else 17
        legacy = {17: "manylinux2014", 12: "manylinux2010", 5: "manylinux1"}
        tags = []
        for minor in range(top, oldest - 1, -1):
            tags.append(f"manylinux_{major}_{minor}_{self.machine}")
            if minor in legacy:
                tags.append(f"{legacy[minor]}_{self.machine}")
        return tags

    def marker_environment(self) -> dict[str, str]:
        """PEP 508 marker values on the target, never the host's."""
        return {
            "implementation_name": "cpython",
            "implementation_version": f"{self.python_version}.0",
            "os_name": "posix",
            "platform_machine": self.machine,
            "platform_python_implementation": "CPython",
            "platform_release": "",
            "platform_system": "Linux",
            "platform_version": "",
            "python_full_version": f"{self.python_version}.0",
            "python_version": self.python_version,
            "sys_platform": "linux",
        }

    def describe(self) -> str:
        return f"{self.runtime}/{self.arch} (manylinux_{self.glibc[0]}_{self.glibc[1]})"

    @property
    def short(self) -> str:
        """py313-x86_64: for file and cache names."""
        return f"py{self.python_version.replace('.', '')}-{self.arch}"
