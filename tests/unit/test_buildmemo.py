"""The whole-build memo: the same inputs reuse the earlier zip, anything changed or tampered
with builds again. A project without dependencies: no installer or index is involved, but the
import check and bytecode run for real."""

from __future__ import annotations

from pathlib import Path

import pytest

from layer_builder.cache import DERIVED, WHEELS
from layer_builder.pipeline import BuildRequest, build
from layer_builder.sandbox_local import LocalSandbox
from tests.lockfactory import make_project


@pytest.fixture
def checks(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Every import check the builds run (the layer zip each one was given)."""
    seen: list[Path] = []
    real = LocalSandbox.check

    def check(self, layer_zip, spec, target, timeout):  # type: ignore[no-untyped-def]
        seen.append(layer_zip)
        return real(self, layer_zip, spec, target, timeout)

    monkeypatch.setattr(LocalSandbox, "check", check)
    return seen


def project(root: Path, init: str = "VALUE = 1\n") -> Path:
    proj = make_project(root, {})
    (proj.root / "app").mkdir()
    (proj.root / "app" / "__init__.py").write_text(init)
    return proj.root


def run(source: Path, out: Path, cache: Path):  # type: ignore[no-untyped-def]
    return build(BuildRequest(source=source, output=out, cache_dir=cache)).report


def test_the_same_inputs_reuse_the_zip_and_the_report_says_so(tmp_path, checks):
    source, cache = project(tmp_path / "proj"), tmp_path / "cache"
    first = run(source, tmp_path / "one.zip", cache)
    assert first.reused == "" and len(checks) == 1
    again = run(source, tmp_path / "out" / "two.zip", cache)
    assert len(checks) == 1, "the import check ran again for identical inputs"
    assert "identical earlier build" in again.reused
    assert (tmp_path / "out" / "two.zip").read_bytes() == (tmp_path / "one.zip").read_bytes()
    assert again.zip_sha256 == first.zip_sha256 and again.content_hash == first.content_hash
    assert again.checks == first.checks and again.dependency_cache == "hit"
    assert "reuse" in again.timings and "check" not in again.timings
    assert not list(tmp_path.glob("out/.*partial"))


def test_changed_own_code_builds_again(tmp_path, checks):
    source, cache = project(tmp_path / "proj"), tmp_path / "cache"
    first = run(source, tmp_path / "one.zip", cache)
    (source / "app" / "__init__.py").write_text("VALUE = 2\n")
    second = run(source, tmp_path / "two.zip", cache)
    assert len(checks) == 2 and second.reused == ""
    assert second.content_hash != first.content_hash


def test_a_tampered_memo_is_refused_and_the_build_runs(tmp_path):
    source, cache = project(tmp_path / "proj"), tmp_path / "cache"
    first = run(source, tmp_path / "one.zip", cache)
    [memo] = (cache / DERIVED).glob("build-*")
    # Claim another zip and another report, keeping the old signature.
    blob = memo.read_bytes()
    memo.write_bytes(blob.replace(first.layer_name.encode(), b"forged-layer"))
    assert memo.read_bytes() != blob
    second = run(source, tmp_path / "two.zip", cache)
    # Built again (its import verdict is remembered apart, by the layer's content).
    assert second.reused == "" and "zip" in second.timings, "a memo failing its signature was used"
    assert second.layer_name == first.layer_name
    assert any("failed its signature check" in w for w in second.warnings), second.warnings
    assert (tmp_path / "two.zip").read_bytes() == (tmp_path / "one.zip").read_bytes()


def test_a_tampered_zip_is_refused_and_the_build_runs(tmp_path):
    source, cache = project(tmp_path / "proj"), tmp_path / "cache"
    first = run(source, tmp_path / "one.zip", cache)
    stored = cache / WHEELS / f"{first.zip_sha256}.zip"
    stored.unlink()  # it may be a hard link of one.zip: edit a copy of its own
    stored.write_bytes((tmp_path / "one.zip").read_bytes() + b"tampered")
    second = run(source, tmp_path / "two.zip", cache)
    assert second.reused == "" and "zip" in second.timings
    assert any("did not match its sha256" in w for w in second.warnings), second.warnings
    assert (tmp_path / "two.zip").read_bytes() == (tmp_path / "one.zip").read_bytes()
