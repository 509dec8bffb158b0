"""Trait 1 (issue 13): the project's own package locked as an editable path.

`pipenv install -e .` writes `serpapi = {editable = true, path = "."}` into the Pipfile and the
lock; pipenv 2024+ writes `file = "."` instead, and old pipenv named the entry after a hash
(`[packages.e1839a8] path = "."`). The builder refused all of them as "a path dependency, which
cannot be hash-verified", though it copies the project's own code anyway. A path inside the
project is own code now; a path outside is refused saying why and what to do.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from .harness import House, Sandbox, build, imports, project, refused

SERPAPI = {
    "setup.py": "from setuptools import setup\nsetup(name='serpapi', packages=['serpapi'])\n",
    "serpapi/__init__.py": "import tinypure\n\n\ndef search(q):\n    return {'q': q, 'n': tinypure.double(2)}\n",
    "tests/test_search.py": "from serpapi import search\n",
}
PIPFILE = """[[source]]
name = "pypi"
url = "${{PIP_INDEX_URL}}"
verify_ssl = true

[packages]
tinypure = "*"
{own}

[requires]
python_version = "3.13"
"""


@pytest.mark.parametrize(("own", "entry"), [
    pytest.param('serpapi = {editable = true, path = "."}', {"editable": True, "path": "."},
                 id="pipenv-install-e-dot"),
    pytest.param('serpapi = {editable = true, file = "."}', {"editable": True, "file": "."},
                 id="pipenv-2024-file-dot"),
    pytest.param('[packages.e1839a8]\npath = "."', {"path": "."}, id="old-pipenv-hash-name"),
])
def test_own_package_locked_as_editable_path_builds_and_imports(
        tmp_path: Path, sandbox: Sandbox, house: House, run_cli, own: str, entry: dict) -> None:
    name = "e1839a8" if "e1839a8" in own else "serpapi"
    root = tmp_path / "serpapi-search"
    project(root, house, SERPAPI, extra={name: entry}, pipfile=PIPFILE.format(own=own))
    built = build(run_cli, sandbox, root, "--index-url", house.url)
    assert built.report["own_packages"] == ["serpapi"]
    assert [p["name"] for p in built.report["packages"]] == ["tinypure"]  # nothing installed for it
    assert "python/serpapi/__init__.py" in built.names
    assert not [n for n in built.names if "tests/" in n or n.endswith("setup.py")]
    assert imports(built.layer, "import serpapi; print(serpapi.search('x'))", tmp_path) == (
        "{'q': 'x', 'n': 4}\n")


def test_local_package_in_a_subfolder_ships_as_own_code(
        tmp_path: Path, sandbox: Sandbox, house: House, run_cli) -> None:
    # heroku's pipenv fixture: local packages kept under packages/, each with its own setup.py
    code = {"app.py": "import local_lib\n\n\ndef handler(e, c):\n    return local_lib.VALUE\n",
            "packages/local_lib/pyproject.toml": "[project]\nname = 'local-lib'\n",
            "packages/local_lib/local_lib/__init__.py": "VALUE = 42\n",
            "packages/local_lib/tests/test_lib.py": ""}
    root = tmp_path / "svc"
    project(root, house, code, extra={"local-lib": {"editable": True, "file": "packages/local_lib"}},
            pipfile=PIPFILE.format(own='local-lib = {file = "packages/local_lib", editable = true}'))
    built = build(run_cli, sandbox, root, "--index-url", house.url)
    assert built.report["own_packages"] == ["app", "local_lib"]
    assert imports(built.layer, "import app; print(app.handler(None, None))", tmp_path) == "42\n"


@pytest.mark.parametrize(("path", "why"), [
    ("../lib", "outside the project: that code is not part of the upload and a path cannot be "
               "hash-verified. Move it into the project (e.g. ./lib: it then ships as the "
               "project's own code) or publish it to a package index and pin it with == instead"),
    ("./vendor/lib", "which is not in the upload: keep the package's folder in the project"),
])
def test_path_outside_the_upload_is_refused_saying_why_and_what_to_do(
        tmp_path: Path, sandbox: Sandbox, house: House, run_cli, path: str, why: str) -> None:
    root = tmp_path / "svc"
    project(root, house, SERPAPI, extra={"lib": {"editable": True, "path": path}},
            pipfile=PIPFILE.format(own=f'lib = {{editable = true, path = "{path}"}}'))
    (tmp_path / "lib").mkdir()  # it exists on the author's machine, beside the project
    message = refused(run_cli, sandbox, root, "--index-url", house.url)
    assert message.startswith(f"Pipfile.lock default entry 'lib' is a path dependency on {path!r}")
    assert why in message
