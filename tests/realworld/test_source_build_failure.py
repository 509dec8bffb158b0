"""Trait: an operator-allowed sdist whose C code does not compile (issue 13, item 7).

It used to exit 1 (transient), so the Lambda retried a build that can never succeed. It is a
permanent refusal now (exit 2) naming the package and the compiler's first error, with the whole
build log kept (SourceBuildError.log, for the report). The sdist is served from a file:// index
with its real sha256 in the lock; its build requirements (setuptools) come from the installer's
default index, as in the service.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
import textwrap
from pathlib import Path

import pytest
import wheelhouse
from lockfactory import make_project
from wheelhouse import Wheel, lock_entry, write_code

from layer_builder.errors import SourceBuildError
from layer_builder.sandbox_local import LocalSandbox
from layer_builder.target import Target

from .harness import build, imports, refused, run_cli, sandbox  # noqa: F401

pytestmark = pytest.mark.network

TARGET = Target("python3.13", {"x86_64": "x86_64", "aarch64": "arm64"}[os.uname().machine])
FIRST_ERROR = "error: expected ';' before '}' token"


def sdist(dest: Path, name: str, c_source: str) -> Wheel:
    """A setuptools sdist with one C extension, laid out as `python -m build --sdist` does."""
    files = {
        "pyproject.toml": f"""
            [build-system]
            requires = ["setuptools>=69"]
            build-backend = "setuptools.build_meta"
            [project]
            name = "{name}"
            version = "1.0"
        """,
        "setup.py": f"""
            from setuptools import Extension, setup
            setup(packages=["{name}"], ext_modules=[Extension("{name}._speed", ["src/speed.c"])])
        """,
        f"{name}/__init__.py": "from ._speed import answer\n",
        "src/speed.c": c_source,
        "PKG-INFO": f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n",
    }
    dest.mkdir(parents=True, exist_ok=True)
    path = dest / f"{name}-1.0.tar.gz"
    with tarfile.open(path, "w:gz") as tf:
        for member, text in files.items():
            data = textwrap.dedent(text).encode()
            info = tarfile.TarInfo(f"{name}-1.0/{member}")
            info.size, info.mtime = len(data), 315532800
            tf.addfile(info, io.BytesIO(data))
    return Wheel(name, "1.0", path)


MODULE = """
#include <Python.h>
static PyObject *answer(PyObject *self, PyObject *args) {{ return PyLong_FromLong(42){end} }}
static PyMethodDef methods[] = {{{{"answer", answer, METH_NOARGS, ""}}, {{NULL, NULL, 0, NULL}}}};
static struct PyModuleDef module = {{PyModuleDef_HEAD_INIT, "_speed", NULL, -1, methods}};
PyMODINIT_FUNC PyInit__speed(void) {{ return PyModule_Create(&module); }}
"""
BROKEN = MODULE.format(end="")  # the missing ';' is the first error
FINE = MODULE.format(end=";")


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Wheel, Wheel]:
    root = tmp_path_factory.mktemp("house")
    broken, fine = sdist(root / "dists", "brokenc", BROKEN), sdist(root / "dists", "finec", FINE)
    return wheelhouse.simple_index(root, [broken, fine]), broken, fine


def source(tmp_path: Path, dist: Wheel) -> Path:
    made = make_project(tmp_path / "project", {dist.name: lock_entry(dist)})
    return write_code(made.root, {"app/__init__.py": f"import {dist.name}\n"})


def test_a_source_build_that_does_not_compile_is_refused_naming_the_first_error(
        tmp_path, index, run_cli, sandbox):
    simple, broken, _ = index
    message = refused(run_cli, sandbox, source(tmp_path, broken), "--arch", TARGET.arch,
                      "--index-url", simple.as_uri(), "--allow-sdist", "brokenc")
    assert "Building brokenc 1.0 from source failed" in message
    assert FIRST_ERROR in message and "src/speed.c:3:" in message


def test_the_whole_build_log_is_kept_for_the_report(tmp_path, index):
    _, broken, _ = index
    with pytest.raises(SourceBuildError) as caught:
        LocalSandbox().build_sdist(broken.path, "brokenc", "1.0", TARGET, tmp_path / "wheels", timeout=300)
    assert caught.value.permanent and caught.value.kind == "source_build_failed"
    assert FIRST_ERROR in str(caught.value)
    log = caught.value.log
    assert FIRST_ERROR in log and "speed.c" in log and "setuptools" in log.lower()
    assert len(log) > len(str(caught.value))


def test_an_sdist_that_compiles_builds_and_imports_under_the_target(tmp_path, index, run_cli, sandbox):
    simple, _, fine = index
    built = build(run_cli, sandbox, source(tmp_path, fine), "--arch", TARGET.arch,
                  "--index-url", simple.as_uri(), "--allow-sdist", "finec")
    assert imports(built.layer, "import app, finec; print(finec.answer())", tmp_path).strip() == "42"


def test_the_cli_writes_the_refusal_and_its_log_to_the_report_and_shows_the_log_with_v(
        tmp_path, index, run_cli, sandbox):
    simple, broken, _ = index
    report = tmp_path / "out" / "report.json"
    run = run_cli(source(tmp_path, broken), "-v", "--arch", TARGET.arch, "--report", str(report),
                  "--index-url", simple.as_uri(), "--allow-sdist", "brokenc")
    assert run.code == 2, run.stderr
    written = json.loads(report.read_text())
    assert written["status"] == "refused"
    assert written["error"]["kind"] == "source_build_failed"
    assert FIRST_ERROR in written["error"]["log"] and "speed.c" in written["error"]["log"]
    assert "setuptools" in run.stderr.lower()  # -v: the log itself, not only the one-line message
