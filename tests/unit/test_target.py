"""layer_builder.target: installer platform strings and marker values come from the target only."""

from __future__ import annotations

import pytest

from layer_builder.errors import InputError
from layer_builder.target import Target


def ladder(top: int, oldest: int, machine: str) -> list[str]:
    """The manylinux ladder as PEP 600 defines it, with each legacy alias after its glibc."""
    legacy = {17: "manylinux2014", 12: "manylinux2010", 5: "manylinux1"}
    tags = []
    for minor in range(top, oldest - 1, -1):
        tags.append(f"manylinux_2_{minor}_{machine}")
        if minor in legacy:
            tags.append(f"{legacy[minor]}_{machine}")
    return tags


@pytest.mark.parametrize(
    ("runtime", "arch", "platform", "uv_platform", "machine", "elf", "version"),
    [
        ("python3.13", "x86_64", "x86_64-manylinux_2_34", "x86_64-manylinux_2_34", "x86_64", 62, "3.13"),
        ("python3.13", "arm64", "aarch64-manylinux_2_34", "aarch64-manylinux_2_34", "aarch64", 183, "3.13"),
        ("python3.12", "arm64", "aarch64-manylinux_2_34", "aarch64-manylinux_2_34", "aarch64", 183, "3.12"),
        # uv accepts no 2_26 (issue 13 item 3): the newest value it accepts below AL2's glibc.
        ("python3.11", "x86_64", "x86_64-manylinux_2_26", "x86_64-manylinux_2_17", "x86_64", 62, "3.11"),
        ("python3.10", "arm64", "aarch64-manylinux_2_26", "aarch64-manylinux_2_17", "aarch64", 183, "3.10"),
    ],
)
def test_platform_values(runtime, arch, platform, uv_platform, machine, elf, version):
    target = Target(runtime, arch)
    assert target.platform == platform
    assert target.uv_platform == uv_platform
    assert target.machine == machine
    assert target.elf_machine == elf
    assert target.python_version == version
    assert target.version_tuple == tuple(int(p) for p in version.split("."))
    assert target.describe() == f"{runtime}/{arch} ({platform.split('-')[1]})"


@pytest.mark.parametrize(
    ("runtime", "arch", "expected"),
    [
        ("python3.13", "x86_64", ladder(34, 5, "x86_64")),
        ("python3.13", "arm64", ladder(34, 17, "aarch64")),
        ("python3.11", "x86_64", ladder(26, 5, "x86_64")),
        ("python3.11", "arm64", ladder(26, 17, "aarch64")),
    ],
)
def test_pip_tag_ladder(runtime, arch, expected):
    target = Target(runtime, arch)
    tags = target.pip_platforms
    assert tags == expected
    assert tags[0] == f"{target.platform.split('-')[1]}_{target.machine}"  # the glibc on top
    assert len(tags) == len(set(tags))


def test_ladder_spot_checks():
    x86 = Target("python3.13", "x86_64").pip_platforms
    # numpy 2.5 ships manylinux_2_34 only; old packages only manylinux1/2010/2014 aliases.
    for tag in ("manylinux_2_34_x86_64", "manylinux2014_x86_64", "manylinux_2_12_x86_64",
                "manylinux2010_x86_64", "manylinux1_x86_64"):
        assert tag in x86
    assert "manylinux_2_35_x86_64" not in x86
    arm = Target("python3.13", "arm64").pip_platforms
    assert arm[-1] == "manylinux2014_aarch64"
    assert not [t for t in arm if "x86_64" in t or "manylinux1" in t or "manylinux2010" in t]
    assert "manylinux_2_27_x86_64" not in Target("python3.11").pip_platforms  # AL2 has glibc 2.26


@pytest.mark.parametrize(("runtime", "arch"), [("python3.13", "x86_64"), ("python3.11", "arm64")])
def test_marker_environment_is_the_targets(runtime, arch):
    target = Target(runtime, arch)
    env = target.marker_environment()
    version = runtime.removeprefix("python")
    assert env == {
        "implementation_name": "cpython",
        "implementation_version": f"{version}.0",
        "os_name": "posix",
        "platform_machine": "aarch64" if arch == "arm64" else "x86_64",
        "platform_python_implementation": "CPython",
        "platform_release": "",
        "platform_system": "Linux",
        "platform_version": "",
        "python_full_version": f"{version}.0",
        "python_version": version,
        "sys_platform": "linux",
    }


def test_marker_environment_covers_every_pep508_variable():
    # Any variable missing here would be filled in from the host by packaging.
    from packaging.markers import default_environment

    assert set(default_environment()) <= set(Target().marker_environment())


def test_defaults():
    assert Target() == Target("python3.13", "x86_64")


@pytest.mark.parametrize(("runtime", "arch", "match"), [
    ("python3.9", "x86_64", "Unsupported runtime 'python3.9'"),
    ("nodejs20.x", "x86_64", "Unsupported runtime"),
    ("python3.13", "aarch64", "Unsupported architecture 'aarch64': choose x86_64 or arm64"),
    ("python3.13", "amd64", "Unsupported architecture"),
])
def test_unsupported_targets_are_refused(runtime, arch, match):
    with pytest.raises(InputError, match=match):
        Target(runtime, arch)


def test_uv_accepts_every_runtimes_platform(tmp_path):
    """uv's own check of --python-platform, for every runtime and architecture (no network:
    --dry-run of an empty requirements file)."""
    import subprocess

    from layer_builder.install import find_uv
    from layer_builder.target import ARCH_MACHINE, RUNTIME_GLIBC

    uv = find_uv()
    (tmp_path / "empty.txt").write_text("")
    for runtime in RUNTIME_GLIBC:
        for arch in ARCH_MACHINE:
            target = Target(runtime, arch)
            done = subprocess.run([uv, "pip", "install", "--dry-run", "--no-config", "--offline",
                                   "--python-platform", target.uv_platform, "--python-version",
                                   target.python_version, "--target", str(tmp_path / "t"),
                                   "-r", str(tmp_path / "empty.txt")],
                                  capture_output=True, text=True, env={"PATH": "/usr/bin:/bin",
                                                                       "HOME": str(tmp_path)})
            assert "invalid value" not in done.stderr, (target, done.stderr)


def test_wheel_tags_rank_as_an_installer_does():
    from packaging.tags import Tag

    tags = Target("python3.13", "x86_64").wheel_tags
    ranks = [tags[Tag(*t.split("-"))] for t in (
        "cp313-cp313-manylinux_2_34_x86_64", "cp313-cp313-manylinux_2_17_x86_64",
        "cp313-cp313-manylinux2014_x86_64", "cp313-abi3-manylinux_2_17_x86_64",
        "py3-none-manylinux_2_17_x86_64", "py3-none-any")]
    assert ranks == sorted(ranks) and len(set(ranks)) == len(ranks)
    assert Tag("cp312", "cp312", "manylinux_2_17_x86_64") not in tags
    assert Tag("cp313", "cp313", "manylinux_2_35_x86_64") not in tags
    assert Tag("cp313", "cp313", "manylinux_2_17_aarch64") not in tags
    assert Tag("cp313", "cp313", "linux_x86_64") not in tags
    assert Tag("cp311", "abi3", "manylinux_2_17_x86_64") in tags
    al2 = Target("python3.11", "arm64").wheel_tags
    assert Tag("cp311", "cp311", "manylinux_2_26_aarch64") in al2
    assert Tag("cp311", "cp311", "manylinux_2_28_aarch64") not in al2
