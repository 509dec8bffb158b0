"""process: the builder's environment cannot be read by the code its builds run."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap

import pytest

PARENT = textwrap.dedent("""
    import os, subprocess, sys
    if sys.argv[2] == "protect":
        namespace = {}
        exec(sys.argv[1], namespace)  # process.py's source: nobody may not read the checkout
        assert namespace["forbid_environment_reads"]()
    child = "import os; print(open(f'/proc/{os.getppid()}/environ', 'rb').read().count(b'SECRET_KEY'))"
    done = subprocess.run([sys.executable, "-c", child], env={"PATH": "/usr/bin:/bin"},
                          capture_output=True, text=True)
    print("read" if done.returncode == 0 and done.stdout.strip() == "1" else "denied")
""")

BUILDER = os.path.join(os.path.dirname(__file__), "..", "..", "..", "builder_function")
PROCESS_PY = os.path.join(BUILDER, "layer_builder", "service", "process.py")
#: An interpreter another user can run (pyenv's live under /root).
SYSTEM_PYTHON = "/usr/bin/python3"


def run_as_nobody(mode: str) -> str:
    with open(PROCESS_PY, encoding="utf-8") as f:
        source = f.read()
    command = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", SYSTEM_PYTHON,
               "-c", PARENT, source, mode]
    done = subprocess.run(command, env={"PATH": "/usr/bin:/bin", "SECRET_KEY": "abc"},
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv") or not os.access(SYSTEM_PYTHON, os.X_OK),
                    reason="needs root, setpriv and a system python3 to run as another user")
def test_a_same_user_child_cannot_read_the_builders_environment():
    assert run_as_nobody("open") == "read"  # the threat is real without the protection
    assert run_as_nobody("protect") == "denied"


def test_forbid_environment_reads_makes_the_process_non_dumpable():
    code = ("import ctypes, sys; sys.path.insert(0, sys.argv[1]);"
            "from layer_builder.service.process import forbid_environment_reads as f;"
            "ok = f(); print(ok, ctypes.CDLL(None).prctl(3, 0, 0, 0, 0))")
    done = subprocess.run([sys.executable, "-c", code, os.path.abspath(BUILDER)],
                          capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["True", "0"]
