"""Trait: a lock made for an older Python, built for a newer runtime (issue 13, item 5).

`fixtures/lock_for_python38` is a real `pipenv lock --python 3.8` pinning botocore 1.24.0 (real
hashes, from the index). botocore 1.24 imports `cgi`, which Python 3.13 no longer has. The
project's own code imports botocore only inside its handler, so checking the own package alone
passed and a layer that cannot import botocore was published. Direct dependencies are imported
too now: the build is refused naming botocore, the cause, and how to relock.
`fixtures/lock_for_python313` is the project relocked as the message says: it builds, and
botocore imports from the layer under Python 3.13.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from .harness import build, imports, refused, run_cli, sandbox  # noqa: F401

pytestmark = pytest.mark.network

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture
def default_index(monkeypatch: pytest.MonkeyPatch) -> None:
    """`url = "${PIP_INDEX_URL}"` with the variable unset: the installer's default index."""
    monkeypatch.delenv("PIP_INDEX_URL", raising=False)


def copy(fixture: str, tmp_path: Path) -> Path:
    return Path(shutil.copytree(FIXTURES / fixture, tmp_path / fixture))


def test_a_python38_lock_built_for_313_is_refused_naming_botocore_and_how_to_relock(
        tmp_path, run_cli, sandbox, default_index):
    message = refused(run_cli, sandbox, copy("lock_for_python38", tmp_path), "--runtime", "python3.13")
    assert "botocore 1.24.0 (in the Pipfile's [packages]) does not import under Python 3.13" in message
    assert "No module named 'cgi'" in message
    assert "removed from the standard library in Python 3.13" in message
    assert "The lock was made for Python 3.8" in message
    assert "pipenv lock --python 3.13" in message


def test_the_relocked_project_builds_and_botocore_imports_under_313(tmp_path, run_cli, sandbox, default_index):
    built = build(run_cli, sandbox, copy("lock_for_python313", tmp_path), "--runtime", "python3.13")
    printed = imports(built.layer, """
import os
os.environ.update(AWS_REGION="eu-west-1", AWS_DEFAULT_REGION="eu-west-1")
import botocore.session, inventory.handler
print(botocore.session.get_session().get_config_variable("region"))
""", tmp_path)
    assert printed.strip() == "eu-west-1"
