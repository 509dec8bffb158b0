"""layer_builder.slim: removes only what no import can need, and reports exactly what it saved."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from layer_builder.slim import Removal, slim

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
    "tests/test_top.py",             # top-level dir: may be a real package of that name
    "test/__init__.py",
    "nspkg/tests/helper.py",         # parent is not a package
    "pkg-1.0.dist-info/METADATA",
    "pkg-1.0.dist-info/RECORD",
    "pkg-1.0.dist-info/include/api.h",
    "pkg-1.0.dist-info/tests/x.pyx",
    "pkg-1.0.dist-info/licenses/README.md",
    "six.py",
    "__pycache__/six.cpython-313.pyc",
]
REMOVED = {
    "test suites inside packages": [
        "pkg/tests/__init__.py", "pkg/tests/test_core.py", "pkg/tests/data/big.bin",
        "pkg/sub/test/test_sub.py",
    ],
    "C/C++ headers": ["pkg/include/api.h", "pkg/include/detail.hpp", "pkg/src/x.hh", "pkg/src/y.hxx"],
    "Cython sources (.pyx/.pxd/.pxi)": ["pkg/_speedups.pyx", "pkg/_speedups.pxd", "pkg/inc.pxi"],
    "bytecode for other Python versions": [
        "pkg/__pycache__/core.cpython-312.pyc", "pkg/__pycache__/core.cpython-312.opt-2.pyc",
        "__pycache__/six.cpython-311.pyc",
    ],
}
PACKAGE_MARKERS = ["pkg/sub/__init__.py"]


def build_tree(root: Path, paths: list[str]) -> Path:
    for i, rel in enumerate(sorted(paths)):
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(os.urandom(17 + 31 * i))  # every file a different size
    return root


def inventory(root: Path) -> dict[str, int]:
    return {p.relative_to(root).as_posix(): p.lstat().st_size
            for p in root.rglob("*") if p.is_file() or p.is_symlink()}


@pytest.fixture
def tree(tmp_path):
    removed = [p for paths in REMOVED.values() for p in paths]
    return build_tree(tmp_path / "site", KEPT + PACKAGE_MARKERS + removed)


def test_removes_only_what_is_safe(tree):
    before = inventory(tree)
    removals = slim(tree, "3.13")
    after = inventory(tree)
    assert sorted(after) == sorted(KEPT + PACKAGE_MARKERS)
    assert not (tree / "pkg" / "tests").exists() and not (tree / "pkg" / "sub" / "test").exists()
    assert {r.rule for r in removals} == set(REMOVED)
    for removal in removals:
        paths = REMOVED[removal.rule]
        assert removal == Removal(removal.rule, len(paths), sum(before[p] for p in paths))
    assert sum(r.bytes for r in removals) == sum(before.values()) - sum(after.values())
    assert sum(r.files for r in removals) == len(before) - len(after)


def test_bytecode_of_the_target_version_is_what_stays(tmp_path):
    tree = build_tree(tmp_path, ["m/__init__.py", "m/__pycache__/a.cpython-312.pyc",
                                 "m/__pycache__/a.cpython-313.pyc", "m/__pycache__/a.pypy310.pyc"])
    (removal,) = slim(tree, "3.12")
    assert removal.rule == "bytecode for other Python versions" and removal.files == 1
    assert sorted(inventory(tree)) == ["m/__init__.py", "m/__pycache__/a.cpython-312.pyc",
                                       "m/__pycache__/a.pypy310.pyc"]


def test_extra_patterns_never_touch_binaries_or_metadata(tmp_path):
    tree = build_tree(tmp_path, [
        "pkg/__init__.py", "pkg/README.md", "pkg/docs/guide.txt", "pkg/data/keep.txt",
        "pkg/_ext.so", "pkg/libx.so.1", "pkg-1.0.dist-info/README.md", "pkg-1.0.dist-info/RECORD",
    ])
    before = inventory(tree)
    removals = slim(tree, "3.13", ("*.md", "pkg/docs/*", "*.so", "*.so.*", "*RECORD"))
    assert sorted(inventory(tree)) == ["pkg-1.0.dist-info/README.md", "pkg-1.0.dist-info/RECORD",
                                       "pkg/__init__.py", "pkg/_ext.so", "pkg/data/keep.txt",
                                       "pkg/libx.so.1"]
    assert removals == [
        Removal("project pattern *.md", 1, before["pkg/README.md"]),
        Removal("project pattern pkg/docs/*", 1, before["pkg/docs/guide.txt"]),
    ]


def test_symlinks_are_unlinked_not_followed(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious.h").write_text("keep me")
    (outside / "tests").mkdir()
    tree = build_tree(tmp_path / "site", ["pkg/__init__.py"])
    (tree / "pkg" / "link.h").symlink_to(outside / "precious.h")
    (tree / "pkg" / "tests").symlink_to(outside / "tests", target_is_directory=True)
    removals = slim(tree, "3.13")
    assert (outside / "precious.h").read_text() == "keep me" and (outside / "tests").is_dir()
    assert not (tree / "pkg" / "link.h").is_symlink()
    assert (tree / "pkg" / "tests").is_symlink()  # a linked dir is left alone
    assert removals == [Removal("C/C++ headers", 1, len(str(outside / "precious.h")))]


def test_nothing_to_remove(tmp_path):
    tree = build_tree(tmp_path, ["pkg/__init__.py", "pkg/_x.so"])
    assert slim(tree, "3.13") == []
    assert sorted(inventory(tree)) == ["pkg/__init__.py", "pkg/_x.so"]
