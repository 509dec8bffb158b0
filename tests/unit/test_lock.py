"""layer_builder.lock: exact, hash-pinned requirements for the target, or a named refusal."""

from __future__ import annotations

import json
import re
from pathlib import Path

import plette
import pytest

from layer_builder import limits
from layer_builder.errors import LockError, ProjectError
from layer_builder.lock import IndexPolicy, LockedProject, Requirement, read_lock, relock_hint
from layer_builder.target import Target
from tests.lockfactory import ENV_SOURCE, fake_hashes, make_project, pinned

MIXED = Path(__file__).resolve().parents[1] / "fixtures" / "projects" / "mixed"
PY313 = Target("python3.13", "x86_64")
NO_ENV = IndexPolicy(environ={})


def read(root: Path, target: Target = PY313, policy: IndexPolicy = NO_ENV) -> LockedProject:
    return read_lock(root, target, policy)


# --- a real pipenv lock ---------------------------------------------------------------------

def test_pipenv_fixture_reads_for_the_target():
    locked = read(MIXED)
    assert [(r.name, r.version, r.index) for r in locked.requirements] == [
        ("markupsafe", "3.0.3", ""),
        ("six", "1.17.0", ""),
    ]
    assert locked.skipped == (("colorama", "sys_platform == 'win32'"),)
    lock = json.loads((MIXED / "Pipfile.lock").read_text())
    assert locked.lock_sha256 == lock["_meta"]["hash"]["sha256"]
    assert locked.python_version == "3.13"
    assert locked.warnings == ()
    six = locked.requirements[1]
    assert six.hashes == tuple(sorted(lock["default"]["six"]["hashes"]))
    assert six.line() == "six==1.17.0 " + " ".join(f"--hash={h}" for h in six.hashes)


def test_factory_hash_is_what_pipenv_computes():
    # The factory and pipenv (the fixture) agree on how _meta.hash is computed.
    with (MIXED / "Pipfile").open() as f:
        assert plette.Pipfile.load(f).get_hash().value == json.loads(
            (MIXED / "Pipfile.lock").read_text())["_meta"]["hash"]["sha256"]


def test_factory_project_reads(tmp_path):
    make_project(tmp_path, {"MarkupSafe": pinned("3.0.3"), "six": pinned("1.17.0")})
    locked = read(tmp_path)
    assert [r.name for r in locked.requirements] == ["markupsafe", "six"]  # canonical names
    assert all(r.hashes == tuple(fake_hashes("pkg", r.version)) for r in locked.requirements)


def test_develop_section_is_ignored(tmp_path):
    make_project(tmp_path, develop={"tool": {"git": "https://git.example/tool.git", "ref": "abc"}})
    assert [r.name for r in read(tmp_path).requirements] == ["six"]


# --- files missing, invalid or stale --------------------------------------------------------

def test_stale_lock_is_refused(tmp_path):
    project = make_project(tmp_path)
    project.packages["requests"] = pinned("2.32.3")
    project.write_pipfile()  # Pipfile changed after locking
    with pytest.raises(LockError, match=r"out of date.*run `pipenv lock`"):
        read(tmp_path)
    project.rehash()
    project.write_lock()
    read(tmp_path)  # the same lock with the new hash is accepted


def test_tampered_meta_hash_is_refused(tmp_path):
    project = make_project(tmp_path)
    project.lock["_meta"]["hash"]["sha256"] = "0" * 64
    project.write_lock()
    with pytest.raises(LockError, match="run `pipenv lock`"):
        read(tmp_path)


