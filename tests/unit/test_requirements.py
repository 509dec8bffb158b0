"""The functions' requirements.txt: hash-locked, compiled from pyproject.toml, and never stale.

`sam build` installs each function's requirements.txt with pip, which checks every hash once any
line has one. A tool that refuses unhashed locks must not deploy itself unlocked.
"""

from __future__ import annotations

import importlib.metadata
import re
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from tools.lock_requirements import DIGEST_LINE, PYPROJECT, ROOT, function_inputs

FUNCTIONS = sorted(function_inputs())
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+) \\$")
HASH = re.compile(r"^    --hash=sha256:[0-9a-f]{64}( \\)?$")


def parse_lock(text: str) -> dict[str, Version]:
    """{canonical name: pinned version}; raises on anything but `name==version` plus hashes."""
    pins: dict[str, Version] = {}
    current, hashes = None, 0
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if match := PIN.match(line):
            if current and not hashes:
                raise ValueError(f"line {number}: {current} before it has no hash")
            current, hashes = canonicalize_name(match[1]), 0
            pins[current] = Version(match[2])
        elif HASH.match(line) and current:
            hashes += 1
        else:
            raise ValueError(f"line {number} is not a pin or its hash: {line!r}")
    if current and not hashes:
        raise ValueError(f"{current} has no hash")
    return pins


def lock_of(directory: str) -> Path:
    return ROOT / directory / "requirements.txt"


def test_pyproject_names_every_deployed_function():
    # every CodeUri of template.yaml, so none ships an unlocked requirements.txt
    code_dirs = set(re.findall(r"CodeUri: (\w+)/", (ROOT / "template.yaml").read_text()))
    assert set(FUNCTIONS) == code_dirs == {"builder_function", "emr_function", "check_function"}


@pytest.mark.parametrize("directory", FUNCTIONS)
def test_lock_is_not_stale(directory):
    text = lock_of(directory).read_text(encoding="utf-8")
    [recorded] = [line.removeprefix(DIGEST_LINE) for line in text.splitlines()
                  if line.startswith(DIGEST_LINE)]
    assert recorded == function_inputs()[directory].digest(), (
        f"{directory}/requirements.txt is older than pyproject.toml: run `make lock-requirements`")


@pytest.mark.parametrize("directory", FUNCTIONS)
def test_every_input_is_pinned_with_hashes_and_satisfied(directory):
    pins = parse_lock(lock_of(directory).read_text(encoding="utf-8"))
    for line in function_inputs()[directory].requirements:
        requirement = Requirement(line)
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{directory}: {requirement.name} is not locked"
        assert requirement.specifier.contains(pins[name], prereleases=True), (
            f"{directory}: {requirement.name}=={pins[name]} does not satisfy {line}")


def test_check_functions_lock_the_engines_needs_for_the_oldest_runtime():
    inputs = function_inputs()["check_function"]
    assert inputs.python == "3.10"  # the oldest target: nothing an older Python needs is left out
    # single packages keep pyproject's specifier, without extras (no tracer, no boto3 there)
    names = {Requirement(line).name for line in inputs.requirements}
    assert names == {"aws-lambda-powertools", "packaging", "uv", "isal"}
    assert all(not Requirement(line).extras for line in inputs.requirements)
    uv_range = str(Requirement(next(l for l in inputs.requirements if l.startswith("uv"))).specifier)
    assert uv_range == str(next(Requirement(l).specifier for l in function_inputs()[
        "builder_function"].requirements if l.startswith("uv")))


def test_the_checks_catch_a_stale_or_unhashed_lock(tmp_path):
    changed = tmp_path / "pyproject.toml"
    changed.write_text(PYPROJECT.read_text().replace('"plette>=2.1"', '"plette>=2.2"'))
    assert function_inputs(changed)["builder_function"].digest() != (
        function_inputs()["builder_function"].digest())
    with pytest.raises(ValueError, match="is not a pin"):
        parse_lock("boto3>=1.34\n")
    with pytest.raises(ValueError, match="no hash"):
        parse_lock("boto3==1.44.8 \\\n")


def boto3_requires_botocore(version: Version) -> Requirement:
    """boto3's own requirement on botocore, from its metadata (installed, else its wheel)."""
    if Version(importlib.metadata.version("boto3")) == version:
        requires = importlib.metadata.requires("boto3") or []
    else:  # another boto3 here than in the lock: read the locked release's metadata
        dest = Path(tempfile.mkdtemp())
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
                        "--only-binary", ":all:", f"boto3=={version}", "-d", str(dest)], check=True)
        [wheel] = dest.glob("boto3-*.whl")
        with zipfile.ZipFile(wheel) as zf:
            [meta] = [n for n in zf.namelist() if n.endswith(".dist-info/METADATA")]
            requires = [line.split(":", 1)[1].strip() for line in zf.read(meta).decode().splitlines()
                        if line.startswith("Requires-Dist:")]
    # the unconditional one (botocore[crt] comes only with boto3's crt extra)
    [botocore] = [r for r in map(Requirement, requires) if r.name == "botocore" and r.marker is None]
    return botocore


@pytest.mark.parametrize("directory", FUNCTIONS)
def test_boto3_and_botocore_are_locked_together(directory):
    """sam build vendors botocore (through aws-xray-sdk); a vendored botocore with the runtime's
    boto3 would pair versions nobody tested, so both are locked, matching, or neither is."""
    pins = parse_lock(lock_of(directory).read_text(encoding="utf-8"))
    assert ("boto3" in pins) == ("botocore" in pins), f"{directory}: only one of boto3/botocore"
    if "boto3" in pins:
        requirement = boto3_requires_botocore(pins["boto3"])
        assert requirement.specifier.contains(pins["botocore"]), (
            f"{directory}: boto3=={pins['boto3']} wants {requirement}, "
            f"the lock has botocore=={pins['botocore']}")
