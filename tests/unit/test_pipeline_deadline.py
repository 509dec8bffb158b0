"""pipeline.build with a deadline: every long step gets the time left, and running out of it is
OutOfTimeError (transient) with nothing published. Uses a project without dependencies, so no
installer or index is involved."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from layer_builder import bytecode
from layer_builder.sandbox_local import LocalSandbox
from layer_builder.errors import OutOfTimeError
from layer_builder.pipeline import BuildRequest, build
from tests.lockfactory import make_project


def project_with(root: Path, init: str = "VALUE = 1\n") -> Path:
    proj = make_project(root, {})
    (proj.root / "app").mkdir()
    (proj.root / "app" / "__init__.py").write_text(init)
    return proj.root


def assert_out_of_time(caught: pytest.ExceptionInfo[OutOfTimeError], step: str) -> None:
    message = str(caught.value)
    assert step in message, message
    assert "stopped before publishing" in message and "longer timeout" in message
    assert caught.value.permanent is False


def test_every_long_step_is_given_the_time_left(tmp_path, monkeypatch):
    timeouts: dict[str, list] = {"compile": [], "imports": []}
    real_compile, real_check = bytecode.compile_sources, LocalSandbox.check

    def compile_sources(*args, timeout=None, **kwargs):
        timeouts["compile"].append(timeout)
        return real_compile(*args, timeout=timeout, **kwargs)

    def sandbox_check(self, layer_zip, spec, target, timeout):
        timeouts["imports"].append(timeout)
        return real_check(self, layer_zip, spec, target, timeout)

    monkeypatch.setattr(bytecode, "compile_sources", compile_sources)
    monkeypatch.setattr(LocalSandbox, "check", sandbox_check)

    deadline = time.monotonic() + 120
    result = build(BuildRequest(source=project_with(tmp_path / "proj"), output=tmp_path / "out.zip",
                                cache_dir=tmp_path / "cache", deadline=deadline))
    assert result.report.checks["imports"] == "ok: app"
    assert len(timeouts["compile"]) == 1 and len(timeouts["imports"]) == 1
    for step, given in timeouts.items():
        for timeout in given:
            assert isinstance(timeout, float) and 0 < timeout <= 120, (step, timeout)

    # Without a deadline nothing is limited by it (the import check keeps its own cap).
    for given in timeouts.values():
        given.clear()
    build(BuildRequest(source=project_with(tmp_path / "proj2"), output=tmp_path / "out2.zip"))
    assert timeouts == {"compile": [None], "imports": [None]}


def test_an_import_check_outliving_the_deadline_stops_the_build(tmp_path):
    source = project_with(tmp_path / "proj", "import time\ntime.sleep(30)\n")
    output = tmp_path / "out" / "layer.zip"
    cache_dir = tmp_path / "cache"
    started = time.monotonic()
    with pytest.raises(OutOfTimeError) as caught:
        build(BuildRequest(source=source, output=output, cache_dir=cache_dir,
                           deadline=time.monotonic() + 3))
    assert time.monotonic() - started < 15
    assert_out_of_time(caught, "import check of app")
    assert not output.exists() and not list(output.parent.glob("*"))
    assert not list(cache_dir.rglob("*.part"))


def test_a_compiler_outliving_the_deadline_stops_the_build(tmp_path, monkeypatch):
    # An interpreter that hangs while compiling, as a huge tree can on a slow machine (the
    # import check runs on the real one).
    fake = tmp_path / "python3.13"
    fake.write_text("#!/bin/sh\nexec sleep 10\n")
    fake.chmod(0o755)
    original = bytecode.compile_sources
    monkeypatch.setattr(bytecode, "compile_sources",
                        lambda python, root, files, **options: original(str(fake), root, files,
                                                                        **options))
    output = tmp_path / "layer.zip"
    cache_dir = tmp_path / "cache"
    started = time.monotonic()
    with pytest.raises(OutOfTimeError) as caught:
        build(BuildRequest(source=project_with(tmp_path / "proj"), output=output,
                           cache_dir=cache_dir, deadline=time.monotonic() + 3))
    assert time.monotonic() - started < 10
    assert_out_of_time(caught, "Compiling bytecode")
    assert not output.exists()
    assert not list(cache_dir.rglob("*.part")), "unfinished work stayed in the cache"
