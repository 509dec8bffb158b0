"""`make demo`, the README's first command, as a test: its own checks decide the exit code (one
version for the duplicate deliveries, the EMR trigger and the pointer on the new version, prune,
a two-target publish), and its summary names each step."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.network, pytest.mark.slow]


def test_make_demo_runs_the_whole_flow_and_says_so() -> None:
    done = subprocess.run([sys.executable, "-m", "tools.demo"], cwd=ROOT, capture_output=True,
                          text=True, timeout=600, check=False, env=os.environ.copy())
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    for line in ("Layer version ARN", "Same bytes again    unchanged", "EMR cluster",
                 "Prune --keep 1", "Two-target publish  python3.13/arm64", "Done in"):
        assert line in done.stdout, done.stdout
