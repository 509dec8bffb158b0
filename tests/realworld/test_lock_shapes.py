"""More traits of real locks, met while reading public Pipfile projects beyond issue 13's table.

- Old pipenv kept the author's capitals in `default` keys ("Flask", "PyYAML").
- `markers` naming an `extra` ("extra == 'socks'"): pipenv locks what an extra pulls in; pip
  skips it at install (no extra is being installed), and so does the builder, saying so.
- A `[[source]]` with `verify_ssl = false` for a plain-http mirror.
- A private index as a second source, chosen per package with `index = "internal"` and named
  with `${PIP_EXTRA_INDEX_URL}`.
- A lock entry that is only a `file` URL (a tarball on some server): refused, saying what to do.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from lockfactory import fake_hashes
from wheelhouse import lock_entry

from tests.reliability.conftest import IndexServer

from .harness import House, Sandbox, build, imports, project, refused

APP = {"app.py": "import tinypure\n\n\ndef handler(e, c):\n    return tinypure.double(e)\n"}


def test_capitalised_names_in_default_build(
        tmp_path: Path, sandbox: Sandbox, house: House, run_cli) -> None:
    made = project(tmp_path / "svc", house, APP)
    made.lock["default"]["TinyPure"] = made.lock["default"].pop("tinypure")
    made.write_lock()
    built = build(run_cli, sandbox, made.root, "--index-url", house.url)
    assert [p["name"] for p in built.report["packages"]] == ["tinypure"]
    assert imports(built.layer, "import app; print(app.handler(4, None))", tmp_path) == "8\n"


def test_entry_pulled_in_by_an_extra_is_skipped_and_reported(
        tmp_path: Path, sandbox: Sandbox, house: House, run_cli) -> None:
    socks = {"version": "==1.7.1", "hashes": fake_hashes("pysocks", "1.7.1"), "index": "pypi",
             "markers": "python_version >= '3.7' and extra == 'socks'"}
    made = project(tmp_path / "svc", house, APP, extra={"pysocks": socks})
    built = build(run_cli, sandbox, made.root, "--index-url", house.url)
    assert built.report["skipped_by_marker"] == [{"name": "pysocks", "markers": socks["markers"]}]
    assert imports(built.layer, "import app", tmp_path) == ""


def test_source_without_ssl_verification_on_a_plain_http_mirror_builds(
        tmp_path: Path, sandbox: Sandbox, house: House, run_cli,
        monkeypatch: pytest.MonkeyPatch) -> None:
    sources = [{"name": "pypi", "url": "${PIP_INDEX_URL}", "verify_ssl": False}]
    made = project(tmp_path / "svc", house, APP, sources=sources)
    with IndexServer(house.simple.parent) as mirror:
        monkeypatch.setenv("PIP_INDEX_URL", mirror.url())
        built = build(run_cli, sandbox, made.root)
        assert mirror.seen, "the mirror was never asked"
    assert imports(built.layer, "import app; print(app.handler(1, None))", tmp_path) == "2\n"


def test_private_index_as_a_second_source_chosen_per_package(
        tmp_path: Path, sandbox: Sandbox, house: House, run_cli,
        monkeypatch: pytest.MonkeyPatch) -> None:
    sources = [{"name": "pypi", "url": "${PIP_INDEX_URL}", "verify_ssl": True},
               {"name": "internal", "url": "${PIP_EXTRA_INDEX_URL}", "verify_ssl": True}]
    made = project(tmp_path / "svc", house, APP, sources=sources,
                   extra={"tinypure": {**lock_entry(house.pure), "index": "internal"}})
    with IndexServer(house.simple.parent) as internal:
        monkeypatch.setenv("PIP_EXTRA_INDEX_URL", internal.url())
        built = build(run_cli, sandbox, made.root)
        assert [path for path, _ in internal.seen if "tinypure" in path], internal.seen
    assert imports(built.layer, "import app; print(app.handler(2, None))", tmp_path) == "4\n"


def test_entry_that_is_only_a_file_url_is_refused_saying_what_to_do(
        tmp_path: Path, sandbox: Sandbox, house: House, run_cli) -> None:
    made = project(tmp_path / "svc", house, APP, extra={
        "legacy": {"file": "https://files.example.invalid/legacy-1.0.tar.gz"}})
    message = refused(run_cli, sandbox, made.root, "--index-url", house.url)
    assert message == ("Pipfile.lock default entry 'legacy' is a file dependency, which cannot be "
                       "hash-verified: publish it to a package index and pin it with == instead.")
