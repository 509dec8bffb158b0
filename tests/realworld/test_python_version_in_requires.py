"""Trait 5 (issue 13, the messages): what `[requires]` says about the Python the lock was made for.

`python_version = "3"` (pipenv's own `pipenv --three` default) admits every 3.x and must give no
"lock resolved for another Python" warning; `python_full_version` (heroku's fixtures use it) is
read the same way; a lock truly made for another Python warns, saying for which and how to
relock; `"^3.9"` (a Poetry habit) is no version at all and is named as such.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from .harness import House, Sandbox, build, imports, project

RELOCK = ('Relock for the target: set python_version = "3.13" under [requires] in the Pipfile, '
          "run `pipenv lock --python 3.13` and upload both files.")


def requires(project_, **values: str) -> None:
    """[requires] as the author wrote it, in the Pipfile and (via the hash) the lock."""
    text = project_.pipfile_text().split("[requires]")[0]
    text += "[requires]\n" + "".join(f'{k} = "{v}"\n' for k, v in values.items())
    project_.write_pipfile(text)
    project_.rehash()
    project_.lock["_meta"]["requires"] = dict(values)
    project_.write_lock()


@pytest.mark.parametrize("values", [
    pytest.param({"python_version": "3"}, id="python_version-3"),
    pytest.param({"python_full_version": "3.13.1"}, id="python_full_version-3.13.1"),
    pytest.param({"python_version": "3.13", "python_full_version": "3.13.0"}, id="both"),
])
def test_requires_that_admits_the_target_gives_no_warning(
        tmp_path: Path, sandbox: Sandbox, house: House, run_cli, values: dict[str, str]) -> None:
    made = project(tmp_path / "svc", house, {"app.py": "import tinypure\n"})
    requires(made, **values)
    built = build(run_cli, sandbox, made.root, "--index-url", house.url)
    assert not [w for w in built.report["warnings"] if "Python" in w], built.report["warnings"]
    assert imports(built.layer, "import app", tmp_path) == ""


@pytest.mark.parametrize(("values", "said"), [
    pytest.param({"python_version": "3.8"}, "The lock was made for Python 3.8 (Pipfile [requires]) "
                 "and the layer is for python3.13: packages pinned for 3.8 may not install or "
                 "import on 3.13. " + RELOCK, id="python_version-3.8"),
    pytest.param({"python_full_version": "3.10.7"}, "The lock was made for Python 3.10.7",
                 id="python_full_version-3.10.7"),
    pytest.param({"python_version": "^3.9"}, "Pipfile [requires] python_version = '^3.9' is not a "
                 "Python version, so the builder cannot tell which Python the lock was made for: "
                 'write a version such as python_version = "3.13" and run `pipenv lock`.',
                 id="python_version-caret"),
])
def test_requires_for_another_python_warns_saying_how_to_relock(
        tmp_path: Path, sandbox: Sandbox, house: House, run_cli, values: dict[str, str],
        said: str) -> None:
    made = project(tmp_path / "svc", house, {"app.py": "import tinypure\n"})
    requires(made, **values)
    built = build(run_cli, sandbox, made.root, "--index-url", house.url)
    [warning] = [w for w in built.report["warnings"] if "Python" in w]
    assert warning.startswith(said) or said in warning, warning
    assert said.split(":")[0] in built.run.stdout  # the summary shows it too
