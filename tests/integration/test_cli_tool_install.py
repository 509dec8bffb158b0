"""`uv tool install .` (as `pipx install .`) gives a working `layer-builder`, outside any venv of
ours: the project declares everything the CLI imports."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from layer_builder.bytecode import find_interpreter
from layer_builder.target import Target
from uv import find_uv_bin

pytestmark = [pytest.mark.network, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]
MIXED = ROOT / "tests" / "fixtures" / "projects" / "mixed"


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    base = tmp_path_factory.mktemp("tool")
    source = base / "src"  # a copy: uv builds in place and must not write into the checkout
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(
        ".venv*", ".git", ".aws-sam", "__pycache__", "*.egg-info", "build", "tests", "bench"))
    env = {**os.environ, "UV_TOOL_DIR": str(base / "tools"), "UV_TOOL_BIN_DIR": str(base / "bin"),
           "UV_CACHE_DIR": str(base / "uv-cache"), "XDG_CACHE_HOME": str(base / "cache")}
    env.pop("VIRTUAL_ENV", None)
    python = find_interpreter(Target("python3.13"))
    assert python, "no Python 3.13 (make test finds or installs one)"
    done = subprocess.run([find_uv_bin(), "tool", "install", "--python", python, str(source)],
                          env=env, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr
    return base / "bin" / "layer-builder", env


def test_the_installed_command_runs(installed: tuple[Path, dict[str, str]]) -> None:
    program, env = installed
    done = subprocess.run([str(program), "--version"], env=env, capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0 and done.stdout.startswith("layer-builder "), done.stderr
    # Every command's help works without the AWS extras (boto3, Powertools are imported lazily).
    for command in ("build", "inspect", "publish", "versions", "prune", "rollback", "share"):
        done = subprocess.run([str(program), command, "--help"], env=env, capture_output=True,
                              text=True, timeout=60, check=False)
        assert done.returncode == 0, (command, done.stderr)


def test_the_installed_command_builds_a_layer(installed: tuple[Path, dict[str, str]],
                                              tmp_path: Path) -> None:
    command, env = installed
    project = shutil.copytree(MIXED, tmp_path / "mixed")
    done = subprocess.run([str(command), "build", str(project), "--report", "r.json", "-q"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
                          check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("Built layer mixed: mixed-python3.13-x86_64.zip")
    assert (tmp_path / "r.html").read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    # The cache went to the platform's cache directory (XDG_CACHE_HOME here).
    assert (Path(env["XDG_CACHE_HOME"]) / "layer-builder").is_dir()
