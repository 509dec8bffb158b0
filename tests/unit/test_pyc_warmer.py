"""pyc_warmer.py and import_probe's Warmer: bytecode compiled beside the import check.

The child's order and its .pyc are checked on hand-written layers; the whole loop runs in the
real probe through runner.run_check, where a module refuses to load unless its bytecode came
from the child, so the check passes only when the warmer did its work.
"""

from __future__ import annotations

import dataclasses
import marshal
import os
import struct
import sys
from importlib.util import MAGIC_NUMBER
from pathlib import Path

import pytest

from layer_builder import bytecode, import_probe, runner
from layer_builder.sandbox import CheckSpec, Dependency
from tests.unit.test_runner import ENV, PYTHON, layer


def _warmer_module():
    path = Path(import_probe.__file__).with_name("pyc_warmer.py")
    namespace: dict = {"__name__": "pyc_warmer_under_test"}
    exec(compile(path.read_bytes(), str(path), "exec"), namespace)
    return namespace


def _child(python_dir: Path, prefix: Path, modules: list[str]):
    read, write = os.pipe()
    os.close(write)
    child = _warmer_module()["_Child"](
        str(python_dir), str(prefix), read, modules, import_probe.Warmer.warm_path
    )
    return child, read


def test_the_order_is_depth_first_from_module_level_imports_only(tmp_path):
    python_dir = layer(
        tmp_path,
        {
            "pkg/__init__.py": """\
                from . import a
                from .b import thing
                import os, json as j
                try:
                    import pkg.optional
                except ImportError:
                    pass
                def later():
                    import pkg.lazy
            """,
            "pkg/a.py": "import pkg.c\n",
            "pkg/b.py": "thing = 1\n",
            "pkg/c.py": "",
            "pkg/lazy.py": "",
            "pkg/optional.py": "",
            "other/__init__.py": "from pkg import (\n    b,\n    c,\n)\n",
            "other/deep/mod.py": "",
        },
    )
    child, read = _child(python_dir, tmp_path / "pyc", ["pkg", "other.deep.mod"])
    os.close(read)
    root = str(python_dir)
    assert [p[len(root) + 1 :] for p in child.todo] == [
        "pkg/__init__.py",
        "pkg/a.py",
        "pkg/c.py",
        "pkg/b.py",
        "other/__init__.py",
        # other/deep has no __init__.py: a namespace package, nothing to compile
    ]


def test_the_childs_bytecode_is_what_the_import_system_accepts(tmp_path):
    python_dir = layer(tmp_path, {"pkg/__init__.py": "X = 1\n", "pkg/bad.py": "def (:\n"})
    prefix = tmp_path / "pyc"
    child, read = _child(python_dir, prefix, ["pkg"])
    os.close(read)
    source = python_dir / "pkg" / "__init__.py"
    child._compile(str(source))
    child._compile(str(python_dir / "pkg" / "bad.py"))

    pyc = Path(import_probe.Warmer.warm_path(str(prefix), str(source)))
    data = pyc.read_bytes()
    stat = source.stat()
    assert data[:4] == MAGIC_NUMBER
    assert struct.unpack("<III", data[4:16]) == (0, int(stat.st_mtime), stat.st_size)
    code = marshal.loads(data[16:])
    assert code.co_filename == str(source)
    assert sorted(p.name for p in pyc.parent.iterdir()) == [pyc.name]  # none for bad.py


