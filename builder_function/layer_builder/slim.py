"""Safe slimming of dependencies: only what no import at run time can need, decided per member
name while a wheel is read (nothing is installed, then deleted).

Left out: test suites inside packages and a wheel's own top-level `tests`/`test` package (typish
ships one: on /opt/python it would also shadow the consumer's `tests`), C/C++ headers and sources,
Cython sources, type stubs, and bytecode compiled for other Python versions. Never left out: extension modules
(`.so`) and `*.dist-info` (importlib.metadata reads it). Every rule's savings are reported.
"""

from __future__ import annotations

import fnmatch
import re

#: Directories that are test suites: inside a package, or at the top level of a dependency.
TEST_DIRS = frozenset({"tests", "test"})
HEADER_SUFFIXES = (".h", ".hpp", ".hh", ".hxx")
#: Compiled into the extension modules at build time; nothing imports or reads them at run time.
C_SOURCE_SUFFIXES = (".c", ".cc", ".cpp", ".cxx")
CYTHON_SUFFIXES = (".pyx", ".pxd", ".pxi")
_PYC = re.compile(r"\.cpython-(\d+)(?:\.opt-\d)?\.pyc$")
_PROTECTED = re.compile(r"(\.so(\.\d+)*|\.dist-info)$")
TEST_SUITES = "test suites inside packages"
TOP_LEVEL_TESTS = "top-level test packages of dependencies"


def rule_for(
    dest: str,
    python_version: str,
    extra: tuple[str, ...] = (),
    packages: frozenset[str] = frozenset(),
    *,
    distribution: str = "",
) -> str | None:
    """The slimming rule that leaves out the file `dest` (relative to python/), or None.

    `packages` are the directories of the same wheel that hold an `__init__.py`.
    """
    # A plain split: names come from wheel._safe (no "", "." or ".." parts); pathlib took 15 %
    # of planning the heavy lock's 16 wheels (0.051-0.056 s -> 0.043-0.048 s without it).
    parts = [part for part in dest.split("/") if part]
    if parts[0].endswith(".dist-info"):
        return None
    if parts[0] in TEST_DIRS and len(parts) > 1 and distribution not in TEST_DIRS:
        return TOP_LEVEL_TESTS
    for depth in range(1, len(parts) - 1):
        if parts[depth] in TEST_DIRS and "/".join(parts[:depth]) in packages:
            return TEST_SUITES
    name = parts[-1]
    if _PROTECTED.search(name):
        return None
    if name.endswith(HEADER_SUFFIXES):
        return "C/C++ headers"
    if name.endswith(CYTHON_SUFFIXES):
        return "Cython sources (.pyx/.pxd/.pxi)"
    if name.endswith(C_SOURCE_SUFFIXES):
        return "C/C++ sources"
    if name.endswith(".pyi"):
        return "type stubs (.pyi, read by type checkers only)"
    match = _PYC.search(name)
    if match and match.group(1) != python_version.replace(".", ""):
        return "bytecode for other Python versions"
    for pattern in extra:
        if fnmatch.fnmatch(dest, pattern) or fnmatch.fnmatch(name, pattern):
            return f"project pattern {pattern}"
    return None
