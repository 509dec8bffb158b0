"""The runtime and architecture a layer is built for, and everything derived from them."""

from __future__ import annotations

import re
from dataclasses import dataclass

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
            raise InputError(
                f"Unsupported architecture {self.arch!r}: choose x86_64 or arm64."
            )

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
    def uv_platform(self) -> str:
        """uv's --python-platform, e.g. x86_64-manylinux_2_34."""
        major, minor = self.glibc
        return f"{self.machine}-manylinux_{major}_{minor}"

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
