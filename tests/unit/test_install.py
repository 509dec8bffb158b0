"""layer_builder.install: installer output classified, environment scrubbed, exact flags.

No real installs: the Installer gets a fake `runner` that records each command, its environment
and the requirements file it was given, and answers with installer output captured from uv 0.13
and pip 26 against a local index.
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from layer_builder import install
from layer_builder.errors import (
    ConfigurationError,
    DiskFullError,
    HashMismatchError,
    IndexUnreachableError,
    LayerBuildError,
    NoWheelError,
    OutOfTimeError,
    PackageNotFoundError,
)
from layer_builder.lock import redact
from layer_builder.install import (
    PASSTHROUGH_ENV,
    Installer,
    classify_failure,
    installer_environment,
)
from layer_builder.lock import LockedProject, Requirement
from layer_builder.target import Target

H = "sha256:" + "ab" * 32


def req(name: str, version: str = "1.0", index: str = "") -> Requirement:
    return Requirement(name, version, (H,), index)


PYYAML = req("pyyaml", "6.0.3")
SIX = req("six", "1.17.0")
REQS = [PYYAML, SIX, req("typing-extensions", "4.15.0"), req("zope-interface", "8.0")]
X86 = Target("python3.13", "x86_64")
ARM = Target("python3.13", "arm64")

# --- installer output, as uv 0.13.9 and pip 26.3 print it ------------------------------------

UV_HASH = """error: Failed to download `pyyaml==6.0.3`
  cause: Hash mismatch for `pyyaml==6.0.3`

         Expected:
           sha256:0000000000000000000000000000000000000000000000000000000000000000

         Computed:
           sha256:3257d3b7bb569e9d43474ec11d52c08c042d5ba8d98ee77f4f3710d3e37c589f
"""
UV_SDIST_ONLY = """error: No solution found when resolving dependencies
  cause: Because pyyaml==6.0.3 has no usable wheels and you require pyyaml==6.0.3, we can conclude that your requirements are unsatisfiable.

hint: Wheels are required for `pyyaml` because building from source is disabled for all packages (i.e., with `--no-build`)
"""
UV_OTHER_PLATFORM = """error: No solution found when resolving dependencies
  cause: Because pyyaml==6.0.3 has no wheels with a matching platform tag (e.g., `manylinux_2_34_aarch64`) and you require pyyaml==6.0.3, we can conclude that your requirements are unsatisfiable.

hint: Wheels are available for `pyyaml` (v6.0.3) on the following platform: `win_amd64`
"""
UV_NOT_FOUND = """error: No solution found when resolving dependencies
  cause: Because six was not found in the package registry and you require six==1.17.0, we can conclude that your requirements are unsatisfiable.
"""
UV_NO_VERSION = """error: No solution found when resolving dependencies
  cause: Because there is no version of six==1.17.0 and you require six==1.17.0, we can conclude that your requirements are unsatisfiable.
"""
UV_UNAUTHORIZED = """error: No solution found when resolving dependencies
  cause: Because six was not found in the package registry and you require six==1.17.0, we can conclude that your requirements are unsatisfiable.

