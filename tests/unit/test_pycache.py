"""pycache: which sources get bytecode, and a compile that runs beside the import check when
every source fits whatever the order (a project without dependencies: no index involved)."""

from __future__ import annotations

import os
import threading
import zipfile
from pathlib import Path

import pytest

from layer_builder import bytecode, pycache
from layer_builder.pipeline import BuildRequest, build
from layer_builder.sandbox_local import LocalSandbox
from tests.lockfactory import make_project

FILES = [("a/__init__.py", 100), ("a/b/deep.py", 300), ("z.py", 200), ("data.bin", 5000)]


def test_choose_keeps_start_up_sources_first_within_the_room() -> None:
    assert pycache.choose(FILES, set(), 1000, "auto", {}) == ["z.py", "a/__init__.py", "a/b/deep.py"]
    assert pycache.choose(FILES, {"a/b/deep.py"}, 450, "auto", {}) == ["a/b/deep.py", "a/__init__.py"]
    assert pycache.choose(FILES, set(), 0, "all", {}) == ["z.py", "a/__init__.py", "a/b/deep.py"]


def test_every_source_fits_whatever_the_order_only_with_room_for_all() -> None:
    assert pycache.whole_order(FILES, 600, "auto") == ["z.py", "a/__init__.py", "a/b/deep.py"]
    assert pycache.whole_order(FILES, 599, "auto") is None  # then start-up order matters
    assert pycache.whole_order(FILES, 0, "all") == ["z.py", "a/__init__.py", "a/b/deep.py"]


def _project(root: Path, headroom: int | None = None) -> Path:
    proj = make_project(root, {})
    (proj.root / "app").mkdir()
    (proj.root / "app" / "__init__.py").write_text("from app import core\n")
    (proj.root / "app" / "core.py").write_text("VALUE = 1\n")
    if headroom is not None:
        with (proj.root / "pyproject.toml").open("a") as f:
            f.write(f"\n[tool.layer-builder]\nheadroom = {headroom}\n")
    return proj.root


@pytest.fixture
def timeline(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """When the import check and the compiler start and end, in order."""
    events: list[str] = []
    lock = threading.Lock()
    real_check, real_compile = LocalSandbox.check, bytecode.compile_sources

    def check(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        with lock:
            events.append("check starts")
        compile_thread = next((t for t in threading.enumerate() if t.name == "compile"), None)
        if compile_thread is not None:  # the check waits for the compile to be done, so the
            compile_thread.join(30)  # overlap is certain, not a race the test may lose
        try:
            return real_check(self, *args, **kwargs)
        finally:
            with lock:
                events.append("check ends")

    def compile_sources(*args, **kwargs):  # type: ignore[no-untyped-def]
        with lock:
            events.append("compile starts")
            events.append(f"processes {kwargs.get('processes')}")
        return real_compile(*args, **kwargs)

    monkeypatch.setattr(LocalSandbox, "check", check)
    monkeypatch.setattr(bytecode, "compile_sources", compile_sources)
    monkeypatch.setattr(bytecode, "usable_cpus", lambda: 2)
    return events


def _pycs(path: Path) -> list[str]:
    with zipfile.ZipFile(path) as zf:
        return sorted(n for n in zf.namelist() if n.endswith(".pyc"))


def test_a_small_layer_compiles_while_the_check_runs(tmp_path: Path, timeline: list[str]) -> None:
    result = build(BuildRequest(source=_project(tmp_path / "p"), output=tmp_path / "out.zip"))
    assert timeline.index("compile starts") < timeline.index("check ends")
    assert "processes 1" in timeline  # of two CPUs, one is the check's
    assert len(_pycs(tmp_path / "out.zip")) == 2
    assert result.report.bytecode["kept"] == 2 and result.report.bytecode["startup_kept"] == 2


def test_without_room_for_every_source_the_compile_waits_for_the_check(
    tmp_path: Path, timeline: list[str]
) -> None:
    # A headroom that leaves 15 bytes for bytecode: room for core.py's (estimated at its 10
    # bytes of source), not for both: the start-up list decides what is kept.
    from layer_builder import limits

    unzipped = len("from app import core\n") + len("VALUE = 1\n")
    tight = limits.MAX_UNZIPPED_BYTES - limits.MANIFEST_ALLOWANCE - unzipped - 15
    result = build(BuildRequest(source=_project(tmp_path / "p", tight), output=tmp_path / "out.zip"))
    assert "compile starts" not in timeline[: timeline.index("check ends")]
    assert "processes 2" in timeline  # alone: both CPUs
    assert result.report.bytecode["kept"] < 2


def test_a_failed_check_stops_the_compile_at_once(tmp_path: Path, monkeypatch) -> None:
    """The compiler takes 60 s here; the build's refusal must not wait for it, and leave no
    thread or process of it behind."""
    import time

    from layer_builder.errors import TargetMismatchError

    monkeypatch.setattr(bytecode, "_COMPILER", "import time; time.sleep(60)\n" + bytecode._COMPILER)
    root = _project(tmp_path / "p")
    (root / "app" / "__init__.py").write_text("import not_in_the_layer\n")
    started = time.monotonic()
    with pytest.raises(TargetMismatchError):
        build(BuildRequest(source=root, output=tmp_path / "out.zip"))
    assert time.monotonic() - started < 20
    assert not [t for t in threading.enumerate() if t.name == "compile"]
    assert not [p for p in Path("/proc").iterdir() if p.name.isdigit() and _parent(p) == os.getpid()]
    assert not (tmp_path / "out.zip").exists()


def _parent(proc: Path) -> int:
    try:
        return int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return -1


def test_ctrl_c_while_the_build_waits_for_the_compile_stops_it(tmp_path: Path, monkeypatch) -> None:
    """The compiler runs in a session of its own (the terminal's ^C never reaches it): the
    build must stop it itself, also when the interrupt comes while it waits in finish()."""
    import signal
    import time

    monkeypatch.setattr(bytecode, "_COMPILER", "import time; time.sleep(60)\n" + bytecode._COMPILER)
    real_finish = pycache.Compilation.finish

    def finish(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        threading.Timer(1.0, lambda: os.kill(os.getpid(), signal.SIGINT)).start()  # the user
        return real_finish(self, *args, **kwargs)

    monkeypatch.setattr(pycache.Compilation, "finish", finish)
    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        build(BuildRequest(source=_project(tmp_path / "p"), output=tmp_path / "out.zip"))
    assert time.monotonic() - started < 20
    assert not [t for t in threading.enumerate() if t.name == "compile"]
    assert not [p for p in Path("/proc").iterdir() if p.name.isdigit() and _parent(p) == os.getpid()]
