"""Trait 8 (issue 13) and its relatives: Pipfiles and locks written by old pipenv releases.

pipenv before 2018 wrote `[[source]]` without `name`, and its locks were `pipfile-spec` 5 with
`host-environment-markers` and an empty `requires`. plette said only "Missing required field:
name"; the refusal now names the table, its position and the line to add. A spec-5 lock whose
entries are pinned with hashes builds.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from .harness import House, Sandbox, build, imports, project, refused

OLD_SOURCE = """[[source]]
url = "${PIP_INDEX_URL}"
verify_ssl = true
"""
NAMED_SOURCE = """[[source]]
name = "pypi"
url = "${PIP_INDEX_URL}"
verify_ssl = true
"""
PACKAGES = '\n[packages]\ntinypure = "*"\n\n[dev-packages]\npytest = "*"\n'


@pytest.mark.parametrize(("sources", "said"), [
    pytest.param(OLD_SOURCE, "Pipfile: the first [[source]] (url = '${PIP_INDEX_URL}') has no "
                 '`name`: add a line such as name = "pypi" to it (every source needs a name and a '
                 "url), then run `pipenv lock` and upload both files.", id="first-source-unnamed"),
    pytest.param(NAMED_SOURCE + "\n" + OLD_SOURCE.replace("${PIP_INDEX_URL}",
                                                          "https://mirror.example/simple"),
                 "Pipfile: the second [[source]] (url = 'https://mirror.example/simple') has no "
                 "`name`", id="second-source-unnamed"),
    pytest.param(NAMED_SOURCE.replace("verify_ssl = true", 'verify_ssl = "true"'),
                 "Pipfile: the first [[source]] (url = '${PIP_INDEX_URL}') has verify_ssl = "
                 "'true': write verify_ssl = true (or false, unquoted)", id="verify-ssl-quoted"),
])
def test_old_pipfile_source_is_named_by_position_with_what_to_add(
        tmp_path: Path, sandbox: Sandbox, house: House, run_cli, sources: str, said: str) -> None:
    made = project(tmp_path / "svc", house, {"app.py": "import tinypure\n"})
    made.write_pipfile(sources + PACKAGES)  # the lock's hash no longer matters: this comes first
    message = refused(run_cli, sandbox, made.root, "--index-url", house.url)
    assert message.startswith(said), message


def test_spec_5_lock_with_host_environment_markers_builds(
        tmp_path: Path, sandbox: Sandbox, house: House, run_cli) -> None:
    made = project(tmp_path / "svc", house, {"app.py": "import tinypure\n"}, python_version=None)
    made.lock["_meta"].update({"pipfile-spec": 5, "requires": {}, "host-environment-markers": {
        "implementation_name": "cpython", "implementation_version": "3.6.1", "os_name": "posix",
        "platform_machine": "x86_64", "platform_system": "Darwin", "python_full_version": "3.6.1",
        "python_version": "3.6", "sys_platform": "darwin"}})
    made.write_lock()
    built = build(run_cli, sandbox, made.root, "--index-url", house.url)
    # the host the lock was made on is not the target: its markers decide nothing
    assert not [w for w in built.report["warnings"] if "Python" in w]
    assert imports(built.layer, "import app, tinypure; print(tinypure.double(1))", tmp_path) == "2\n"
