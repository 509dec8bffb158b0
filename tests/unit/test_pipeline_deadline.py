"""pipeline.build with a deadline: every long step gets the time left, and running out of it is
OutOfTimeError (transient) with nothing published. Uses a project without dependencies, so no
installer or index is involved."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from layer_builder import bytecode, check
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
    timeouts: dict[str, list] = {"compile": [], "probe": [], "imports": []}
    real_compile, real_probe, real_imports = bytecode.compile_tree, bytecode.startup_sources, check.check_imports
    real_fit = bytecode.fit_budget

    def compile_tree(*args, timeout=None, **kwargs):
        timeouts["compile"].append(timeout)
        return real_compile(*args, timeout=timeout, **kwargs)

    def startup_sources(*args, timeout=None, **kwargs):
        timeouts["probe"].append(timeout)
        return real_probe(*args, timeout=timeout, **kwargs)

    def check_imports(*args, timeout=None, **kwargs):
        timeouts["imports"].append(timeout)
        return real_imports(*args, timeout=timeout, **kwargs)

    def fit_budget(tree, budget, limit, find_startup):
        found = find_startup()  # a tree this small never needs ranking: run the probe anyway
        return real_fit(tree, budget, limit, lambda: found)

    for name, spy in [("compile_tree", compile_tree), ("startup_sources", startup_sources),
                      ("fit_budget", fit_budget)]:
        monkeypatch.setattr(bytecode, name, spy)
    monkeypatch.setattr(check, "check_imports", check_imports)

    deadline = time.monotonic() + 120
    result = build(BuildRequest(source=project_with(tmp_path / "proj"), output=tmp_path / "out.zip",
                                cache_dir=tmp_path / "cache", deadline=deadline))
    assert result.report.checks["imports"] == "ok: app"
    assert len(timeouts["compile"]) == 2  # the dependencies, then the project's own code
    assert len(timeouts["probe"]) == 1 and len(timeouts["imports"]) == 1
    for step, given in timeouts.items():
        for timeout in given:
            assert isinstance(timeout, float) and 0 < timeout <= 120, (step, timeout)

    # Without a deadline nothing is limited by it (the probe and import check keep their caps).
    for given in timeouts.values():
        given.clear()
    build(BuildRequest(source=project_with(tmp_path / "proj2"), output=tmp_path / "out2.zip"))
    assert timeouts == {"compile": [None, None], "probe": [None], "imports": [None]}


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
    assert not list(cache_dir.glob(".staging-*"))


def test_a_compiler_outliving_the_deadline_stops_the_build(tmp_path, monkeypatch):
    # An interpreter that hangs, as compileall can on a huge tree on a slow machine.
    fake = tmp_path / "python3.13"
    fake.write_text("#!/bin/sh\nexec sleep 10\n")
    fake.chmod(0o755)
    monkeypatch.setattr(bytecode, "find_interpreter", lambda target, environ=None: str(fake))
    output = tmp_path / "layer.zip"
    cache_dir = tmp_path / "cache"
    started = time.monotonic()
    with pytest.raises(OutOfTimeError) as caught:
        build(BuildRequest(source=project_with(tmp_path / "proj"), output=output,
                           cache_dir=cache_dir, deadline=time.monotonic() + 1.5))
    assert time.monotonic() - started < 8
    assert_out_of_time(caught, "Compiling bytecode")
    assert not output.exists()
    assert not list(cache_dir.glob(".staging-*")), "the unfinished dependencies stayed in the cache"

