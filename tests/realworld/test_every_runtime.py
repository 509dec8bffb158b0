"""Trait 3 (issue 13): `--runtime python3.10` / `python3.11` failed every build, on both
architectures, because uv rejected `x86_64-manylinux_2_26`. The engine now chooses wheels itself
from the target's tag ladder (glibc 2.26 on Amazon Linux 2, 2.34 on AL2023); uv, kept for source
builds, gets a platform it accepts.

A real build for every runtime from 3.10 to 3.14 on both architectures, of a small lock with a
native package (markupsafe), imported where an interpreter of that version and this machine's
architecture exist.
"""

from __future__ import annotations

import os
import re
import subprocess
import zipfile
from pathlib import Path

import pytest

from layer_builder import bytecode
from layer_builder.target import ARCH_MACHINE, RUNTIME_GLIBC, Target

from .indexed import build_for, indexed_project

pytestmark = pytest.mark.network
APP = {"app/__init__.py": "import markupsafe\n\ndef run():\n    return str(markupsafe.escape('<x>'))\n"}


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return indexed_project(tmp_path_factory.mktemp("every-runtime") / "proj", {"markupsafe": "3.0.3"}, APP)


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.mark.parametrize("arch", sorted(ARCH_MACHINE))
@pytest.mark.parametrize("runtime", sorted(RUNTIME_GLIBC))
def test_a_native_lock_builds_for_every_runtime_and_imports_where_it_can(
        runtime: str, arch: str, source: Path, cache: Path, tmp_path: Path) -> None:
    target = Target(runtime, arch)
    result = build_for(source, tmp_path / "layer.zip", target, cache)
    wheel = result.report.wheels["markupsafe"]
    tag = re.search(r"manylinux_2_(\d+)_(\w+)\.", wheel) or re.search(r"manylinux2014_(\w+)\.", wheel)
    assert tag, wheel
    assert f"-cp{target.python_version.replace('.', '')}-" in wheel, wheel
    if tag.re.pattern.startswith("manylinux_2"):
        assert int(tag.group(1)) <= target.glibc[1], f"{wheel} needs a newer glibc than {runtime}"
    with zipfile.ZipFile(result.output) as zf:
        shared = [n for n in zf.namelist() if n.endswith(".so")]
        zf.extractall(tmp_path / "opt")
    assert shared == [f"python/markupsafe/_speedups.cpython-{target.python_version.replace('.', '')}"
                      f"-{target.machine}-linux-gnu.so"]
    python = bytecode.find_interpreter(target)
    if python is None:
        # No interpreter of that version here (3.14): no bytecode of another version ships.
        assert result.report.bytecode["interpreter"] is None
        assert any("without bytecode" in w for w in result.report.warnings)
        assert not [n for n in zf.namelist() if n.endswith(".pyc")]
        return
    pycs = [n for n in zipfile.ZipFile(result.output).namelist() if n.endswith(".pyc")]
    assert pycs and all(f".cpython-{target.python_version.replace('.', '')}.pyc" in n for n in pycs)
    if target.machine != os.uname().machine:
        assert "twin of the layer" in result.report.checks["imports"]
        return
    assert result.report.checks["imports"] == "ok: app"
    done = subprocess.run([python, "-S", "-I", "-c",
                           "import sys; sys.path[:0] = [sys.argv[1]]; import app, markupsafe._speedups;"
                           " print(app.run())", str(tmp_path / "opt" / "python")],
                          capture_output=True, text=True, timeout=60, check=False,
                          env={"PATH": os.environ.get("PATH", ""), "PYTHONDONTWRITEBYTECODE": "1"})
    assert (done.returncode, done.stdout.strip()) == (0, "&lt;x&gt;"), done.stderr
