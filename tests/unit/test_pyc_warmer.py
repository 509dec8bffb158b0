"""pyc_warmer.py and import_probe's Warmer: bytecode compiled beside the import check.

The child's order and its .pyc are checked on hand-written layers; the whole loop runs in the
real probe through runner.run_check, where a module refuses to load unless its bytecode came
from the child, so the check passes only when the warmer did its work.
"""

from __future__ import annotations

import marshal
import os
import struct
import sys
from importlib import _bootstrap_external as _external
from importlib.util import MAGIC_NUMBER
from pathlib import Path

import pytest

from layer_builder import import_probe, runner
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
    # What SourceLoader.get_code checks before it uses a .pyc instead of compiling:
    details = {"name": "pkg", "path": str(pyc)}
    assert _external._classify_pyc(data, "pkg", details) == 0  # a timestamp pyc
    _external._validate_timestamp_pyc(data, int(stat.st_mtime), stat.st_size, "pkg", details)
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
# waits for that file and records every compile, and `last` refuses to have been compiled by the
# importer. The child compiles from the end of the list, so `last` is its first job.
def gate(waits_for: str) -> str:
    """A module that, when a Warmer runs, waits until the child compiled `waits_for`."""
    return f"""\
        import os, sys, time
        compiled = set()
        sys.addaudithook(lambda event, args: event == "compile" and compiled.add(args[1]))
        loader = sys.modules["_frozen_importlib_external"].FileLoader
        warmer = getattr(loader.get_data, "warmer", None)
        if warmer is not None:
            here = os.path.dirname(os.path.abspath(__file__))
            pyc = warmer.warm_path(warmer.prefix, os.path.join(here, "{waits_for}"))
            deadline = time.monotonic() + 30
            while not os.path.exists(pyc):
                if time.monotonic() > deadline:
                    raise RuntimeError("the child never compiled {waits_for}")
                time.sleep(0.01)
    """


