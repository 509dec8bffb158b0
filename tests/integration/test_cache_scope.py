"""What the sandbox made serves only the cache scope it was made for (the service: the team).

The sandbox runs uploaded code (the import check) beside the jobs whose output is cached: its
verdicts and the bytecode it compiles. A build of another scope must never take them from the
shared cache, even for the same wheels; a build of the same scope reuses them. Here the target
is python3.12 and the builder's environment finds no python3.12, so bytecode comes from the
sandbox, as it does in the Lambda for every target but its own python3.13.
"""

from __future__ import annotations

import os
import shutil
import zipfile
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from layer_builder.pipeline import BuildRequest, build
from layer_builder.sandbox_local import LocalSandbox
from layer_builder.target import Target

pytestmark = pytest.mark.network

MIXED = Path(__file__).parents[1] / "fixtures" / "projects" / "mixed"
TARGET = Target("python3.12", "x86_64")


class CountingSandbox(LocalSandbox):
    """LocalSandbox (it finds python3.12 in pyenv), counting what the pipeline asks of it."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: Counter[str] = Counter()

    def check(self, *args: Any, **kwargs: Any) -> Any:
        self.calls["check"] += 1
        return super().check(*args, **kwargs)

    def compile(self, sources: Path, *args: Any, **kwargs: Any) -> Any:
        with zipfile.ZipFile(sources) as zf:
            self.calls["compiled files"] += len(zf.namelist())
        return super().compile(sources, *args, **kwargs)


@pytest.mark.skipif(os.uname().machine != "x86_64", reason="builds for x86_64 on its own machine")
def test_verdicts_and_sandbox_bytecode_serve_only_their_own_scope(
        tmp_path: Path, make_cache_dir: Any) -> None:
    cache = make_cache_dir(tmp_path / "cache")
    # No python3.12 for the builder itself: the sandbox compiles.
    environ = {**os.environ, "PATH": "/nonexistent", "PYENV_ROOT": str(tmp_path / "no-pyenv")}

    def run(scope: str, n: int, prefix: str = "") -> Counter[str]:
        project = Path(shutil.copytree(MIXED, tmp_path / f"p{n}" / "mixed"))
        sandbox = CountingSandbox()
        result = build(BuildRequest(source=project, output=tmp_path / f"out{n}.zip", target=TARGET,
                                    cache_dir=cache, environ=environ, sandbox=sandbox,
                                    cache_scope=scope, layer_prefix=prefix))
        assert result.report.bytecode["kept"] > 0, result.report.bytecode
        return sandbox.calls

    # `again` has another layer name, so the whole build is not simply reused (buildmemo) and
    # what is asked of the sandbox shows which of its results are.
    first, again, other = run("team-a", 1), run("team-a", 2, "again-"), run("team-b", 3)

    own = again["compiled files"]  # the project's own code is compiled on every build
    assert first["check"] == 1 and first["compiled files"] > own > 0
    assert again["check"] == 0  # the same scope: the signed verdict and bytecode are reused
    assert other == first  # another scope: checked and compiled again, never borrowed