@pytest.mark.parametrize(
    ("tamper", "names"),
    [
        (lambda p: p.pipfile_path.unlink(), "Pipfile not found"),
        (lambda p: p.lock_path.unlink(), "Pipfile.lock not found"),
        (lambda p: p.write_pipfile("[packages\nsix = "), "Pipfile is not valid TOML"),
        (lambda p: p.write_lock("{not json"), "Pipfile.lock is not valid JSON"),
        (lambda p: p.write_lock("[]"), "Pipfile.lock has no `default`"),
        (lambda p: p.write_lock('{"_meta": {}}'), "Pipfile.lock has no `default`"),
        (lambda p: p.write_lock('{"default": {}, "develop": {}}'), "Pipfile.lock has no `_meta`"),
    ],
    ids=["no-pipfile", "no-lock", "bad-toml", "bad-json", "json-array", "no-default", "no-meta"],
)
def test_missing_or_invalid_files_name_the_file(tmp_path, tamper, names):
    project = make_project(tmp_path)
    tamper(project)
    with pytest.raises(ProjectError, match=names):
        read(tmp_path)


@pytest.mark.parametrize(("name", "fix"), [("Pipfile.lock", "re-create it with `pipenv lock`"),
                                         ("Pipfile", "keep only the packages and settings")])
def test_pipfile_or_lock_past_the_size_cap_is_refused_before_parsing(tmp_path, monkeypatch, name, fix):
    make_project(tmp_path)
    size = (tmp_path / name).stat().st_size
    monkeypatch.setattr(limits, "MAX_PROJECT_FILE_BYTES", size - 1)
    monkeypatch.setattr(json, "loads", lambda *a, **k: pytest.fail("parsed past the cap"))
    with pytest.raises(ProjectError) as caught:
        read(tmp_path)
    assert str(caught.value).startswith(f"{name} is {size:,} bytes, past the limit of {size - 1:,} "
                                        "bytes for a project file")
    assert fix in str(caught.value)


def test_lock_not_in_the_lock_format_is_a_lock_error(tmp_path):
    project = make_project(tmp_path)
    del project.lock["_meta"]["sources"]
    project.write_lock()
    with pytest.raises(LockError, match="Pipfile.lock does not match the lock format"):
        read(tmp_path)


# --- entries that cannot be installed exactly -----------------------------------------------

GOOD = pinned("1.17.0")


@pytest.mark.parametrize(
    ("entry", "reason"),
    [
        ({**GOOD, "version": "*"}, "not pinned with =="),
        ({**GOOD, "version": ">=1.16"}, "not pinned with =="),
        ({**GOOD, "version": "==1.*"}, "not pinned with =="),
        ({"hashes": GOOD["hashes"]}, "not pinned with == \\(got 'nothing'\\)"),
        ({"version": "==1.17.0"}, "has no hashes"),
        ({**GOOD, "hashes": []}, "has no hashes"),
        ({**GOOD, "hashes": ["md5:" + "0" * 32]}, "malformed hash 'md5:0+'"),
        ({**GOOD, "hashes": ["sha256:XYZ"]}, "malformed hash 'sha256:XYZ'"),
        ({**GOOD, "hashes": ["sha256:" + "A" * 64]}, "malformed hash"),
        ({**GOOD, "hashes": ["sha256:" + "0" * 64 + "\n"]}, "malformed hash"),
        ({"git": "https://git.example/six.git", "ref": "abc123"}, "git dependency"),
        ({"path": "./vendor/six"}, "path dependency"),
        ({"file": "https://files.example/six-1.17.0.tar.gz"}, "file dependency"),
        ({"editable": True, "path": "../six"}, "outside the project: .* cannot be hash-verified"),
        ({"editable": True, "git": "https://git.example/six.git"}, "git dependency"),
        ({"hg": "https://hg.example/six"}, "hg dependency"),
        ("==1.17.0", "is not a table"),
    ],
    ids=["star", "gte", "wildcard", "no-version", "no-hashes", "empty-hashes", "md5", "short",
         "uppercase", "trailing-newline", "git", "path", "file", "editable-outside", "editable-git", "hg", "string"],
)
def test_unverifiable_entries_are_refused_by_name(tmp_path, entry, reason):
    make_project(tmp_path, {"requests": pinned("2.32.3"), "six": entry})
    with pytest.raises(LockError, match=reason) as caught:
        read(tmp_path)
    assert "default entry 'six'" in str(caught.value)


