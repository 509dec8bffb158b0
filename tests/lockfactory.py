"""Pipfile + Pipfile.lock pairs built programmatically in a test's tmp dir.

`make_project()` writes a valid pair: the lock's `_meta.hash.sha256` is what pipenv computes for
the Pipfile (through plette, pipenv's own model). Tests then tamper with `project.lock` (or the
Pipfile) and call `write_lock()` / `write_pipfile()` to produce the broken variant they need.

    project = make_project(tmp_path, {"six": pinned("1.17.0")})
    project.lock["default"]["six"]["version"] = "*"
    project.write_lock()            # the hash still matches: only the entry is wrong
"""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import plette

#: The source every project here uses: pipenv keeps `${VAR}` unexpanded in the lock.
ENV_SOURCE = {"name": "pypi", "url": "${PIP_INDEX_URL}", "verify_ssl": True}


def fake_hashes(name: str, version: str, count: int = 2) -> list[str]:
    """Well-formed, deterministic sha256 hashes standing in for a release's files."""
    return sorted(
        "sha256:" + hashlib.sha256(f"{name}-{version}-{i}".encode()).hexdigest() for i in range(count)
    )


def pinned(version: str, **extra: Any) -> dict[str, Any]:
    """A lock entry as pipenv writes it: `==version`, hashes, plus markers/index/... from extra."""
    return {"version": f"=={version}", "hashes": fake_hashes("pkg", version), **extra}


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)  # a TOML basic string for the plain text used here
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return str(value)


def _pipfile_spec(entry: Any) -> Any:
    """What the Pipfile says for a lock entry: the version (or "*") plus markers and index."""
    if not isinstance(entry, dict):
        return "*"
    spec = {k: entry[k] for k in ("markers", "index") if k in entry}
    version = entry.get("version")
    spec["version"] = version if isinstance(version, str) and version else "*"
    return spec["version"] if len(spec) == 1 else spec


@dataclass
class PipenvProject:
    root: Path
    sources: list[dict[str, Any]]
    packages: dict[str, Any]
    python_version: str | None = "3.13"
    lock: dict[str, Any] = field(default_factory=dict)

    @property
    def pipfile_path(self) -> Path:
        return self.root / "Pipfile"

    @property
    def lock_path(self) -> Path:
        return self.root / "Pipfile.lock"

    def pipfile_text(self) -> str:
        lines: list[str] = []
        for source in self.sources:
            lines.append("[[source]]")
            lines += [f"{k} = {_toml_value(v)}" for k, v in source.items()]
            lines.append("")
        lines.append("[packages]")
        lines += [f"{json.dumps(name)} = {_toml_value(_pipfile_spec(e))}" for name, e in self.packages.items()]
        lines += ["", "[dev-packages]", ""]
        if self.python_version:
            lines += ["[requires]", f"python_version = {json.dumps(self.python_version)}", ""]
        return "\n".join(lines)

    def write_pipfile(self, text: str | None = None) -> None:
        self.pipfile_path.write_text(self.pipfile_text() if text is None else text, encoding="utf-8")

    def pipfile_hash(self) -> str:
        with self.pipfile_path.open(encoding="utf-8") as f:
            return plette.Pipfile.load(f).get_hash().value

    def rehash(self) -> None:
        """Make the lock match the Pipfile on disk again (as `pipenv lock` would)."""
        self.lock["_meta"]["hash"] = {"sha256": self.pipfile_hash()}

    def write_lock(self, text: str | None = None) -> None:
        payload = json.dumps(self.lock, indent=4, sort_keys=True) + "\n" if text is None else text
        self.lock_path.write_text(payload, encoding="utf-8")


def make_project(
    root: Path,
    packages: dict[str, Any] | None = None,
    *,
    sources: list[dict[str, Any]] | None = None,
    python_version: str | None = "3.13",
    develop: dict[str, Any] | None = None,
) -> PipenvProject:
    """Write a valid Pipfile and Pipfile.lock under root; `packages` are the lock's default entries."""
    root.mkdir(parents=True, exist_ok=True)
    packages = {"six": pinned("1.17.0")} if packages is None else packages
    project = PipenvProject(
        root=root,
        sources=copy.deepcopy(sources if sources is not None else [ENV_SOURCE]),
        packages=copy.deepcopy(packages),
        python_version=python_version,
    )
    project.write_pipfile()
    project.lock = {
        "_meta": {
            "hash": {"sha256": project.pipfile_hash()},
            "pipfile-spec": 6,
            "requires": {"python_version": python_version} if python_version else {},
            "sources": copy.deepcopy(project.sources),
        },
        "default": copy.deepcopy(packages),
        "develop": copy.deepcopy(develop or {}),
    }
    project.write_lock()
    return project
