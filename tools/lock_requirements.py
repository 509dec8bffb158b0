"""`make lock-requirements`: the deployed functions' requirements.txt, hash-locked, from pyproject.toml.

pyproject.toml is the one source: `[tool.lock-requirements.<function directory>]` names the
dependency lists (`dependencies`, an optional-dependencies extra) the function ships whole, and
single packages taken from them. uv compiles them for the function's Python (3.13 unless set) on
x86_64 manylinux_2_34; the output lists the hash of every file of each pinned release, so arm64
installs verify too. pip then installs them in hash-checking mode during `sam build`.

The header records a digest of the inputs: tests/unit/test_requirements.py recomputes it, so a
lock older than pyproject.toml fails the suite until this is run again.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import tempfile
import tomllib
from dataclasses import dataclass
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = ROOT / "pyproject.toml"
DEFAULT_PYTHON = "3.13"
PLATFORM = "x86_64-manylinux_2_34"
COMMAND = "make lock-requirements"
DIGEST_LINE = "# inputs sha256: "


@dataclass(frozen=True)
class Inputs:
    """What one function's lock is compiled from."""

    requirements: list[str]
    python: str = DEFAULT_PYTHON

    def digest(self) -> str:
        text = "\n".join([f"python {self.python}", f"platform {PLATFORM}", *self.requirements])
        return hashlib.sha256(text.encode()).hexdigest()


def function_inputs(pyproject: Path = PYPROJECT) -> dict[str, Inputs]:
    """{function directory: what its lock is compiled from}, read from pyproject.toml."""
    data = tomllib.loads(pyproject.read_text(encoding="utf-8"))
    project = data["project"]
    lists = {"dependencies": project.get("dependencies", []),
             **project.get("optional-dependencies", {})}
    by_name = {canonicalize_name(Requirement(line).name): Requirement(line)
               for lines in lists.values() for line in lines}
    found = {}
    for directory, wanted in data["tool"]["lock-requirements"].items():
        lines = {line for name in wanted.get("lists", []) for line in lists[name]}
        for name in wanted.get("packages", []):
            requirement = by_name[canonicalize_name(name)]  # its specifier, without extras
            lines.add(f"{requirement.name}{requirement.specifier}")
        found[directory] = Inputs(sorted(lines), wanted.get("python", DEFAULT_PYTHON))
    return found


def compile_lock(inputs: Inputs, output: Path) -> None:
    header = (f"# The function's dependencies, hash-locked for python{inputs.python} on Lambda. "
              f"Do not edit: change pyproject.toml, then run `{COMMAND}`.\n"
              f"{DIGEST_LINE}{inputs.digest()}\n")
    requirements = inputs.requirements
    if not requirements:  # nothing beyond the runtime and the function's own code
        output.write_text(header, encoding="utf-8")
        return
    from uv import find_uv_bin

    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp, "requirements.in")
        source.write_text("\n".join(requirements) + "\n", encoding="utf-8")
        # --no-config: no uv.toml or pip settings of this machine change what gets locked.
        subprocess.run(
            [find_uv_bin(), "pip", "compile", str(source), "--quiet", "--no-config",
             "--generate-hashes", "--python-version", inputs.python, "--python-platform", PLATFORM,
             "--custom-compile-command", COMMAND, "--output-file", str(Path(tmp, "out.txt"))],
            check=True)
        compiled = Path(tmp, "out.txt").read_text(encoding="utf-8")
    output.write_text(header + compiled, encoding="utf-8")


def main() -> int:
    for directory, inputs in function_inputs().items():
        target = ROOT / directory / "requirements.txt"
        compile_lock(inputs, target)
        print(f"{target.relative_to(ROOT)}: {len(inputs.requirements)} inputs locked for "
              f"python{inputs.python}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