def test_sources_the_layer_ships_bytecode_for_or_too_big_are_left_alone(tmp_path):
    warmer = _warmer_module()
    big = "x = 1\n" * (warmer["MAX_SOURCE_BYTES"] // 6 + 1)
    python_dir = layer(tmp_path, {"pkg/__init__.py": "", "pkg/big.py": big})
    tag = sys.implementation.cache_tag
    (python_dir / "pkg" / "__pycache__").mkdir()
    (python_dir / "pkg" / "__pycache__" / f"__init__.{tag}.pyc").write_bytes(b"shipped")
    prefix = tmp_path / "pyc"
    child, read = _child(python_dir, prefix, ["pkg"])
    os.close(read)
    for name in ("__init__.py", "big.py"):
        child._compile(str(python_dir / "pkg" / name))
    assert not prefix.exists()


# The check passes only if `last` was loaded from the child's bytecode: `gate` (imported first)
# waits for that file, and `last` refuses to load from anything else. The child compiles from
# the end of the list, so `last` is its first job.
def gate(waits_for: str) -> str:
    """A module that, when a Warmer runs, waits until the child compiled `waits_for`."""
    return f"""\
        import os, sys, time
        warmer = getattr(sys.modules["_frozen_importlib_external"].cache_from_source, "__self__", None)
        if warmer is not None:
            here = os.path.dirname(os.path.abspath(__file__))
            pyc = warmer.warm_path(warmer.prefix, os.path.join(here, "{waits_for}"))
            deadline = time.monotonic() + 30
            while not os.path.exists(pyc) and time.monotonic() < deadline:
                time.sleep(0.01)
    """


GATED = {
    "pkg/__init__.py": "from . import gate\nfrom . import last\n",
    "pkg/gate.py": gate("last.py"),
    "pkg/last.py": """\
        import os, sys
        if not __cached__.startswith(os.path.dirname(os.environ["HOME"]) + os.sep + "pyc" + os.sep):
            raise RuntimeError("compiled by the importer: " + __cached__)
    """,
}


@pytest.mark.parametrize("cpus, warmed", [(2, True), (1, False), (1.16, False)])
def test_with_two_cpus_the_check_loads_bytecode_the_child_compiled(tmp_path, cpus, warmed):
    python_dir = layer(tmp_path, GATED)
    runner.read_only(python_dir)
    spec = CheckSpec(own=(), dependencies=(Dependency("pkg", "1", ("pkg",)),))
    verdict = runner.run_check(python_dir, spec, PYTHON, timeout=60, environ=ENV, cpus=cpus)
    assert verdict.ok is warmed, verdict.message
    if not warmed:
        assert "compiled by the importer" in verdict.message


def test_a_warmed_check_reports_what_an_unwarmed_one_does(tmp_path):
    """Even for a module that failed and was caught: loaded from the child's bytecode, its
    source is never opened, yet the import depended on it (the memo of verdicts must know)."""
    python_dir = layer(
        tmp_path,
        {
            "pkg/gate.py": gate("broken.py"),
            "pkg/__init__.py": "from . import gate\ntry:\n    from . import broken\nexcept RuntimeError:\n    pass\n",
            "pkg/broken.py": "raise RuntimeError('not here')\n",
            "other/__init__.py": "import pkg.broken\n",  # puts broken on the child's list
            "app/__init__.py": "import pkg\nfrom pkg.missing_name import x\n",
        },
    )
    spec = CheckSpec(
        own=("app",),
        dependencies=(Dependency("pkg", "1", ("pkg",)), Dependency("other", "1", ("other",))),
    )
    warm, cold = (
        runner.run_check(python_dir, spec, PYTHON, timeout=60, environ=ENV, cpus=cpus)
        for cpus in (2, 1)
    )
    assert warm.message == cold.message and not warm.ok

    # The same files, read as the memo of verdicts reads them (a .pyc counts as its source):
    # without the child, the importer also tried the layer's own __pycache__ first.
    def read(imports):
        return [
            dataclasses.replace(r, touched=tuple(sorted({_source(p) for p in r.touched})))
            for r in imports
        ]

    assert read(warm.imports) == read(cold.imports)
    assert "pkg/broken.py" in read(warm.imports)[0].touched
    assert warm.startup == cold.startup


def _source(path: str) -> str:
    return bytecode.pyc_source(path) if "__pycache__/" in path else path


def test_lambda_cpus_follow_the_functions_memory():
    assert runner.lambda_cpus({"AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "3538"}) == 2
    assert runner.lambda_cpus({"AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "2048"}) < runner.WARM_CPUS
    assert runner.lambda_cpus({}) is None
