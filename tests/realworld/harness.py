"""What the hermetic real-world traits share: a project written the way people write it, built by
the CLI from the hermetic index, and the layer imported under the target interpreter.

The fixtures (house, sandbox, run_cli) come from tests/reliability through conftest.py; they are
re-exported here too, for modules that import them by name.
"""

from __future__ import annotations

import json
import subprocess
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lockfactory import PipenvProject, make_project
from wheelhouse import lock_entry, write_code

from layer_builder import bytecode
from layer_builder.target import Target
from tests.reliability.conftest import (  # noqa: F401 (fixtures, re-exported for other modules)
    CliRun,
    House,
    Sandbox,
    archive_dir,
    house,
    run_cli,
    sandbox,
)

TARGET = Target()


def project(root: Path, house: House, code: Mapping[str, str], *, pipfile: str | None = None,
            extra: Mapping[str, Any] | None = None, **options: Any) -> PipenvProject:
    """A project locking tinypure (plus `extra` lock entries) with `code`; `pipfile`: the Pipfile's
    text as its author wrote it (the lock's hash is then made for it, as `pipenv lock` does)."""
    made = make_project(root, {"tinypure": lock_entry(house.pure), **(extra or {})}, **options)
    write_code(root, code)
    if pipfile is not None:
        made.write_pipfile(pipfile)
        made.rehash()
        made.write_lock()
    return made


@dataclass(frozen=True)
class Built:
    run: CliRun
    layer: Path
    report: dict[str, Any]

    @property
    def names(self) -> set[str]:
        with zipfile.ZipFile(self.layer) as zf:
            return set(zf.namelist())


def build(run_cli: Callable[..., CliRun], sandbox: Sandbox, source: Path, *args: str) -> Built:
    report = sandbox.out / "report.json"
    run = run_cli(source, "--report", str(report), *args)
    assert run.code == 0, run.stderr
    return Built(run, sandbox.out / "layer.zip", json.loads(report.read_text()))


def refused(run_cli: Callable[..., CliRun], sandbox: Sandbox, source: Path, *args: str) -> str:
    """The one refusal message; nothing may be left behind."""
    run = run_cli(source, *args)
    assert run.code == 2, run.stderr
    assert sandbox.leftovers() == []
    return run.problem


def imports(layer: Path, statement: str, tmp_path: Path) -> str:
    """Run `statement` under the target's interpreter with only the layer on the path, as Lambda
    would; returns what it printed."""
    python = bytecode.find_interpreter(TARGET)
    assert python, f"{TARGET.runtime}'s interpreter is needed: install Python 3.13 (pyenv)"
    opt = tmp_path / "opt"
    with zipfile.ZipFile(layer) as zf:
        zf.extractall(opt)
    code = f"import sys; sys.path[:0] = [{str(opt / 'python')!r}]\n{statement}"
    done = subprocess.run([python, "-I", "-S", "-c", code], capture_output=True, text=True,
                          timeout=60, check=False, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    return done.stdout


__all__ = ["TARGET", "Built", "CliRun", "House", "Sandbox", "archive_dir", "build", "house",
           "imports", "project", "refused", "run_cli", "sandbox", "write_code"]
