"""importmemo: when a remembered import verdict still holds, and when a run on part of the
layer says what the whole layer would. Plain data: no sandbox runs here."""

from __future__ import annotations

from layer_builder import importmemo
from layer_builder.cache import BuildCache
from layer_builder.sandbox import ImportRecord

SCOPE = {"layer": "app", "target": "python3.13/x86_64"}


def index(**wheels: str) -> importmemo.LayerIndex:
    """A layer of one-package wheels: name → sha."""
    files = []
    for name, sha in wheels.items():
        files += [
            (f"{name}/__init__.py", f"{name}@{sha}"),
            (f"{name}/data.txt", f"{name}@{sha}"),
            (f"{name}-1.0.dist-info/RECORD", f"{name}@{sha}"),
        ]
    return importmemo.layer_index(files)


def remembered(tmp_path, record: ImportRecord, layer: importmemo.LayerIndex, now):
    cache = BuildCache(tmp_path / "cache", b"k" * 32)
    assert importmemo.remember(cache, SCOPE, [record], layer, ran=[record.module]) == 1
    return importmemo.split(cache, SCOPE, [record.module], now)


def test_a_verdict_holds_while_every_wheel_it_touched_is_the_same(tmp_path):
    record = ImportRecord(
        "alpha", True, touched=("alpha/__init__.py", "beta/data.txt"), loaded=("alpha/__init__.py",)
    )
    before = index(alpha="a1", beta="b1", gamma="c1")
    assert remembered(
        tmp_path / "1", record, before, index(alpha="a1", beta="b1", gamma="c2")
    ).proven == {"alpha": ["alpha/__init__.py"]}
    changed = remembered(tmp_path / "2", record, before, index(alpha="a1", beta="b2", gamma="c1"))
    assert changed.run == ["alpha"] and changed.hints == {"alpha", "beta"}


def test_a_name_it_missed_must_stay_missing(tmp_path):
    record = ImportRecord("alpha", True, touched=("alpha/__init__.py",), absent=("delta", "json"))
    before = index(alpha="a1")
    assert remembered(tmp_path / "1", record, before, index(alpha="a1", beta="b1")).run == []
    assert remembered(tmp_path / "2", record, before, index(alpha="a1", delta="d1")).run == [
        "alpha"
    ]
    assert remembered(tmp_path / "3", record, before, index(alpha="a1", json="j1")).run == ["alpha"]


def test_a_directory_it_listed_must_hold_the_same_entries(tmp_path):
    record = ImportRecord("alpha", True, touched=("alpha/__init__.py",), listed=(".",))
    before = index(alpha="a1", beta="b1")
    # Another version of beta renames its dist-info: the root lists differently.
    bumped = importmemo.layer_index(
        [
            ("alpha/__init__.py", "alpha@a1"),
            ("beta/__init__.py", "beta@b1"),
            ("beta-2.0.dist-info/RECORD", "beta@b1"),
        ]
    )
    assert remembered(tmp_path / "1", record, before, bumped).run == ["alpha"]


def test_a_file_the_probe_could_not_place_is_never_remembered(tmp_path):
    cache = BuildCache(tmp_path / "cache", b"k" * 32)
    record = ImportRecord("alpha", True, touched=("alpha/__init__.py", "?"))
    assert importmemo.remember(cache, SCOPE, [record], index(alpha="a1"), ran=["alpha"]) == 0
    failed = ImportRecord("beta", False, touched=("beta/__init__.py",))
    later = ImportRecord("gamma", True, touched=("gamma/__init__.py",), after=("beta",))
    assert (
        importmemo.remember(
            cache, SCOPE, [failed, later], index(beta="b1", gamma="c1"), ran=["beta", "gamma"]
        )
        == 0
    )


def test_a_run_on_part_of_the_layer_is_conclusive_only_when_it_missed_nothing_the_layer_has():
    full = index(alpha="a1", beta="b1", gamma="c1")
    part = index(alpha="a1", beta="b1")
    ok = ImportRecord(
        "alpha", True, touched=("alpha/__init__.py",), absent=("json", "nowhere"), listed=("alpha",)
    )
    assert importmemo.conclusive([ok], part, full)
    missed = ImportRecord("alpha", True, touched=("alpha/__init__.py",), absent=("gamma",))
    assert not importmemo.conclusive([missed], part, full)
    listed_root = ImportRecord("alpha", True, touched=("alpha/__init__.py",), listed=(".",))
    assert not importmemo.conclusive([listed_root], part, full)
    assert not importmemo.conclusive([ImportRecord("alpha", False)], part, full)


def test_a_record_that_claims_nothing_still_depends_on_its_own_wheel(tmp_path):
    """The probe runs the code under check: a record saying it touched nothing (forged) still
    re-runs when the module's own wheel changes."""
    forged = ImportRecord("alpha", True)
    before = index(alpha="a1", beta="b1")
    assert remembered(tmp_path / "1", forged, before, index(alpha="a2", beta="b1")).run == ["alpha"]


def test_records_for_imports_not_asked_for_or_of_no_layer_name_are_not_remembered(tmp_path):
    cache = BuildCache(tmp_path / "cache", b"k" * 32)
    layer = index(alpha="a1")
    extra = ImportRecord("alpha", True, touched=("alpha/__init__.py",))
    nowhere = ImportRecord("ghost", True)
    assert importmemo.remember(cache, SCOPE, [extra, nowhere], layer, ran=["ghost"]) == 0


def test_a_change_to_a_wheel_no_import_names_re_runs_every_import(tmp_path):
    cache = BuildCache(tmp_path / "cache", b"k" * 32)
    record = ImportRecord("alpha", True, touched=("alpha/__init__.py",))  # hides its use of beta
    before = index(alpha="a1", beta="b1")
    stored = importmemo.remember(cache, SCOPE, [record], before, ran=["alpha"], always=["beta@b1"])
    assert stored == 1
    assert importmemo.split(cache, SCOPE, ["alpha"], index(alpha="a1", beta="b2")).run == ["alpha"]
    assert importmemo.split(cache, SCOPE, ["alpha"], before).run == []