INJECTED_INDEX = "--index-url file:///tmp/evil/simple"


@pytest.mark.parametrize(
    ("name", "entry", "reason"),
    [
        ("six", {**GOOD, "version": f"==1.0 --hash=sha256:{'0' * 64}\n{INJECTED_INDEX}"},
         "not a valid version"),
        ("six", {**GOOD, "version": "==1.17.0\n"}, "not a valid version"),
        ("six", {**GOOD, "version": "==not-a-version!"}, "not a valid version"),
        (f"six\n{INJECTED_INDEX}", GOOD, "not a valid package name"),
        ("-r /etc/passwd", GOOD, "not a valid package name"),
        ("six", {**GOOD, "hashes": "sha256:" + "0" * 64}, "hashes that are not a list"),
        ("six", {**GOOD, "index": ["pypi"]}, "names the index"),
    ],
    ids=["version-injects-options", "version-newline", "version-invalid", "name-injects-options",
         "name-is-an-option", "hashes-not-a-list", "index-not-a-string"],
)
def test_nothing_but_a_name_and_a_version_reaches_the_installer(tmp_path, name, entry, reason):
    """The requirements file is the installer's input: an upload must not be able to add options
    (an index of its choosing, another requirements file) through a lock entry."""
    make_project(tmp_path, {name: entry})
    with pytest.raises(LockError, match=reason):
        read(tmp_path)


def test_vcs_entry_excluded_by_marker_is_skipped_not_refused(tmp_path):
    entry = {"git": "https://git.example/w.git", "markers": "sys_platform == 'win32'"}
    make_project(tmp_path, {"winthing": entry, "six": GOOD})
    locked = read(tmp_path)
    assert [r.name for r in locked.requirements] == ["six"]
    assert locked.skipped == (("winthing", "sys_platform == 'win32'"),)


@pytest.mark.parametrize("markers", ["python_version >", "os_name = 'posix'", 5])
def test_invalid_marker_is_refused_by_name(tmp_path, markers):
    make_project(tmp_path, {"six": {**GOOD, "markers": markers}})
    with pytest.raises(LockError, match="entry 'six' has an invalid marker"):
        read(tmp_path)


def test_unknown_index_name_is_refused(tmp_path):
    make_project(tmp_path, {"six": {**GOOD, "index": "private"}})
    with pytest.raises(LockError, match="names the index 'private'.*sources \\(pypi\\)"):
        read(tmp_path)


# --- markers are evaluated for the target, never the host ------------------------------------

@pytest.mark.parametrize(
    ("markers", "target", "kept"),
    [
        ("python_version < '3.12'", Target("python3.13"), False),
        ("python_version < '3.12'", Target("python3.11"), True),
        ("python_version >= '3.12'", Target("python3.11"), False),
        ("python_full_version >= '3.13.0'", Target("python3.13"), True),
        ("sys_platform == 'win32'", Target("python3.13"), False),
        ("sys_platform == 'linux'", Target("python3.13"), True),
        ("platform_system == 'Darwin'", Target("python3.13"), False),
        ("os_name == 'nt'", Target("python3.13"), False),
        ("platform_machine == 'aarch64'", Target("python3.13", "arm64"), True),
        ("platform_machine == 'aarch64'", Target("python3.13", "x86_64"), False),
        ("platform_machine == 'x86_64'", Target("python3.13", "arm64"), False),
        ("implementation_name == 'cpython'", Target("python3.12"), True),
        ("platform_python_implementation == 'PyPy'", Target("python3.12"), False),
    ],
)
def test_markers_are_evaluated_for_the_target(tmp_path, markers, target, kept):
    make_project(tmp_path, {"six": GOOD, "extra-pkg": pinned("1.0", markers=markers)})
    locked = read(tmp_path, target)
    names = [r.name for r in locked.requirements]
    assert ("extra-pkg" in names) is kept
    assert (("extra-pkg", markers) in locked.skipped) is (not kept)