GATED = {
    "pkg/__init__.py": "from . import gate\nfrom . import last\n",
    "pkg/gate.py": gate("last.py"),
    "pkg/last.py": """\
        import sys
        if __file__ in sys.modules["pkg.gate"].compiled:
            raise RuntimeError("compiled by the importer")
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
            # Puts broken on the child's list.
            "other/__init__.py": "import pkg.broken\nfrom . import cached\n",
            "app/__init__.py": "import pkg\nfrom pkg.missing_name import x\n",
            # Names the layer's own __pycache__, with the child or without it.
            "other/cached.py": "import os\nassert os.path.dirname(__cached__) == "
            "os.path.join(os.path.dirname(__file__), '__pycache__'), __cached__\n",
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

    assert warm.warnings == cold.warnings
    assert warm.imports == cold.imports  # the same files touched, listed, missed, used
    assert "pkg/broken.py" in warm.imports[0].touched
    assert warm.startup == cold.startup


@pytest.mark.parametrize(
    "cgroup, files, expected",
    [
        ("0::/ci/job\n", {"ci/job/cpu.max": "150000 100000\n"}, 1.5),
        ("0::/ci/job\n", {"ci/job/cpu.max": "max 100000\n", "ci/cpu.max": "100000 100000"}, 1),
        ("0::/ci/job\n", {"ci/job/cpu.max": "max 100000\n"}, None),
        (
            "3:cpu,cpuacct:/docker/x\n",
            {
                "cpu,cpuacct/docker/x/cpu.cfs_quota_us": "50000",
                "cpu,cpuacct/docker/x/cpu.cfs_period_us": "100000",
            },
            0.5,
        ),
        (
            "3:cpu,cpuacct:/docker/x\n",
            {
                "cpu,cpuacct/docker/x/cpu.cfs_quota_us": "-1",
                "cpu,cpuacct/docker/x/cpu.cfs_period_us": "100000",
            },
            None,
        ),
    ],
)
def test_a_cgroup_cpu_quota_counts_as_fewer_cpus(tmp_path, cgroup, files, expected):
    """A CI job limited to one CPU on a big host must not start the child."""
    (tmp_path / "proc" / "self").mkdir(parents=True)
    (tmp_path / "proc" / "self" / "cgroup").write_text(cgroup)
    for name, text in files.items():
        (tmp_path / "fs" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "fs" / name).write_text(text)
    affinity = len(os.sched_getaffinity(0))
    found = runner.usable_cpus(tmp_path / "proc", tmp_path / "fs")
    assert found == (affinity if expected is None else min(affinity, expected))


def test_lambda_cpus_follow_the_functions_memory():
    assert runner.lambda_cpus({"AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "3538"}) == 2
    assert runner.lambda_cpus({"AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "2048"}) < runner.WARM_CPUS
    assert runner.lambda_cpus({}) is None


# What a check without the child says, a check with it must say too (found in review).


def _both(python_dir: Path, spec: CheckSpec, timeout: float = 60):
    return [
        runner.run_check(python_dir, spec, PYTHON, timeout=timeout, environ=ENV, cpus=cpus)
        for cpus in (2, 1)
    ]


def test_a_package_that_restores_sigpipe_is_not_killed_by_the_child_leaving(tmp_path):
    """The child outlives its list: a hint written to a pipe nobody reads would be SIGPIPE."""
    python_dir = layer(
        tmp_path,
        {
            "cli/__init__.py": "import signal\nsignal.signal(signal.SIGPIPE, signal.SIG_DFL)\n"
            "import time\ntime.sleep(0.3)\n" + "".join(f"from . import m{i}\n" for i in range(30)),
            **{f"cli/m{i}.py": "import json\nX = json.dumps({'a': 1})\n" * 20 for i in range(30)},
        },
    )
    warm, cold = _both(python_dir, CheckSpec(own=("cli",), dependencies=()))
    assert warm.ok and cold.ok, warm.message


def test_warnings_turned_into_errors_fail_with_the_child_as_without_it(tmp_path):
    python_dir = layer(
        tmp_path,
        {
            "strict/__init__.py": "import warnings\nwarnings.simplefilter('error')\n",
            "pkg/__init__.py": "",
            "pkg/esc.py": "import re\nPATTERN = re.compile('\\d+')\n",  # an invalid escape
            "app/__init__.py": "import strict\nimport time\ntime.sleep(1)\nimport pkg.esc\n",
        },
    )
    spec = CheckSpec(
        own=("app",),
        dependencies=(Dependency("strict", "1", ("strict",)), Dependency("pkg", "1", ("pkg",))),
    )
    warm, cold = _both(python_dir, spec)
    assert not cold.ok and "invalid escape sequence" in cold.message
    assert (warm.ok, warm.message) == (cold.ok, cold.message)


def test_the_child_runs_no_module_of_the_layer(tmp_path):
    """A layer module named like one the child imports (struct) is not the one it gets."""
    marker = tmp_path / "ran"
    python_dir = layer(
        tmp_path,
        {
            **GATED,  # proves the child ran
            "struct.py": f"open({str(marker)!r}, 'a').write('ran')\nfrom _struct import *\n",
        },
    )
    warm, _ = _both(python_dir, CheckSpec(own=(), dependencies=(Dependency("pkg", "1", ("pkg",)),)))
    assert warm.ok, warm.message
    assert not marker.exists()


def test_the_importer_has_no_child_to_wait_for(tmp_path):
    python_dir = layer(
        tmp_path,
        {
            "app/__init__.py": """\
                import os
                while True:  # reap every child: returns at once when there are none
                    try:
                        os.wait()
                    except ChildProcessError:
                        break
            """,
        },
    )
    warm, cold = _both(python_dir, CheckSpec(own=("app",), dependencies=()), timeout=20)
    assert warm.ok and cold.ok
