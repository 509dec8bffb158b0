"""Trait: two locked distributions that install the same file (jwt and PyJWT both ship
`jwt/__init__.py`). An installer lets the last one overwrite the first; the builder crashed on
the duplicate zip entry (exit 1, retried as if transient). It is a refusal now, naming both
distributions and the file. The wheels are served from a file:// index."""

from __future__ import annotations

from pathlib import Path

import pytest
import wheelhouse
from lockfactory import make_project
from wheelhouse import lock_entry, write_code, write_wheel

from .harness import refused, run_cli, sandbox  # noqa: F401


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("overlap")
    jwt = write_wheel(root / "dists", "jwt", "1.0", "py3-none-any", {"jwt/__init__.py": b"A = 1\n"})
    pyjwt = write_wheel(root / "dists", "PyJWT", "2.0", "py3-none-any",
                        {"jwt/__init__.py": b"B = 2\n", "jwt/api.py": b""})
    return wheelhouse.simple_index(root, [jwt, pyjwt]), jwt, pyjwt


def test_two_distributions_installing_the_same_file_are_refused_naming_both(
        tmp_path: Path, index, run_cli, sandbox) -> None:
    simple, jwt, pyjwt = index
    made = make_project(tmp_path / "project", {"jwt": lock_entry(jwt), "pyjwt": lock_entry(pyjwt)})
    source = write_code(made.root, {"app/__init__.py": "import jwt\n"})
    message = refused(run_cli, sandbox, source, "--index-url", simple.as_uri())
    assert "jwt and PyJWT both install jwt/__init__.py: one would overwrite the other" in message
    assert "Keep only one of them in the Pipfile" in message
