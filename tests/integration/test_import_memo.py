"""The memo of import verdicts, on hermetic builds (tiny wheels on a file:// index, no network):
after one pin is bumped, only the imports that reach it run again in the sandbox; a layer that
does not import is still refused; a name an import looked for and now finds runs it again; a
tampered memo proves nothing. Assertions are on the imports the sandbox was asked to run."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import wheelhouse
from lockfactory import make_project
from wheelhouse import Wheel, lock_entry, write_code

from layer_builder.cache import DERIVED
from layer_builder.errors import TargetMismatchError
from layer_builder.lock import IndexPolicy
from layer_builder.pipeline import BuildRequest, BuildResult, build
from layer_builder.runner import _plan
from layer_builder.sandbox_local import LocalSandbox
from layer_builder.target import ARCH_MACHINE, Target

HOST_ARCH = {machine: arch for arch, machine in ARCH_MACHINE.items()}.get(os.uname().machine, "")
NO_NETWORK = {
    "HTTP_PROXY": "http://127.0.0.1:9",
    "HTTPS_PROXY": "http://127.0.0.1:9",
    "http_proxy": "http://127.0.0.1:9",
    "https_proxy": "http://127.0.0.1:9",
    "NO_PROXY": "",
    "no_proxy": "",
}
PURE = "py3-none-any"
APP = "import alpha\n"


def wheel(root: Path, name: str, version: str, code: str) -> Wheel:
    return wheelhouse.write_wheel(
        root / "wheels", name, version, PURE, {f"{name}.py": code.encode()}
    )


@pytest.fixture
def runs(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """The modules each import check of the sandbox was asked to import, in order."""
    seen: list[list[str]] = []
    real = LocalSandbox.check

    def check(self, layer_zip, spec, target, timeout):  # type: ignore[no-untyped-def]
        seen.append([item.module for item in _plan(spec)])
        return real(self, layer_zip, spec, target, timeout)

    monkeypatch.setattr(LocalSandbox, "check", check)
    return seen


def step(tmp: Path, name: str, wheels: dict[str, Wheel], cache: Path | None) -> BuildResult:
    """Build the project locked to these wheels (from an index of them) into <name>.zip.

    The same project, so the same layer name, at each step, in a directory of its own.
    """
    proj = make_project(tmp / name / "memoapp", {n: lock_entry(w) for n, w in wheels.items()})
    write_code(proj.root, {"app/__init__.py": APP})
    simple = wheelhouse.simple_index(tmp / f"index-{name}", list(wheels.values()))
    return build(
        BuildRequest(
            source=proj.root,
            output=tmp / f"{name}.zip",
            target=Target("python3.13", HOST_ARCH),
            index=IndexPolicy(override=simple.as_uri()),
            cache_dir=cache,
            environ={**os.environ, **NO_NETWORK},
        )
    )


@pytest.fixture
def base(tmp_path: Path) -> dict[str, Wheel]:
    if not HOST_ARCH:
        pytest.skip(f"Lambda has no architecture for this machine ({os.uname().machine})")
    return {
        "alpha": wheel(tmp_path, "alpha", "1.0", "import beta\nVALUE = beta.VALUE\n"),
        "beta": wheel(tmp_path, "beta", "1.0", "VALUE = 1\n"),
        "gamma": wheel(tmp_path, "gamma", "1.0", "VALUE = 3\n"),
    }


def test_a_bumped_pin_runs_only_the_imports_that_reach_it(tmp_path, base, runs):
    cache = tmp_path / "cache"
    step(tmp_path, "one", base, cache)
    assert runs == [["alpha", "beta", "gamma", "app"]]

    bumped = {**base, "gamma": wheel(tmp_path, "gamma", "1.1", "VALUE = 4\n")}
    second = step(tmp_path, "two", bumped, cache)
    assert runs[1:] == [["gamma"]], "imports that never touched gamma ran again"
    assert "3 of 4 imports proven by the memo" in second.report.checks["sandbox"]

    bumped = {**bumped, "beta": wheel(tmp_path, "beta", "1.1", "VALUE = 2\n")}
    third = step(tmp_path, "three", bumped, cache)
    # alpha and the own package import beta: they run again, gamma does not.
    assert runs[2:] == [["alpha", "beta", "app"]]
    # The same layer as a build with no cache at all, byte for byte (bytecode chosen alike).
    fresh = step(tmp_path, "four", bumped, None)
    assert third.output.read_bytes() == fresh.output.read_bytes()


def test_a_bump_that_does_not_import_is_refused(tmp_path, base, runs):
    cache = tmp_path / "cache"
    step(tmp_path, "one", base, cache)
    broken = {**base, "beta": wheel(tmp_path, "beta", "1.1", "import cgi_gone_for_good\n")}
    with pytest.raises(TargetMismatchError) as caught:
        step(tmp_path, "two", broken, cache)
    assert "cgi_gone_for_good" in str(caught.value)
    assert not (tmp_path / "two.zip").exists()


def test_an_import_that_looked_for_a_name_the_layer_now_has_runs_again(tmp_path, runs):
    if not HOST_ARCH:
        pytest.skip(f"Lambda has no architecture for this machine ({os.uname().machine})")
    optional = "try:\n    import delta\nexcept ImportError:\n    delta = None\n"
    first = {
        "alpha": wheel(tmp_path, "alpha", "1.0", optional),
        "gamma": wheel(tmp_path, "gamma", "1.0", "VALUE = 3\n"),
    }
    cache = tmp_path / "cache"
    step(tmp_path, "one", first, cache)
    # delta arrives: alpha, which looked for it before (and went on without), runs again.
    second = {**first, "delta": wheel(tmp_path, "delta", "1.0", "VALUE = 5\n")}
    step(tmp_path, "two", second, cache)
    assert "alpha" in runs[1] and "gamma" not in runs[1], runs


def test_a_tampered_import_memo_proves_nothing(tmp_path, base, runs):
    cache = tmp_path / "cache"
    step(tmp_path, "one", base, cache)
    entries = sorted((cache / DERIVED).glob("import-*"))
    assert len(entries) == 4
    for entry in entries:  # claim that nothing was touched, keeping the signature
        blob = entry.read_bytes()
        head, _, payload = blob.partition(b"\n")
        entry.write_bytes(head + b"\n" + payload.replace(b'"owners": [', b'"owners": [], "x": ['))
    bumped = {**base, "gamma": wheel(tmp_path, "gamma", "1.1", "VALUE = 4\n")}
    second = step(tmp_path, "two", bumped, cache)
    assert runs[1:] == [["alpha", "beta", "gamma", "app"]]
    assert any("failed its signature check" in w for w in second.report.warnings)
