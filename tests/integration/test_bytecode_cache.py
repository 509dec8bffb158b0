"""The bytecode cache is shared by every build of a wheel: one project's crafted dependency must
not make another team's layer ship without the bytecode of a wheel they share.

Team A pins `aaevil` (hash-verified, crafted by its author) beside `victim`; team B pins only
`victim`; both build through one cache, as the builder's teams do. Hermetic: a file:// index
of wheels made here (tests/wheelhouse.py).
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import pytest

from layer_builder import bytecode
from layer_builder.lock import IndexPolicy
from layer_builder.pipeline import BuildRequest, BuildResult, build
from layer_builder.target import ARCH_MACHINE, Target
from tests import wheelhouse
from tests.lockfactory import make_project
from tests.wheelhouse import lock_entry, write_code

ARCH = {machine: arch for arch, machine in ARCH_MACHINE.items()}[os.uname().machine]
VICTIM = {f"victim/m{i}.py" if i else "victim/__init__.py": b"V = 1\n" for i in range(6)}
#: compile() raises RecursionError on it (not a SyntaxError).
DEEP = ("x = 1" + "+1" * 200_000 + "\n").encode()


@pytest.fixture
def teams(tmp_path: Path):  # type: ignore[no-untyped-def]
    wheels = tmp_path / "wheels"
    evil = wheelhouse.write_wheel(
        wheels, "aaevil", "1.0", "py3-none-any", {"aaevil/__init__.py": b"X = 1\n", "aaevil/deep.py": DEEP}
    )
    victim = wheelhouse.write_wheel(wheels, "victim", "1.0", "py3-none-any", VICTIM)
    simple = wheelhouse.simple_index(tmp_path, [evil, victim])
    cache = tmp_path / "shared-cache"

    def run(name: str, packages: dict, code: dict[str, str]) -> tuple[BuildResult, list[str]]:
        proj = make_project(tmp_path / name, packages)
        write_code(proj.root, code)
        out = tmp_path / f"{name}.zip"
        result = build(BuildRequest(source=proj.root, output=out, target=Target("python3.13", ARCH),
                                    index=IndexPolicy(override=simple.as_uri()), cache_dir=cache))
        with zipfile.ZipFile(out) as zf:
            pycs = sorted(n for n in zf.namelist() if n.endswith(".pyc") and "/victim/" in n)
        return result, pycs

    def team_a() -> tuple[BuildResult, list[str]]:
        return run("team-a", {"aaevil": lock_entry(evil), "victim": lock_entry(victim)},
                   {"appa/__init__.py": "import aaevil, victim\n"})

    def team_b() -> tuple[BuildResult, list[str]]:
        return run("team-b", {"victim": lock_entry(victim)}, {"appb/__init__.py": "import victim\n"})

    return team_a, team_b


def test_a_source_that_breaks_the_compiler_fails_alone(teams) -> None:  # type: ignore[no-untyped-def]
    team_a, team_b = teams
    result, pycs = team_a()
    assert len(pycs) == len(VICTIM)
    assert any("1 source files do not compile" in w and "aaevil/deep.py" in w
               for w in result.report.warnings)
    _, pycs = team_b()
    assert len(pycs) == len(VICTIM)


def test_what_a_dying_compiler_never_reached_is_not_remembered_as_failing(
    teams, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    """A compiler that dies after its first source (as one a source crashes would): team A
    ships less bytecode this once, with a warning; team B's build compiles victim again."""
    team_a, team_b = teams
    dies = bytecode._COMPILER.replace(
        "for rel in open(listing, encoding=\"utf-8\").read().splitlines():",
        "for rel in open(listing, encoding=\"utf-8\").read().splitlines()[:1]:",
    ) + "os.kill(os.getpid(), 9)\n"
    assert dies != bytecode._COMPILER + "os.kill(os.getpid(), 9)\n"
    monkeypatch.setattr(bytecode, "_COMPILER", dies)
    result, pycs = team_a()
    assert len(pycs) < len(VICTIM)
    assert any("compiler stopped before its last source" in w for w in result.report.warnings)
    monkeypatch.undo()
    _, pycs = team_b()
    assert len(pycs) == len(VICTIM)


def test_a_layer_near_the_limit_checks_with_the_bytecode_other_builds_cached(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Team X's build caches every pyc of `pure`; team Y's layer (pure and a data wheel, filling
    the limit) is checked on a candidate carrying them all: more than the limit, and no reason
    to refuse it. Limits scaled down to 1.5 MB (the candidate's cap follows: twice the limit)."""
    from layer_builder import extract, limits

    limit = 1_500_000
    monkeypatch.setattr(limits, "MAX_UNZIPPED_BYTES", limit)
    # The candidate's cap, scaled with the limit as extract.MAX_CANDIDATE_BYTES is set from it.
    cap = extract.MAX_CANDIDATE_BYTES * limit // extract.limits.MAX_UNZIPPED_BYTES
    monkeypatch.setitem(extract.extract_entries.__kwdefaults__, "max_bytes", cap)
    wheels = tmp_path / "wheels"
    code = "".join(f"def f{j}(): return {j}\n" for j in range(400)).encode()
    pure = wheelhouse.write_wheel(
        wheels, "pure", "1.0", "py3-none-any",
        {"pure/__init__.py": b"V = 1\n", **{f"pure/m{i}.py": code for i in range(20)}},
    )
    blob = wheelhouse.write_wheel(
        wheels, "blob", "1.0", "py3-none-any",
        {"blob/__init__.py": b"", "blob/data.bin": os.urandom(limit - 64 * 1024 - 260_000)},
    )
    simple = wheelhouse.simple_index(tmp_path, [pure, blob])

    def run(name: str, packages: dict, app: str) -> BuildResult:
        proj = make_project(tmp_path / name, packages)
        write_code(proj.root, {f"{app}/__init__.py": "import pure\n"})
        with (proj.root / "pyproject.toml").open("a") as f:
            f.write("\n[tool.layer-builder]\nheadroom = 0\n")
        return build(BuildRequest(source=proj.root, output=tmp_path / f"{name}.zip",
                                  target=Target("python3.13", ARCH),
                                  index=IndexPolicy(override=simple.as_uri()),
                                  cache_dir=tmp_path / "shared-cache"))

    team_x = run("team-x", {"pure": lock_entry(pure)}, "appx")
    assert team_x.report.bytecode["kept"] == 22  # pure's 21 and appx's: all cached now
    team_y = run("team-y", {"pure": lock_entry(pure), "blob": lock_entry(blob)}, "appy")
    assert team_y.report.checks["imports"] == "ok: appy"
    assert team_y.report.unzipped_bytes <= limit