hint: An index URL (http://127.0.0.1:18767/simple) could not be queried due to a lack of valid authentication credentials (401 Unauthorized)
"""
UV_REFUSED = """error: Request failed after 3 retries in 7.0s
  cause: Failed to fetch: http://bot:t0ps3cret@127.0.0.1:9/simple/six/
  cause: error sending request for url (http://bot:t0ps3cret@127.0.0.1:9/simple/six/)
  cause: client error (Connect)
  cause: tcp connect error
  cause: Connection refused (os error 111)
"""
UV_DNS = """error: Request failed after 3 retries in 9.2s
  cause: Failed to fetch: http://index.invalid/simple/six/
  cause: error sending request for url (http://index.invalid/simple/six/)
  cause: client error (Connect)
  cause: dns error
  cause: error resolving DNS
  cause: failed to lookup address information: Name or service not known
"""
UV_503 = """error: Request failed after 3 retries in 9.0s
  cause: Failed to fetch: http://127.0.0.1:18766/simple/six/
  cause: HTTP status server error (503 Service Unavailable) for url (http://127.0.0.1:18766/simple/six/)
"""
UV_DISK = """error: Failed to install: six-1.17.0-py2.py3-none-any.whl (six==1.17.0)
  Caused by: failed to write to file `/tmp/build/tree/six.py`: No space left on device (os error 28)
"""
PIP_HASH = """ERROR: THESE PACKAGES DO NOT MATCH THE HASHES FROM THE REQUIREMENTS FILE. If you have updated the package versions, please update the hashes. Otherwise, examine the package contents carefully; someone may have tampered with them.
    pyyaml==6.0.3 from http://127.0.0.1:18765/simple/pyyaml/pyyaml-6.0.3-py3-none-any.whl#sha256=3257 (from -r /tmp/home/requirements.txt (line 1)):
        Expected sha256 0000000000000000000000000000000000000000000000000000000000000000
             Got        3257d3b7bb569e9d43474ec11d52c08c042d5ba8d98ee77f4f3710d3e37c589f
"""
PIP_NO_DIST = """ERROR: Could not find a version that satisfies the requirement pyyaml==6.0.3 (from versions: none)
ERROR: No matching distribution found for pyyaml==6.0.3
"""
PIP_REFUSED = (
    "WARNING: Retrying (Retry(total=0, connect=None, read=None, redirect=None, status=None)) after "
    "connection broken by 'NewConnectionError(\"HTTPConnection(host='127.0.0.1', port=9): Failed to "
    "establish a new connection: [Errno 111] Connection refused\")': /simple/pyyaml/\n" + PIP_NO_DIST
)


@pytest.mark.parametrize(
    ("stderr", "kind", "names"),
    [
        (UV_HASH, HashMismatchError, "pyyaml==6.0.3"),
        (PIP_HASH, HashMismatchError, "pyyaml==6.0.3"),
        (UV_SDIST_ONLY, NoWheelError, "pyyaml==6.0.3"),
        (UV_OTHER_PLATFORM, NoWheelError, "pyyaml==6.0.3"),
        (PIP_NO_DIST, NoWheelError, "pyyaml==6.0.3"),
        (UV_NOT_FOUND, PackageNotFoundError, "six==1.17.0"),
        (UV_NO_VERSION, PackageNotFoundError, "six==1.17.0"),
        (UV_UNAUTHORIZED, ConfigurationError, "401"),
        (UV_REFUSED, IndexUnreachableError, "Connection refused"),
        (UV_DNS, IndexUnreachableError, "dns error"),
        (UV_503, IndexUnreachableError, "503 Service Unavailable"),
        (PIP_REFUSED, IndexUnreachableError, "Connection refused"),
        (UV_DISK, DiskFullError, "six==1.17.0"),
        ("error: something nobody expected\n", LayerBuildError, "something nobody expected"),
    ],
    ids=["uv-hash", "pip-hash", "uv-sdist-only", "uv-other-platform", "pip-no-dist", "uv-not-found",
         "uv-no-version", "uv-401", "uv-refused", "uv-dns", "uv-503", "pip-refused", "uv-enospc",
         "unknown"],
)
def test_classify_failure(stderr, kind, names):
    error = classify_failure(stderr, REQS, X86)
    assert type(error) is kind
    assert names in str(error)
    assert error.permanent is (kind in (HashMismatchError, NoWheelError, PackageNotFoundError,
                                        ConfigurationError))


def test_no_wheel_message_says_what_to_do():
    error = classify_failure(UV_OTHER_PLATFORM, REQS, ARM)
    message = str(error)
    assert "No wheel of pyyaml==6.0.3 for python3.13/arm64 (manylinux_2_34)" in message
    assert "manylinux wheel for aarch64" in message
    assert "--allow-sdist" in message
    assert "six" not in message  # only the package the installer named


def test_hash_mismatch_says_what_to_do():
    assert "Re-run `pipenv lock` against a trusted index" in str(classify_failure(UV_HASH, REQS, X86))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Because typing_extensions==4.15.0 has no usable wheels", ["typing-extensions"]),
        ("Because typing-extensions==4.15.0 has no usable wheels", ["typing-extensions"]),
        ("Because zope.interface==8.0 has no usable wheels", ["zope-interface"]),
        ("Because PyYAML==6.0.3 has no usable wheels", ["pyyaml"]),
        ("Because sixteen==1.0 has no usable wheels", []),  # not six
        ("Because my-six==1.0 has no usable wheels", []),
        ("`six` and `pyyaml` 1.0 has no usable wheels", ["pyyaml", "six"]),
    ],
)
def test_package_names_are_found_in_any_spelling(text, expected):
    error = classify_failure(text, REQS, X86)
    assert isinstance(error, NoWheelError)
    named = [r.name for r in REQS if f"{r.name}=={r.version}" in str(error)]
    assert named == expected
    if not expected:
        assert "No wheel of a locked package" in str(error)


def test_package_called_network_is_not_a_network_error():
    reqs = [req("networkx", "3.5"), req("network", "0.1")]
    for stderr in ("Because networkx==3.5 has no usable wheels and you require networkx==3.5",
                   "Because network was not found in the package registry and you require network==0.1"):
        error = classify_failure(stderr, reqs, X86)
        assert error.permanent, stderr


def test_credentials_are_scrubbed_from_messages():
    error = classify_failure(UV_REFUSED, REQS, X86)
    assert "t0ps3cret" not in str(error) and "bot:" not in str(error)
    assert "http://***@127.0.0.1:9/simple/six/" in str(error)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("https://user:pass@pkgs.example/simple", "https://***@pkgs.example/simple"),
        ("url (http://token@10.0.0.1:8080/x) failed", "url (http://***@10.0.0.1:8080/x) failed"),
        ("a https://u:p@h.example/ and https://v:q@i.example/", "a https://***@h.example/ and https://***@i.example/"),
        ("https://pkgs.example/simple user@example.com", "https://pkgs.example/simple user@example.com"),
    ],
)
def test_scrub(text, expected):
    assert redact(text) == expected


# --- the installer's environment ---------------------------------------------------------------

BUILDER_ENV = {
    "PATH": "/opt/bin:/usr/bin",
    "LANG": "C.UTF-8",
    "SSL_CERT_FILE": "/etc/ssl/ca.pem",
    "HTTPS_PROXY": "http://proxy.example:3128",
    "AWS_ACCESS_KEY_ID": "AKIAIOSFODNN7EXAMPLE",
    "AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    "AWS_SESSION_TOKEN": "FwoGZXIvYXdzEXAMPLE",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI": "http://169.254.170.2/creds",
    "AWS_LAMBDA_RUNTIME_API": "127.0.0.1:9001",
    "GITHUB_TOKEN": "ghp_example",
    "PIP_INDEX_URL": "https://builder:secret@own-index.example/simple",
    "UV_INDEX_URL": "https://builder:secret@own-index.example/simple",
    "PIP_EXTRA_INDEX_URL": "https://extra.example/simple",
    "UV_EXTRA_INDEX_URL": "https://extra.example/simple",
    "PYTHONPATH": "/var/task",
    "LD_PRELOAD": "/tmp/evil.so",
    "HOME": "/home/builder",
    "XDG_CONFIG_HOME": "/home/builder/.config",
}


def test_installer_environment_is_an_allow_list(tmp_path):
    env = installer_environment(BUILDER_ENV, tmp_path / "home", tmp_path / "cache")
    passed = {k for k in BUILDER_ENV if k in env and env[k] == BUILDER_ENV[k]}
    assert passed == {"PATH", "LANG", "SSL_CERT_FILE", "HTTPS_PROXY"}
    assert passed <= set(PASSTHROUGH_ENV)
    assert not [k for k in env if k.startswith("AWS_")]
    for secret in ("wJalrXUtnFEMI", "AKIAIOSFODNN7", "FwoGZXIv", "ghp_example", "builder:secret"):
        assert not [k for k, v in env.items() if secret in v], secret
    assert env["HOME"] == env["TMPDIR"] == str(tmp_path / "home")
    assert env["UV_CACHE_DIR"] == str(tmp_path / "cache")
    assert env["PIP_CACHE_DIR"] == str(tmp_path / "cache" / "pip")
    assert env["PIP_CONFIG_FILE"] == "/dev/null"
    assert env["UV_PYTHON_DOWNLOADS"] == "never"
    assert set(env) == {"PATH", "LANG", "SSL_CERT_FILE", "HTTPS_PROXY", "HOME", "TMPDIR",
                        "UV_CACHE_DIR", "UV_NO_PROGRESS", "UV_PYTHON_DOWNLOADS", "PIP_CONFIG_FILE",
                        "PIP_NO_INPUT", "PIP_DISABLE_PIP_VERSION_CHECK", "PIP_CACHE_DIR",
                        "PYTHONDONTWRITEBYTECODE"}


def test_installer_environment_has_a_path_even_from_nothing(tmp_path):
    env = installer_environment({}, tmp_path, tmp_path)
    assert env["PATH"] == "/usr/bin:/bin"


# --- commands, with a fake runner ------------------------------------------------------------

@dataclass
class Call:
    cmd: list[str]
    env: dict[str, str]
    requirements: str
    timeout: float | None


@dataclass
class FakeRunner:
    """Stands in for subprocess.run; `answer(call)` returns (returncode, stderr)."""

    answer: Callable[[Call], tuple[int, str]] = lambda call: (0, "")
    calls: list[Call] = field(default_factory=list)

    def __call__(self, cmd, *, env, capture_output, text, timeout, check):
        assert capture_output and text and not check
        requirements = Path(cmd[cmd.index("-r") + 1]).read_text(encoding="utf-8")
        call = Call(list(cmd), dict(env), requirements, timeout)
        self.calls.append(call)
        code, stderr = self.answer(call)
        return subprocess.CompletedProcess(cmd, code, "", stderr)


def locked(*reqs: Requirement) -> LockedProject:
    return LockedProject(tuple(reqs), (), "0" * 64, "3.13")


def flag(cmd: list[str], name: str) -> str:
    return cmd[cmd.index(name) + 1]


@pytest.fixture
def make_installer(tmp_path, monkeypatch):
    monkeypatch.setattr(install, "find_uv", lambda: "/opt/uv/bin/uv")
    monkeypatch.setattr(install, "_uv_version", lambda uv: "uv 0.13.9")

    def make(runner: FakeRunner, *, use_uv: bool = True, environ=BUILDER_ENV) -> Installer:
        return Installer(cache_dir=tmp_path / "cache", home=tmp_path / "home",
                         python="/usr/bin/python3.13", environ=environ, runner=runner,
                         use_uv=use_uv)
    return make


def test_uv_command_installs_exactly_the_lock(make_installer, tmp_path):
    runner = FakeRunner()
    dest = tmp_path / "tree"
    result = make_installer(runner).install(locked(PYYAML, SIX), X86, dest, timeout=123.0)
    assert result == install.InstallResult("uv 0.13.9", (), ())
    (call,) = runner.calls
    cmd = call.cmd
    assert cmd[:4] == ["/opt/uv/bin/uv", "pip", "install", "--no-config"]
    for required in ("--require-hashes", "--no-deps", "--no-config"):
        assert required in cmd
    assert flag(cmd, "--only-binary") == ":all:"
    assert flag(cmd, "--target") == str(dest)
    assert flag(cmd, "--python-version") == "3.13"
    assert flag(cmd, "--python-platform") == "x86_64-manylinux_2_34"
    assert flag(cmd, "--python") == "/usr/bin/python3.13"
    assert call.requirements == PYYAML.line() + "\n" + SIX.line() + "\n"
    assert call.timeout == 123.0
    assert dest.is_dir()
    assert not (tmp_path / "home" / "requirements.txt").exists()  # removed after the run


def test_arm64_python311_flags(make_installer, tmp_path):
    runner = FakeRunner()
    make_installer(runner).install(locked(SIX), Target("python3.11", "arm64"), tmp_path / "t")
    cmd = runner.calls[0].cmd
    assert flag(cmd, "--python-version") == "3.11"
    assert flag(cmd, "--python-platform") == "aarch64-manylinux_2_26"


def test_index_url_goes_through_the_environment(make_installer, tmp_path):
    index = "https://bot:t0ps3cret@pkgs.example/simple"
    runner = FakeRunner()
    make_installer(runner).install(locked(req("six", index=index)), X86, tmp_path / "t")
    (call,) = runner.calls
    assert call.env["UV_INDEX_URL"] == index
    assert not [a for a in call.cmd if "t0ps3cret" in a or "pkgs.example" in a]
    assert "t0ps3cret" not in call.requirements
    assert not [k for k in call.env if k.startswith("AWS_")]
    assert call.env["HOME"] == str(tmp_path / "home")
    assert call.env["UV_CACHE_DIR"] == str(tmp_path / "cache")


def test_default_index_sets_no_index_variable(make_installer, tmp_path):
    runner = FakeRunner()
    make_installer(runner).install(locked(SIX), X86, tmp_path / "t")
    env = runner.calls[0].env
    assert "UV_INDEX_URL" not in env and "PIP_INDEX_URL" not in env  # not even the builder's own


def test_one_run_per_index(make_installer, tmp_path):
    private = "https://pkgs.example/private"
    runner = FakeRunner()
    make_installer(runner).install(
        locked(SIX, req("internal-lib", "0.4", private), PYYAML), X86, tmp_path / "t")
    runs = {c.env.get("UV_INDEX_URL", ""): c.requirements for c in runner.calls}
    assert runs == {"": SIX.line() + "\n" + PYYAML.line() + "\n",
                    private: req("internal-lib", "0.4", private).line() + "\n"}


HOST = Target("python3.13", "arm64" if os.uname().machine == "aarch64" else "x86_64")
NOT_HOST = Target("python3.13", "x86_64" if HOST.arch == "arm64" else "arm64")


def test_allowed_sdists_build_separately_with_the_target_interpreter(make_installer, tmp_path):
    runner = FakeRunner(lambda call: no_wheel_for({"pyyaml"})(call) if "--only-binary" in call.cmd else (0, ""))
    result = make_installer(runner).install(
        locked(SIX, PYYAML), HOST, tmp_path / "t", allow_sdist=frozenset({"pyyaml"}),
        source_python="/opt/py313/bin/python3.13")
    wheels, allowed_as_wheel, build = runner.calls
    assert wheels.requirements == SIX.line() + "\n" and flag(wheels.cmd, "--only-binary") == ":all:"
    # An allowed package is still installed from a wheel when there is one ...
    assert allowed_as_wheel.requirements == PYYAML.line() + "\n"
    assert flag(allowed_as_wheel.cmd, "--only-binary") == ":all:"
    # ... and built, hash-checked, with the target interpreter only when there is none.
    assert build.requirements == PYYAML.line() + "\n" and "--only-binary" not in build.cmd
    assert flag(build.cmd, "--python") == "/opt/py313/bin/python3.13"
    assert "--require-hashes" in build.cmd and "--no-deps" in build.cmd
    assert result.built_from_source == ("pyyaml==6.0.3",)
    assert "Built from source (operator allowed): pyyaml==6.0.3." in result.warnings


def test_allowed_package_with_a_wheel_is_not_built(make_installer, tmp_path):
    runner = FakeRunner()
    result = make_installer(runner).install(
        locked(SIX, PYYAML), HOST, tmp_path / "t", allow_sdist=frozenset({"pyyaml", "typo-name"}),
        source_python="/opt/py313/bin/python3.13")
    assert all("--only-binary" in c.cmd for c in runner.calls)
    assert result.built_from_source == ()
    assert any("typo-name" in w and "check the spelling" in w for w in result.warnings)


@pytest.mark.parametrize(("target", "python", "match"), [
    (HOST, None, "needs a Python 3.13 interpreter"),
    (NOT_HOST, "/opt/py313/bin/python3.13", f"makes {HOST.machine} binaries, not {NOT_HOST.machine}"),
])
def test_sdist_that_cannot_be_built_for_the_target_is_refused(make_installer, tmp_path, target, python, match):
    runner = FakeRunner(no_wheel_for({"pyyaml"}))
    with pytest.raises(NoWheelError, match=match):
        make_installer(runner).install(locked(PYYAML), target, tmp_path / "t",
                                       allow_sdist=frozenset({"pyyaml"}), source_python=python)
    assert all("--only-binary" in c.cmd for c in runner.calls)  # no build code ever ran


def test_pip_fallback_command(make_installer, tmp_path):
    index = "https://bot:t0ps3cret@pkgs.example/simple"
    runner = FakeRunner()
    result = make_installer(runner, use_uv=False).install(
        locked(req("six", "1.17.0", index)), ARM, tmp_path / "t")
    (call,) = runner.calls
    cmd = call.cmd
    assert cmd[1:4] == ["-m", "pip", "install"]
    # --isolated would make pip ignore PIP_INDEX_URL and use its default index.
    assert "--isolated" not in cmd
    assert call.env["PIP_INDEX_URL"] == index and call.env["PIP_CONFIG_FILE"] == "/dev/null"
    assert not [a for a in cmd if "t0ps3cret" in a]
    for required in ("--require-hashes", "--no-deps", "--no-compile"):
        assert required in cmd
    assert flag(cmd, "--only-binary") == ":all:"
    assert flag(cmd, "--python-version") == "3.13"
    assert flag(cmd, "--implementation") == "cp" and flag(cmd, "--abi") == "cp313"
    platforms = [cmd[i + 1] for i, a in enumerate(cmd) if a == "--platform"]
    assert platforms == ARM.pip_platforms
    assert result.installer == "pip (uv not found)"
    assert result.warnings == ("uv was not found: installed with pip, which is slower.",)


@pytest.mark.parametrize(("stderr", "kind"), [
    (UV_HASH, HashMismatchError), (UV_NOT_FOUND, PackageNotFoundError),
    (UV_REFUSED, IndexUnreachableError), (UV_DISK, DiskFullError),
])
def test_failed_runs_raise_the_classified_error(make_installer, tmp_path, stderr, kind):
    runner = FakeRunner(lambda call: (1, stderr))
    with pytest.raises(kind):
        make_installer(runner).install(locked(PYYAML, SIX), X86, tmp_path / "t")
    assert len(runner.calls) == 1
    assert not (tmp_path / "home" / "requirements.txt").exists()


def test_timeout_is_out_of_time(make_installer, tmp_path):
    def slow(call):
        raise subprocess.TimeoutExpired(call.cmd, call.timeout)

    with pytest.raises(OutOfTimeError, match="did not finish in the time left"):
        make_installer(FakeRunner(slow)).install(locked(SIX), X86, tmp_path / "t", timeout=5)
    assert not (tmp_path / "home" / "requirements.txt").exists()


def test_enospc_starting_the_installer_is_disk_full(make_installer, tmp_path):
    def full(call):
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(DiskFullError):
        make_installer(FakeRunner(full)).install(locked(SIX), X86, tmp_path / "t")


def test_other_os_errors_propagate(make_installer, tmp_path):
    def missing(call):
        raise FileNotFoundError(errno.ENOENT, "No such file", call.cmd[0])

    with pytest.raises(FileNotFoundError):
        make_installer(FakeRunner(missing)).install(locked(SIX), X86, tmp_path / "t")


def no_wheel_for(names: set[str]) -> Callable[[Call], tuple[int, str]]:
    """Like uv: fail at the first requested package without a wheel, naming only that one."""
    def answer(call: Call) -> tuple[int, str]:
        for line in call.requirements.splitlines():
            name, version = line.split()[0].split("==")
            if name in names:
                return 1, UV_SDIST_ONLY.replace("pyyaml", name).replace("6.0.3", version)
        return 0, ""
    return answer


def test_every_package_without_a_wheel_is_named(make_installer, tmp_path):
    reqs = [req("aaa-sdist", "1.0"), SIX, req("mmm-win-only", "2.0"), req("zzz-sdist", "3.0"), PYYAML]
    runner = FakeRunner(no_wheel_for({"aaa-sdist", "mmm-win-only", "zzz-sdist"}))
    with pytest.raises(NoWheelError) as caught:
        make_installer(runner).install(locked(*reqs), X86, tmp_path / "t")
    message = str(caught.value)
    assert "aaa-sdist==1.0, mmm-win-only==2.0, zzz-sdist==3.0" in message
    assert "six" not in message and "pyyaml" not in message
    assert "--allow-sdist" in message
    # The probes only ever install what is left: never a package already known to fail.
    assert "aaa-sdist" not in "".join(c.requirements for c in runner.calls[1:])


def test_a_single_package_without_a_wheel_keeps_the_first_message(make_installer, tmp_path):
    runner = FakeRunner(no_wheel_for({"pyyaml"}))
    with pytest.raises(NoWheelError, match="No wheel of pyyaml==6.0.3 for python3.13/x86_64"):
        make_installer(runner).install(locked(PYYAML, SIX), X86, tmp_path / "t")


def test_find_uv_finds_the_dependency():
    install.find_uv.cache_clear()
    uv = install.find_uv()
    assert uv is not None and Path(uv).name == "uv" and Path(uv).is_file()


def test_find_uv_uses_the_script_sam_build_leaves_in_the_data_dir(tmp_path, monkeypatch):
    """aws-lambda-builders installs wheels without their scripts: uv sits in uv-X.data/scripts,
    without the exec bit, in a read-only /var/task. The builder copies it to /tmp once."""
    import types

    from layer_builder import install

    package = tmp_path / "task" / "uv"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    script = tmp_path / "task" / "uv-0.13.9.data" / "scripts" / "uv"
    script.parent.mkdir(parents=True)
    script.write_bytes(b"#!/bin/sh\necho uv 0.0\n")
    script.chmod(0o644)

    def not_found():
        raise FileNotFoundError("no uv on the usual paths")

    fake = types.SimpleNamespace(__file__=str(package / "__init__.py"), find_uv_bin=not_found)
    monkeypatch.setitem(sys.modules, "uv", fake)
    monkeypatch.setattr(install.tempfile, "gettempdir", lambda: str(tmp_path / "tmp"))
    install.find_uv.cache_clear()
    try:
        found = install.find_uv()
    finally:
        install.find_uv.cache_clear()
    assert found == str(tmp_path / "tmp" / "layer-builder-bin" / "uv")
    assert os.access(found, os.X_OK)
    assert Path(found).read_bytes() == script.read_bytes()
