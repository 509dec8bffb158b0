"""layer_builder.slim.rule_for: leaves out only what no import can need, decided per member name."""

from __future__ import annotations

import pytest

from layer_builder.slim import TOP_LEVEL_TESTS, TEST_SUITES, rule_for

PACKAGES = frozenset({"pkg", "pkg/sub", "pkg/tests", "tests"})
KEPT = [
    "pkg/__init__.py",
    "pkg/core.py",
    "pkg/__pycache__/core.cpython-313.pyc",
    "pkg/__pycache__/core.cpython-313.opt-1.pyc",
    "pkg/_ext.cpython-313-x86_64-linux-gnu.so",
    "pkg/_abi.abi3.so",
    "pkg/testing/__init__.py",       # not a test suite: packages import their testing helpers
    "pkg/test_utils.py",
    "pkg.libs/libopenblas-r0.3.so.1",
    "pkg.libs/libgfortran.so.5.0.0",
    "nspkg/tests/helper.py",         # parent is not a package
    "pkg/py.typed",
    "pkg-1.0.dist-info/METADATA",
    "pkg-1.0.dist-info/include/api.h",
    "pkg-1.0.dist-info/tests/x.pyx",
    "six.py",
    "__pycache__/six.cpython-313.pyc",
]
REMOVED = {
    TEST_SUITES: ["pkg/tests/__init__.py", "pkg/tests/test_core.py", "pkg/tests/data/big.bin",
                  "pkg/sub/test/test_sub.py"],
    TOP_LEVEL_TESTS: ["tests/__init__.py", "tests/test_typish.py", "test/data.json"],
    "C/C++ headers": ["pkg/include/api.h", "pkg/include/detail.hpp", "pkg/src/x.hh", "pkg/src/y.hxx"],
    "C/C++ sources": ["pkg/_speedups.c", "pkg/src/arrow.cc", "pkg/src/x.cpp"],
    "Cython sources (.pyx/.pxd/.pxi)": ["pkg/_speedups.pyx", "pkg/_speedups.pxd", "pkg/inc.pxi"],
    "type stubs (.pyi, read by type checkers only)": ["pkg/_speedups.pyi"],
    "bytecode for other Python versions": [
        "pkg/__pycache__/core.cpython-312.pyc", "pkg/__pycache__/core.cpython-312.opt-2.pyc",
        "__pycache__/six.cpython-311.pyc",
    ],
}


@pytest.mark.parametrize("dest", KEPT)
def test_kept(dest):
    assert rule_for(dest, "3.13", packages=PACKAGES, distribution="pkg") is None


@pytest.mark.parametrize(("rule", "dest"), [(r, d) for r, ds in REMOVED.items() for d in ds])
def test_left_out_with_its_rule(rule, dest):
    assert rule_for(dest, "3.13", packages=PACKAGES, distribution="typish") == rule


def test_a_distribution_named_tests_keeps_its_own_package():
    assert rule_for("tests/__init__.py", "3.13", packages=PACKAGES, distribution="tests") is None


def test_extra_patterns_never_touch_binaries_or_metadata():
    extra = ("*.so", "*.md", "pkg/data/*", "*METADATA")
    assert rule_for("pkg/_ext.cpython-313-x86_64-linux-gnu.so", "3.13", extra) is None
    assert rule_for("pkg-1.0.dist-info/METADATA", "3.13", extra) is None
    assert rule_for("pkg/README.md", "3.13", extra) == "project pattern *.md"
    assert rule_for("pkg/data/x.csv", "3.13", extra) == "project pattern pkg/data/*"