def test_host_values_never_decide(tmp_path, monkeypatch):
    import platform
    import sys

    # A marker true on any host running these tests but false on the target ...
    host = f"{sys.version_info[0]}.{sys.version_info[1]}"
    other = "python3.11" if host != "3.11" else "python3.12"
    markers = f"python_version == '{host}' and sys_platform == '{sys.platform}'"
    make_project(tmp_path, {"hostonly": pinned("1.0", markers=markers)})
    assert read(tmp_path, Target(other)).requirements == ()
    # ... and a host that pretends to be another machine changes nothing.
    monkeypatch.setattr(platform, "machine", lambda: "aarch64")
    make_project(tmp_path, {"armonly": pinned("1.0", markers="platform_machine == 'aarch64'")})
    assert read(tmp_path, Target("python3.13", "x86_64")).requirements == ()


# --- indexes --------------------------------------------------------------------------------

PRIVATE = {"name": "private", "url": "https://${IDX_USER}:${IDX_TOKEN}@pkgs.example/simple",
           "verify_ssl": True}
ENV = {"name": "pypi", "url": "${PIP_INDEX_URL}", "verify_ssl": True}


def two_index_project(tmp_path):
    return make_project(tmp_path, {"six": GOOD, "internal": pinned("0.4", index="private")},
                        sources=[ENV, PRIVATE])


def test_variables_expand_from_the_given_environ(tmp_path):
    two_index_project(tmp_path)
    environ = {"PIP_INDEX_URL": "https://mirror.example/simple", "IDX_USER": "bot", "IDX_TOKEN": "t0k"}
    locked = read(tmp_path, policy=IndexPolicy(environ=environ, allowed_env=("IDX_USER", "IDX_TOKEN")))
    assert {r.name: r.index for r in locked.requirements} == {
        "six": "https://mirror.example/simple",  # unmarked: the first source
        "internal": "https://bot:t0k@pkgs.example/simple",
    }
    assert locked.by_index() == {
        "https://mirror.example/simple": [locked.requirements[1]],
        "https://bot:t0k@pkgs.example/simple": [locked.requirements[0]],
    }


def test_dollar_var_without_braces_expands(tmp_path):
    make_project(tmp_path, sources=[{"name": "pypi", "url": "$MIRROR/simple", "verify_ssl": True}])
    policy = IndexPolicy(environ={"MIRROR": "https://m.example"}, allowed_env=("MIRROR",))
    locked = read(tmp_path, policy=policy)
    assert locked.requirements[0].index == "https://m.example/simple"


def test_unset_bare_variable_means_default_index(tmp_path):
    make_project(tmp_path)
    assert read(tmp_path, policy=IndexPolicy(environ={"OTHER": "x"})).requirements[0].index == ""
    assert read(tmp_path, policy=IndexPolicy(environ={"PIP_INDEX_URL": ""})).requirements[0].index == ""


def test_partially_unset_variables_are_refused(tmp_path):
    two_index_project(tmp_path)
    with pytest.raises(LockError, match=r"'private'.*\$\{IDX_TOKEN\}.*not set"):
        read(tmp_path, policy=IndexPolicy(environ={"IDX_USER": "bot"},
                                          allowed_env=("IDX_USER", "IDX_TOKEN")))


SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"


