"""Trait 9 (issue 13): a dependency wheel's top-level `tests/` package (typish ships one) stayed in
the layer, where it also shadows the function's own `tests`. It is slimmed and reported like
the test suites inside packages; importlib.metadata still reads typish's dist-info.
"""

from __future__ import annotations

import csv
import io
import zipfile
from pathlib import Path

import pytest

from layer_builder.target import Target

from .indexed import build_for, indexed_project

pytestmark = pytest.mark.network


def test_typish_tests_package_is_slimmed_and_reported(tmp_path: Path) -> None:
    source = indexed_project(tmp_path / "proj", {"typish": "1.9.3"}, {"app.py": "import typish\n"})
    result = build_for(source, tmp_path / "layer.zip", Target(), tmp_path / "cache")
    with zipfile.ZipFile(result.output) as zf:
        names = zf.namelist()
        record = zf.read("python/typish-1.9.3.dist-info/RECORD").decode()
    assert not [n for n in names if n.startswith("python/tests/")], "typish's tests/ shipped"
    assert "python/typish/__init__.py" in names
    slimmed = {s["rule"]: s for s in result.report.slimmed}
    assert slimmed["top-level test packages of dependencies"]["files"] > 0
    listed = {row[0] for row in csv.reader(io.StringIO(record))}
    assert not [p for p in listed if p.startswith("tests/")], "RECORD lists what was left out"
    assert result.report.checks["imports"] == "ok: app"
