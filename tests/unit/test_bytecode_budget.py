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


def test_the_start_up_set_is_built_once_not_per_module(tmp_path, monkeypatch):
    import builtins

    from layer_builder import bytecode

    pkg = tmp_path / "pkg"
    (pkg / "__pycache__").mkdir(parents=True)
    for i in range(40):
        (pkg / f"m{i:02}.py").write_text("x = 1\n")
        (pkg / "__pycache__" / f"m{i:02}.cpython-313.pyc").write_bytes(b"p" * 100)
    startup = {(pkg / f"m{i:02}.py").resolve() for i in range(0, 40, 2)}
    built = []

    def counting_set(*args):
        built.append(args)
        return builtins.set(*args)

    monkeypatch.setattr(bytecode, "set", counting_set, raising=False)  # shadows the builtin
    budget = total(tmp_path) - 20 * 100  # room for the 20 start-up .pyc only
    result = fit_budget(tmp_path, budget, budget, lambda: startup)
    assert len(built) == 1, f"set(first) was built {len(built)} times for 40 modules"
    assert result["kept"] == 20 and result["dropped"] == 20
    kept = {p.name.split(".")[0] for p in (pkg / "__pycache__").iterdir()}
    assert kept == {f"m{i:02}" for i in range(0, 40, 2)}


# --- time limits ------------------------------------------------------------------------------

def _gone(pid: int) -> bool:
    """True once pid has exited (a zombie counts: it no longer runs)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return True
    return state in ("Z", "X")


def test_compile_tree_out_of_time_kills_the_compiler_and_its_workers(tmp_path):
    import time

    import pytest
    from layer_builder.bytecode import compile_tree
    from layer_builder.errors import OutOfTimeError

    # A stand-in interpreter that starts a worker (as compileall's pool does) and hangs.
    worker_pid = tmp_path / "worker.pid"
    fake = tmp_path / "python3.13"
    fake.write_text(f"#!/bin/sh\nsleep 60 &\necho $! > {worker_pid}\nwait\n")
    fake.chmod(0o755)
    (tmp_path / "tree").mkdir()
    (tmp_path / "tree" / "mod.py").write_text("x = 1\n")

    started = time.monotonic()
    with pytest.raises(OutOfTimeError) as caught:
        compile_tree(str(fake), tmp_path / "tree", timeout=0.5)
    assert time.monotonic() - started < 10
    message = str(caught.value)
    assert "Compiling bytecode" in message and "stopped before publishing" in message
    assert "longer timeout" in message
    assert caught.value.permanent is False  # transient: the Lambda retries
    pid = int(worker_pid.read_text())
    deadline = time.monotonic() + 5
    while not _gone(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _gone(pid), "the compiler's worker outlived the timeout"


def test_compile_tree_within_its_time_compiles(tmp_path):
    import sys

    from layer_builder.bytecode import compile_tree

    (tmp_path / "mod.py").write_text("x = 1\n")
    (tmp_path / "bad.py").write_text("def broken(:\n")
    failed = compile_tree(sys.executable, tmp_path, timeout=60)
    assert failed == [str(tmp_path / "bad.py")]
    assert (tmp_path / "__pycache__" / f"mod.cpython-{sys.version_info[0]}{sys.version_info[1]}.pyc").is_file()


def _slow_package(root: Path) -> Path:
    (root / "slow").mkdir(parents=True)
    (root / "slow" / "__init__.py").write_text("import time\ntime.sleep(30)\n")
    return root


def test_the_probe_running_out_of_the_builds_time_is_out_of_time(tmp_path):
    import sys
    import time

    import pytest
    from layer_builder.bytecode import startup_sources
    from layer_builder.errors import OutOfTimeError

    started = time.monotonic()
    with pytest.raises(OutOfTimeError, match="start-up import probe.*stopped before publishing"):
        startup_sources(sys.executable, _slow_package(tmp_path), timeout=0.5)
    assert time.monotonic() - started < 10


def test_the_probe_hitting_its_own_cap_falls_back_to_no_probe(tmp_path, monkeypatch):
    import sys

    from layer_builder import bytecode

    monkeypatch.setattr(bytecode, "PROBE_TIMEOUT", 0.5)
    tree = _slow_package(tmp_path)
    assert bytecode.startup_sources(sys.executable, tree) is None  # no deadline
    assert bytecode.startup_sources(sys.executable, tree, timeout=60) is None  # time to spare