@pytest.mark.parametrize("url", [
    "https://${AWS_SECRET_ACCESS_KEY}@evil.invalid/simple",
    "https://evil.invalid/$AWS_SECRET_ACCESS_KEY/simple",
    "${AWS_SECRET_ACCESS_KEY}",  # bare: not quietly the default index either
    "https://${PIP_INDEX_URL}:${AWS_SECRET_ACCESS_KEY}@evil.invalid/simple",
])
def test_cli_expands_only_allowed_variables(tmp_path, url):
    make_project(tmp_path, sources=[{"name": "evil", "url": url, "verify_ssl": True}])
    environ = {"AWS_SECRET_ACCESS_KEY": SECRET, "PIP_INDEX_URL": "x"}
    with pytest.raises(LockError) as caught:
        read(tmp_path, policy=IndexPolicy(environ=environ))
    message = str(caught.value)
    assert message.startswith("Source 'evil' in Pipfile.lock uses ${AWS_SECRET_ACCESS_KEY}, "
                              "which the builder does not expand")
    assert "PIP_INDEX_URL, PIP_EXTRA_INDEX_URL, UV_INDEX_URL" in message
    assert "`layer-builder build --allow-env AWS_SECRET_ACCESS_KEY`" in message
    assert SECRET not in message


def test_refused_even_when_unset_and_allowed_names_still_expand(tmp_path):
    make_project(tmp_path, sources=[{"name": "p", "url": "https://${TEAM_TOKEN}@idx.example/simple",
                                     "verify_ssl": True}])
    with pytest.raises(LockError, match=r"\$\{TEAM_TOKEN\}, which the builder does not expand"):
        read(tmp_path, policy=IndexPolicy(environ={}))
    policy = IndexPolicy(environ={"TEAM_TOKEN": "t0k"}, allowed_env=("TEAM_TOKEN",))
    assert read(tmp_path, policy=policy).requirements[0].index == "https://t0k@idx.example/simple"


