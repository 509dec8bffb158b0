"""Trait 4 (issue 13): own-code detection picked the wrong modules and then blamed the Pipfile.

Each sub-case is a layout met in public Lambda projects: `src/` that is itself a package, a code
folder without `__init__.py`, test modules at the root beside a `script.py`, and a project kept
in a folder called `lambda/`. Every message about own code says what to write under
`[tool.layer-builder]`.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

from .harness import House, Sandbox, archive_dir, build, imports, project, refused


def test_src_with_init_is_a_package_not_a_src_layout(
        tmp_path: Path, sandbox: Sandbox, house: House, run_cli) -> None:
    # `from src.api import handler`; src/tinypure/ once "clashed" with the dependency tinypure.
    code = {"src/__init__.py": "", "src/api/__init__.py": "",
            "src/api/handler.py": "import tinypure\nfrom src.tinypure import shim\n\n\n"
                                  "def handle(e, c):\n    return shim(tinypure.double(e))\n",
            "src/tinypure/__init__.py": "def shim(x):\n    return x + 1\n"}
    root = tmp_path / "orders-api"
    project(root, house, code)
    built = build(run_cli, sandbox, root, "--index-url", house.url)
    assert built.report["own_packages"] == ["src"]
    out = imports(built.layer, "from src.api import handler; print(handler.handle(20, None))",
                  tmp_path)
    assert out == "41\n"


def test_code_folder_without_init_is_the_projects_code(
        tmp_path: Path, sandbox: Sandbox, house: House, run_cli) -> None:
    code = {"handlers/create.py": "import tinypure\n\n\ndef handler(e, c):\n"
                                  "    return tinypure.double(3)\n",
            "handlers/delete.py": "def handler(e, c):\n    return 'gone'\n"}
    root = tmp_path / "crud"
    project(root, house, code)
    built = build(run_cli, sandbox, root, "--index-url", house.url)
    assert built.report["own_packages"] == ["handlers"]
    assert imports(built.layer, "from handlers import create, delete\n"
                                "print(create.handler(0, 0), delete.handler(0, 0))", tmp_path) == "6 gone\n"


def test_root_tests_are_left_out_and_script_py_is_kept(
        tmp_path: Path, sandbox: Sandbox, house: House, run_cli) -> None:
    code = {"script.py": "import tinypure\n\n\ndef main():\n    return tinypure.double(5)\n",
            "test_script.py": "import pytest\n", "script_test.py": "import pytest\n",
            "conftest.py": "import pytest\n", "scripts/release.py": "import twine\n"}
    root = tmp_path / "job"
    project(root, house, code)
    built = build(run_cli, sandbox, root, "--index-url", house.url)
    assert built.report["own_packages"] == ["script"]
    assert {n for n in built.names if n.startswith("python/") and "/" not in n[7:]
            and n.endswith(".py")} == {"python/script.py", "python/tinypure.py"}
    assert imports(built.layer, "import script; print(script.main())", tmp_path) == "10\n"


def test_project_kept_in_a_lambda_folder_is_named_after_the_repository(
        tmp_path: Path, sandbox: Sandbox, house: House, run_cli) -> None:
    root = tmp_path / "serpapi-search" / "lambda"
    project(root, house, {"search.py": "import tinypure\n"})
    built = build(run_cli, sandbox, root, "--index-url", house.url)
    assert built.report["layer_name"] == "serpapi-search"


def test_lambda_zip_that_names_no_project_is_refused_saying_what_to_write(
        tmp_path: Path, sandbox: Sandbox, house: House, run_cli) -> None:
    root = tmp_path / "lambda"
    project(root, house, {"search.py": "import tinypure\n"})
    archive = archive_dir(root, tmp_path / "upload" / "lambda.zip")  # flat: no wrapping folder
    message = refused(run_cli, sandbox, archive, "--index-url", house.url)
    assert message.startswith("The layer would be named 'lambda' after the folder or archive "
                              "'lambda.zip', which names no project")
    assert '[tool.layer-builder] name = "my-service"' in message
    (root / "pyproject.toml").write_text('[project]\nname = "serpapi-search"\nversion = "1.0"\n')
    archive = archive_dir(root, tmp_path / "again" / "lambda.zip")
    assert build(run_cli, sandbox, archive, "--index-url", house.url).report["layer_name"] == (
        "serpapi-search")


def test_own_module_named_like_a_dependency_says_what_to_write(
        tmp_path: Path, sandbox: Sandbox, house: House, run_cli) -> None:
    # a vendored copy of the dependency left at the root
    root = tmp_path / "svc"
    project(root, house, {"app.py": "import tinypure\n", "tinypure.py": "def double(x): ...\n"})
    message = refused(run_cli, sandbox, root, "--index-url", house.url)
    assert message.startswith("The project's own tinypure clashes with a dependency of the same "
                              "name in the lock")
    assert '[tool.layer-builder] packages = ["app"]' in message
    (root / "pyproject.toml").write_text('[tool.layer-builder]\npackages = ["app"]\n')
    built = build(run_cli, sandbox, root, "--index-url", house.url)
    assert built.report["own_packages"] == ["app"]


def test_named_package_that_is_not_there_says_what_was_found(
        tmp_path: Path, sandbox: Sandbox, house: House, run_cli) -> None:
    root = tmp_path / "svc"
    project(root, house, {"emrlauncher/__init__.py": "", "pyproject.toml":
                          '[tool.layer-builder]\npackages = ["emr_launcher"]\n'})
    message = refused(run_cli, sandbox, root, "--index-url", house.url)
    assert message.startswith("Package 'emr_launcher' named in [tool.layer-builder] packages is "
                              "not a directory or module at the project root")
    assert 'e.g. packages = ["emrlauncher"]' in message


def test_code_only_in_a_lambda_folder_warns_and_says_what_to_do(
        tmp_path: Path, sandbox: Sandbox, house: House, run_cli) -> None:
    root = tmp_path / "svc"
    project(root, house, {"lambda/handler.py": "import tinypure\n"})
    built = build(run_cli, sandbox, root, "--index-url", house.url)
    [warning] = [w for w in built.report["warnings"] if w.startswith("No own code found")]
    assert "lambda/handler.py" in warning and "rename the folder (e.g. handlers/)" in warning
    assert built.report["own_packages"] == []
    with zipfile.ZipFile(built.layer) as zf:
        assert not [n for n in zf.namelist() if "handler" in n]
