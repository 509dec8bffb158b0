"""Trait 6 (issue 13): `wheel==0.37.1` was listed as having no wheel, though it ships one matching
the lock's hash, because package names were matched against an installer's message text. The
engine now decides from data: the index's file list and the lock's hashes. The advice follows
what the release offers, and never repeats a flag the user already passed.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from layer_builder.errors import NoWheelError
from layer_builder.target import Target

from .indexed import build_for, index_entry, indexed_project

pytestmark = pytest.mark.network


def test_wheel_0_37_1_has_a_wheel_and_builds(tmp_path: Path) -> None:
    source = indexed_project(tmp_path / "proj", {"wheel": "0.37.1", "six": "1.17.0"},
                             {"app.py": "import wheel, six\n"})
    result = build_for(source, tmp_path / "layer.zip", Target(), tmp_path / "cache")
    assert result.report.wheels["wheel"] == "wheel-0.37.1-py2.py3-none-any.whl"
    assert result.report.checks["imports"] == "ok: app"


def test_a_pure_sdist_only_pin_is_advised_the_operators_sdist_allowance(tmp_path: Path) -> None:
    # docopt 0.6.2 publishes an sdist only: nothing to pin instead, building it is the way.
    source = indexed_project(tmp_path / "proj", {"docopt": "0.6.2", "six": "1.17.0"}, {"app.py": ""})
    with pytest.raises(NoWheelError) as refused:
        build_for(source, tmp_path / "layer.zip", Target(), tmp_path / "cache")
    message = str(refused.value)
    assert message.startswith("No wheel of docopt==0.6.2 for python3.13/x86_64 (manylinux_2_34).")
    assert ("docopt==0.6.2 publishes no wheels and an sdist: allow building it from source "
            "(--allow-sdist docopt / AllowSdist).") in message
    assert "pin a version" not in message and "six" not in message


def test_an_allowed_package_without_an_sdist_is_not_advised_the_flag_again(tmp_path: Path) -> None:
    # pyyaml 5.2's Windows wheels only (the lock keeps no sdist hash), with --allow-sdist pyyaml.
    entry = index_entry("pyyaml", "5.2")
    entry["hashes"] = [h for h in entry["hashes"] if h not in _sdist_hashes("pyyaml", "5.2")]
    from lockfactory import make_project
    made = make_project(tmp_path / "proj", {"pyyaml": entry})
    with pytest.raises(NoWheelError) as refused:
        build_for(made.root, tmp_path / "layer.zip", Target(), tmp_path / "cache",
                  allow_sdist=frozenset({"pyyaml"}))
    message = str(refused.value)
    assert "--allow-sdist" not in message
    assert "it is allowed to build from source but its release has no sdist: pin a version" in message


def _sdist_hashes(name: str, version: str) -> set[str]:
    import os

    from layer_builder import fetch
    listed = fetch.IndexClient(os.environ).project_files(fetch.default_index(), name)
    return {f"sha256:{f.sha256}" for f in listed if f.is_sdist and f"-{version}." in f.filename}
