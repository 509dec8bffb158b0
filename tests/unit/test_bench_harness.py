"""The benchmark harness (bench/run.py) runs end to end on a small fixture and writes its table.

Benchmarks are not timed tests: nothing here asserts a duration or a ratio. The run needs the
package index (uv and pip download the fixture's two wheels) and, the first time, installs pipenv
into ~/.cache/layer-builder-bench/seed-venv for the seed script.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest

from bench import contenders, measures, run

pytestmark = [pytest.mark.network, pytest.mark.slow]


def test_harness_runs_every_contender_on_the_mixed_fixture(tmp_path: Path) -> None:
    out, work = tmp_path / "out", tmp_path / "work"

    assert (
        run.main(
            [
                "--fixture",
                "mixed",
                "--reps",
                "1",
                "--import-runs",
                "1",
                "--out",
                str(out),
                "--work",
                str(work),
            ]
        )
        == 0
    )

    table = (out / "latest-mixed.md").read_text()
    first = table.split("## Targets")[0]
    rows = [line for line in first.splitlines() if line.startswith("| ") and " s | " in line]
    assert [row.split(" | ")[0].removeprefix("| ") for row in rows] == list(contenders.CONTENDERS)
    assert "## Targets (issue 10)" in table

    (raw_path,) = out.glob("mixed-*.json")
    raw = json.loads(raw_path.read_text())
    timed = [r for r in raw["records"] if not r["warmup"]]
    assert sorted(r["contender"] for r in timed) == sorted(contenders.CONTENDERS)
    for record in timed:
        assert record["returncode"] == 0, record
        assert record["error"] == "", record
        assert record["layer"]["missing"] == [], record
        assert record["layer"]["unzipped_bytes"] > record["layer"]["zipped_bytes"] > 0
        assert record["max_rss_kb"] > 0
    cli = {r["contender"]: r for r in timed if r["contender"].startswith("cli-")}
    assert cli["cli-cold"]["report"]["dependency_cache"] == "miss"
    assert cli["cli-same"]["report"]["dependency_cache"] == "hit"
    # The bumped pin (six 1.17.0 -> 1.16.0) is the one wheel not in the warm cache.
    assert cli["cli-bump"]["report"]["dependency_cache"] == "partial: 1 of 2 wheels cached"
    assert cli["cli-bump"]["report"]["peak_tmp_bytes"] > 0
    imports = raw["summary"]["cli-cold"]["imports"]
    assert imports["errors"] == {} and imports["with_pyc"] > 0 and imports["without_pyc"] > 0
    # Every layer, work tree and cache of the run is gone; only the results stay.
    assert [p.name for p in work.iterdir()] == []


def test_layer_figures_name_the_locked_distributions_a_zip_lacks(tmp_path: Path) -> None:
    layer = tmp_path / "layer.zip"
    with zipfile.ZipFile(layer, "w") as zf:
        zf.writestr("python/six.py", "x" * 100)
        zf.writestr("python/six-1.17.0.dist-info/METADATA", "Name: six\n")
        zf.writestr("python/typing_extensions-4.16.0.dist-info/RECORD", "")

    figures = measures.layer_figures(layer, ["six", "typing-extensions", "markupsafe"])

    assert figures["missing"] == ["markupsafe"]
    assert figures["files"] == 3 and figures["unzipped_bytes"] == 110
    assert figures["fits"] is True and figures["outside_python_dir"] == 0