@pytest.mark.parametrize("name", ["PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "UV_INDEX_URL"])
def test_installer_variables_are_allowed_by_default(tmp_path, name):
    make_project(tmp_path, sources=[{"name": "p", "url": f"${{{name}}}", "verify_ssl": True}])
    policy = IndexPolicy(environ={name: "https://mirror.example/simple"})
    assert read(tmp_path, policy=policy).requirements[0].index == "https://mirror.example/simple"


def test_override_replaces_every_source(tmp_path):
    two_index_project(tmp_path)
    policy = IndexPolicy(override="https://proxy.example/simple", environ={}, allow_lock_urls=False)
    locked = read(tmp_path, policy=policy)
    assert {r.index for r in locked.requirements} == {"https://proxy.example/simple"}
    assert list(locked.by_index()) == ["https://proxy.example/simple"]


def test_upload_cannot_choose_a_literal_index(tmp_path):
    url = "https://user:hunter2@evil.example/simple"
    make_project(tmp_path, sources=[{"name": "evil", "url": url, "verify_ssl": True}])
    with pytest.raises(LockError, match="'evil'.*did not allow.*PIP_INDEX_URL") as caught:
        read(tmp_path, policy=IndexPolicy(environ={}, allow_lock_urls=False))
    assert "hunter2" not in str(caught.value)
    assert "***@evil.example" in str(caught.value)


def test_upload_cannot_read_the_builders_environment(tmp_path):
    secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
    url = "https://evil.example/${AWS_SECRET_ACCESS_KEY}"
    make_project(tmp_path, sources=[{"name": "evil", "url": url, "verify_ssl": True}])
    environ = {"AWS_SECRET_ACCESS_KEY": secret, "PIP_INDEX_URL": "https://mirror.example/simple"}
    with pytest.raises(LockError) as caught:
        read(tmp_path, policy=IndexPolicy(environ=environ, allow_lock_urls=False))
    assert secret not in str(caught.value)
    assert "evil.example/${AWS_SECRET_ACCESS_KEY}" in str(caught.value)


def test_upload_bare_variable_is_default_index_and_not_expanded(tmp_path):
    make_project(tmp_path, sources=[{"name": "pypi", "url": "${AWS_SECRET_ACCESS_KEY}", "verify_ssl": True}])
    environ = {"AWS_SECRET_ACCESS_KEY": "https://leak.example/s3cr3t"}
    locked = read(tmp_path, policy=IndexPolicy(environ=environ, allow_lock_urls=False))
    assert locked.requirements[0].index == ""


@pytest.mark.parametrize(("lock_python", "target", "warned"), [
    ("3.12", PY313, True), ("3.13", PY313, False), (None, PY313, False),
    ("3", PY313, False),  # "3" admits any 3.x: pipenv writes it for python_version = "3"
    ("3.13.1", PY313, False), ("3.8", PY313, True), ("2.7", PY313, True), ("3", Target("python3.10"), False),
    ("3.13", Target("python3.12"), True),
])
def test_python_version_mismatch_is_a_warning_that_says_how_to_relock(tmp_path, lock_python, target,
                                                                         warned):
    make_project(tmp_path, python_version=lock_python)
    locked = read(tmp_path, target)
    assert locked.python_version == lock_python
    assert len(locked.warnings) == int(warned)
    if warned:
        assert locked.warnings[0] == relock_hint(lock_python, target)
        assert locked.warnings[0].startswith(
            f"The lock was made for Python {lock_python} (Pipfile [requires]) and the layer is for "
            f"{target.runtime}")
        assert f"`pipenv lock --python {target.python_version}`" in locked.warnings[0]
        assert f'python_version = "{target.python_version}"' in locked.warnings[0]


def test_relock_hint_is_none_when_the_lock_fits():
    assert relock_hint(None, PY313) is None
    assert relock_hint("3.13", PY313) is None
    assert relock_hint("3", PY313) is None
    assert "Python 3.8" in relock_hint("3.8", PY313)


def test_python_full_version_alone_is_read(tmp_path):
    project = make_project(tmp_path, python_version=None)
    project.lock["_meta"]["requires"] = {"python_full_version": "3.9.18"}
    project.write_lock()
    locked = read(tmp_path)
    assert locked.python_version == "3.9.18"
    assert "made for Python 3.9.18" in locked.warnings[0]


# --- path entries: the project's own code, or refused --------------------------------------

@pytest.mark.parametrize(("path", "expected"), [
    (".", "."), ("./", "."), ("./sub", "sub"), ("sub", "sub"), ("./sub/../sub/", "sub"),
    (".\\sub", "sub"),  # as pipenv writes it on Windows
])
def test_path_inside_the_project_is_own_code_not_installed(tmp_path, path, expected):
    (tmp_path / "sub").mkdir()
    make_project(tmp_path, {"six": GOOD, "MyApp": {"editable": True, "path": path}})
    locked = read(tmp_path)
    assert [r.name for r in locked.requirements] == ["six"]
    assert locked.local_paths == (("myapp", expected),)


@pytest.mark.parametrize(("path", "reason"), [
    ("../lib", "outside the project: that code is not part of the upload and a path cannot be "
               "hash-verified. Move it into the project"),
    ("/opt/lib", "outside the project"),
    ("C:\\src\\lib", "outside the project"),
    ("./missing", "which is not in the upload: keep the package's folder in the project"),
    ("./dist/app-1.0-py3-none-any.whl", "which is a file, not the project's code"),
    ("./link", "outside the project"),  # a link pointing out of the project
])
def test_path_outside_the_project_is_refused_saying_why(tmp_path, path, reason):
    project = tmp_path / "project"
    (project / "dist").mkdir(parents=True)
    (project / "dist" / "app-1.0-py3-none-any.whl").write_bytes(b"PK")
    (tmp_path / "elsewhere").mkdir()
    (project / "link").symlink_to(tmp_path / "elsewhere")
    make_project(project, {"six": GOOD, "app": {"editable": True, "path": path}})
    with pytest.raises(LockError) as caught:
        read(project)
    message = str(caught.value)
    assert message.startswith(f"Pipfile.lock default entry 'app' is a path dependency on {path!r}")
    assert re.search(reason, message) if "\\" in reason else reason in message, message


@pytest.mark.parametrize("entry", [
    {"editable": True, "file": "."},  # pipenv 2024+
    {"path": "."},  # no editable flag, as in [packages.e1839a8] path = "."
    {"editable": True, "path": ".", "markers": "python_version >= '3.8'"},
])
def test_local_entries_in_every_spelling_are_own_code(tmp_path, entry):
    make_project(tmp_path, {"six": GOOD, "e1839a8": entry})
    assert read(tmp_path).local_paths == (("e1839a8", "."),)


@pytest.mark.parametrize("python_version", ["^3.9", "3.x", ">=3.8"])
def test_python_version_that_is_no_version_is_named(tmp_path, python_version):
    make_project(tmp_path, python_version=python_version)
    [warning] = read(tmp_path).warnings
    assert warning.startswith(f"Pipfile [requires] python_version = {python_version!r} is not a "
                              "Python version")
    assert 'python_version = "3.13"' in warning
    assert relock_hint(python_version, PY313) is None


def test_path_entry_excluded_by_marker_is_skipped(tmp_path):
    make_project(tmp_path, {"six": GOOD, "winlib": {"path": "../win", "markers": "os_name == 'nt'"}})
    assert read(tmp_path).skipped == (("winlib", "os_name == 'nt'"),)


# --- old Pipfiles ---------------------------------------------------------------------------

@pytest.mark.parametrize(("sources", "message"), [
    ([{"url": "${PIP_INDEX_URL}", "verify_ssl": True}],
     "Pipfile: the first [[source]] (url = '${PIP_INDEX_URL}') has no `name`: add a line "
     'such as name = "pypi" to it (every source needs a name and a url), then run `pipenv lock` '
     "and upload both files."),
    ([{"name": "pypi", "url": "${PIP_INDEX_URL}", "verify_ssl": True},
      {"url": "https://u:tok@private.example/simple", "verify_ssl": True}],
     "Pipfile: the second [[source]] (url = 'https://***@private.example/simple') has no "
     "`name`"),
    ([{"name": "pypi", "verify_ssl": True}],
     "Pipfile: the first [[source]] has no `url`: add a line such as url = "
     '"${PIP_INDEX_URL}"'),
    ([{"name": "pypi", "url": "${PIP_INDEX_URL}", "verify_ssl": "true"}],
     "Pipfile: the first [[source]] (url = '${PIP_INDEX_URL}') has verify_ssl = 'true': write verify_ssl = "
     "true (or false, unquoted)"),
], ids=["no-name", "second-no-name-redacted", "no-url", "verify-ssl-string"])
def test_old_pipfile_sources_name_the_table_and_what_to_add(tmp_path, sources, message):
    project = make_project(tmp_path, sources=[ENV_SOURCE])
    project.sources = sources
    project.write_pipfile()
    with pytest.raises(ProjectError) as caught:
        read(tmp_path)
    assert str(caught.value).startswith(message)


def test_lock_sources_without_a_name_name_the_position(tmp_path):
    project = make_project(tmp_path)
    project.lock["_meta"]["sources"] = [{"url": "${PIP_INDEX_URL}", "verify_ssl": True}]
    project.write_lock()
    with pytest.raises(ProjectError, match=r"^Pipfile.lock: the first source in _meta.sources \(url = "
                                           r"'\$\{PIP_INDEX_URL\}'\) has no `name`.*re-run `pipenv lock`"):
        read(tmp_path)


def test_python_version_as_a_number_says_to_quote_it(tmp_path):
    project = make_project(tmp_path)
    project.write_pipfile(project.pipfile_text().replace('python_version = "3.13"', "python_version = 3.6"))
    with pytest.raises(ProjectError, match=r'\[requires\] python_version = 3.6 is not a string: write '
                                           r'python_version = "3.6"'):
        read(tmp_path)


def test_by_index_groups_in_lock_order():
    reqs = tuple(Requirement(n, "1", ("sha256:" + "0" * 64,), i)
                 for n, i in [("a", ""), ("b", "https://x.example"), ("c", "")])
    groups = LockedProject(reqs, (), "", None).by_index()
    assert groups == {"": [reqs[0], reqs[2]], "https://x.example": [reqs[1]]}
