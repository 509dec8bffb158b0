"""bytecode.fit_budget: all bytecode when it fits; otherwise start-up modules first."""

from __future__ import annotations

from pathlib import Path

from layer_builder.bytecode import fit_budget


def make_tree(root: Path) -> dict[str, Path]:
    """pkg/{__init__,hot,cold}.py with .pyc of 100 bytes each and 1000 bytes of data."""
    files = {}
    (root / "pkg" / "__pycache__").mkdir(parents=True)
    (root / "pkg" / "data.bin").write_bytes(b"x" * 1000)
    for name in ("__init__", "hot", "cold"):
        (root / "pkg" / f"{name}.py").write_text("x = 1\n")
        pyc = root / "pkg" / "__pycache__" / f"{name}.cpython-313.pyc"
        pyc.write_bytes(b"p" * 100)
        files[name] = pyc
    return files


def total(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def test_everything_stays_when_it_fits(tmp_path):
    pycs = make_tree(tmp_path)
    result = fit_budget(tmp_path, total(tmp_path), total(tmp_path), lambda: None)
    assert result["choice"] == "all" and result["dropped"] == 0
    assert all(p.exists() for p in pycs.values())


def test_start_up_modules_keep_their_bytecode_first(tmp_path):
    pycs = make_tree(tmp_path)
    startup = {(tmp_path / "pkg" / "hot.py").resolve()}
    budget = total(tmp_path) - 150  # room for one .pyc less than all three... minus half a file
    result = fit_budget(tmp_path, budget, budget, lambda: startup)
    assert result["choice"] == "start-up modules first"
    assert pycs["hot"].exists()
    assert result["kept"] == 1 and result["dropped"] == 2
    assert total(tmp_path) <= budget


def test_without_a_probe_the_shallowest_modules_win_and_the_probe_runs_only_when_needed(tmp_path):
    make_tree(tmp_path)
    calls = []
    deep = tmp_path / "pkg" / "sub" / "__pycache__"
    deep.mkdir(parents=True)
    (tmp_path / "pkg" / "sub" / "deep.py").write_text("x = 1\n")
    (deep / "deep.cpython-313.pyc").write_bytes(b"p" * 100)
    budget = total(tmp_path) - 100

    result = fit_budget(tmp_path, budget, budget, lambda: calls.append(1))
    assert calls == [1]
    assert result["choice"] == "shallowest modules first"
    assert not (deep / "deep.cpython-313.pyc").exists()
    assert total(tmp_path) <= budget


def test_the_hard_limit_is_used_when_the_tree_alone_eats_the_headroom(tmp_path):
    make_tree(tmp_path)
    without_pyc = total(tmp_path) - 300
    soft, hard = without_pyc - 10, without_pyc + 150
    result = fit_budget(tmp_path, soft, hard, lambda: None)
    assert result["kept"] == 1 and result["dropped"] == 2
    assert total(tmp_path) <= hard


def test_over_even_without_bytecode_keeps_everything_for_the_size_gate(tmp_path):
    pycs = make_tree(tmp_path)
    result = fit_budget(tmp_path, 10, 20, lambda: None)
    assert result["choice"] == "all"
    assert all(p.exists() for p in pycs.values())


def test_startup_sources_are_what_importing_the_public_names_loads(tmp_path):
    import sys

    from layer_builder.bytecode import importable_names, startup_sources

    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "__init__.py").write_text("from . import core\n")
    (tmp_path / "app" / "core.py").write_text("VALUE = 1\n")
    (tmp_path / "app" / "extra.py").write_text("VALUE = 2\n")
    (tmp_path / "_private").mkdir()
    (tmp_path / "_private" / "__init__.py").write_text("raise SystemExit('never imported')\n")
    (tmp_path / "app-1.0.dist-info").mkdir()

    assert importable_names(tmp_path) == ["app"]
    loaded = startup_sources(sys.executable, tmp_path)
    root = tmp_path.resolve()
    assert loaded == {root / "app" / "__init__.py", root / "app" / "core.py"}
