"""Shared fixtures: the sample projects, and one uv download cache per test session (per xdist worker)."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"
MIXED = FIXTURES / "projects" / "mixed"


@pytest.fixture(scope="session")
def uv_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """uv's download cache, shared by every build of the session so each wheel is fetched once."""
    return tmp_path_factory.mktemp("uv-cache")


@pytest.fixture(scope="session")
def make_cache_dir(uv_cache: Path) -> Callable[[Path], Path]:
    """Makes an empty dependency cache whose uv/ is the session's: a real miss, no re-download.

    The pipeline keeps uv's cache at <cache_dir>/uv, so a link there is all it takes.
    """

    def make(where: Path) -> Path:
        where.mkdir(parents=True)
        (where / "uv").symlink_to(uv_cache, target_is_directory=True)
        return where

    return make


@pytest.fixture
def cache_dir(tmp_path: Path, make_cache_dir: Callable[[Path], Path]) -> Path:
    return make_cache_dir(tmp_path / "cache")


@pytest.fixture
def mixed_project(tmp_path: Path) -> Path:
    """A private copy of the mixed fixture (six pure, markupsafe native, colorama win32-only)."""
    return Path(shutil.copytree(MIXED, tmp_path / "mixed"))
