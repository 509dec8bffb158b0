"""Safe slimming of installed dependencies: only what no import at run time can need.

Removed: test suites inside packages, C/C++ headers, Cython sources, and bytecode compiled for
other Python versions. Never removed: extension modules (`.so`) and `*.dist-info`
(importlib.metadata reads it). Every removal is reported with the bytes it saved.
"""

from __future__ import annotations

import fnmatch
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

#: Directories that are test suites when they sit inside a package (never at the top level).
TEST_DIRS = frozenset({"tests", "test"})
HEADER_SUFFIXES = (".h", ".hpp", ".hh", ".hxx")
CYTHON_SUFFIXES = (".pyx", ".pxd", ".pxi")
_PYC = re.compile(r"\.cpython-(\d+)(?:\.opt-\d)?\.pyc$")
_PROTECTED = re.compile(r"(\.so(\.\d+)*|\.dist-info)$")


@dataclass(frozen=True)
class Removal:
    rule: str
    files: int
    bytes: int


def _size(path: Path) -> tuple[int, int]:
    if path.is_file():
        return 1, path.stat().st_size
    files = total = 0
    for dirpath, _, filenames in os.walk(path):
        for name in filenames:
            files += 1
            total += os.lstat(os.path.join(dirpath, name)).st_size
    return files, total


def _is_package(path: Path) -> bool:
    return (path / "__init__.py").is_file()


def _rule_for_dir(rel: Path, path: Path) -> str | None:
    if rel.name in TEST_DIRS and len(rel.parts) > 1 and _is_package(path.parent):
        return "test suites inside packages"
    return None


def _rule_for_file(rel: Path, python_tag: str, extra: tuple[str, ...]) -> str | None:
    name = rel.name
    if _PROTECTED.search(name):
        return None
    if name.endswith(HEADER_SUFFIXES):
        return "C/C++ headers"
    if name.endswith(CYTHON_SUFFIXES):
        return "Cython sources (.pyx/.pxd/.pxi)"
    match = _PYC.search(name)
    if match and match.group(1) != python_tag:
        return "bytecode for other Python versions"
    posix = rel.as_posix()
    for pattern in extra:
        if fnmatch.fnmatch(posix, pattern) or fnmatch.fnmatch(name, pattern):
            return f"project pattern {pattern}"
    return None


def slim(tree: Path, python_version: str, extra_patterns: tuple[str, ...] = ()) -> list[Removal]:
    """Remove what is safe to remove from an installed tree; returns what each rule saved."""
    tag = python_version.replace(".", "")
    saved: dict[str, list[int]] = {}

    def record(rule: str, files: int, size: int) -> None:
        entry = saved.setdefault(rule, [0, 0])
        entry[0] += files
        entry[1] += size

    for dirpath, dirnames, filenames in os.walk(tree):
        current = Path(dirpath)
        rel_dir = current.relative_to(tree)
        if any(part.endswith(".dist-info") for part in rel_dir.parts):
            dirnames[:] = []
            continue
        for name in sorted(dirnames):
            path = current / name
            rule = _rule_for_dir(rel_dir / name, path)
            if rule and not path.is_symlink():
                record(rule, *_size(path))
                shutil.rmtree(path)
                dirnames.remove(name)
        for name in filenames:
            path = current / name
            rule = _rule_for_file(rel_dir / name, tag, extra_patterns)
            if rule:
                record(rule, 1, path.lstat().st_size)
                path.unlink()
    return [Removal(rule, files, size) for rule, (files, size) in sorted(saved.items())]
