"""Install step: the locked requirements into a target directory with uv (pip as a fallback).

Exactly the lock: `--require-hashes --no-deps`, wheels only, for the target's Python version and
platform tag. The installer runs with an allow-listed environment: no AWS credentials or other
secrets, a private HOME, and the index URL passed through the environment rather than argv.
"""

from __future__ import annotations

import errno
import functools
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from packaging.utils import canonicalize_name

from .check import is_shared_object
from .errors import (
    ConfigurationError,
    DiskFullError,
    HashMismatchError,
    IndexUnreachableError,
    LayerBuildError,
    NoWheelError,
    OutOfTimeError,
    PackageNotFoundError,
    TargetMismatchError,
)
from .lock import LockedProject, Requirement, redact
from .target import Target

#: Only these variables of the builder's environment reach the installer.
PASSTHROUGH_ENV = (
    "PATH", "LANG", "LC_ALL", "SSL_CERT_FILE", "SSL_CERT_DIR",
    "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy",
)
_UNAUTHORIZED = ("401 unauthorized", "403 forbidden", "status code 401", "status code 403",
                 "http status client error (401", "http status client error (403")
_NO_WHEEL = ("has no usable wheels", "no wheels with a matching", "building from source is disabled",
             "no matching distribution", "only has source distributions")
_NOT_FOUND = ("not found in the package registry", "there is no version of",
              "could not find a version that satisfies")
#: Phrases, never single words: a package may be called "network" or "networkx".
_NETWORK = ("failed to fetch", "error sending request", "could not connect", "dns error",
            "timed out", "connection reset", "connection refused", "too many requests",
            "503 service", "502 bad gateway", "500 internal", "504 gateway",
            "network is unreachable", "connection broken", "failed to establish a new connection",
            "temporary failure in name resolution", "name or service not known")

#: Version names a shared object needs from glibc, e.g. b"GLIBC_2.34".
_GLIBC = re.compile(rb"GLIBC_2\.(\d+)")

Runner = Callable[..., subprocess.CompletedProcess]


@dataclass(frozen=True)
class InstallResult:
    installer: str
    warnings: tuple[str, ...]
    built_from_source: tuple[str, ...]


@functools.cache
def find_uv() -> str | None:
    try:
        import uv
    except ImportError:
        return None
    try:
        return uv.find_uv_bin()
    except FileNotFoundError:
        pass
    # `sam build` (aws-lambda-builders) leaves a wheel's scripts in <name>.data/scripts.
    for candidate in sorted(Path(uv.__file__).resolve().parent.parent.glob("uv-*.data/scripts/uv")):
        return _executable(candidate)
    return None


def _executable(path: Path) -> str:
    """The path itself, or a copy with the exec bit in /tmp (Lambda's /var/task is read-only)."""
    if os.access(path, os.X_OK):
        return str(path)
    copy = Path(tempfile.gettempdir()) / "layer-builder-bin" / path.name
    if not os.access(copy, os.X_OK):
        copy.parent.mkdir(parents=True, exist_ok=True)
        partial = copy.with_name(f".{copy.name}.{os.getpid()}")  # concurrent first calls
        shutil.copyfile(path, partial)
        partial.chmod(0o755)
        os.replace(partial, copy)
    return str(copy)


@functools.cache
def _uv_version(uv: str) -> str:
    # Even `--version` gets no secrets: only PATH, like every other installer run.
    out = subprocess.run([uv, "--version"], capture_output=True, text=True, check=False,
                         env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")})
    return out.stdout.strip() or "uv"


def installer_environment(environ: Mapping[str, str], home: Path, cache_dir: Path) -> dict[str, str]:
    env = {k: environ[k] for k in PASSTHROUGH_ENV if k in environ}
    env.setdefault("PATH", "/usr/bin:/bin")
    env.update(
        HOME=str(home),
        TMPDIR=str(home),
        UV_CACHE_DIR=str(cache_dir),
        UV_NO_PROGRESS="1",
        UV_PYTHON_DOWNLOADS="never",
        PIP_CONFIG_FILE=os.devnull,
        PIP_NO_INPUT="1",
        PIP_DISABLE_PIP_VERSION_CHECK="1",
        PIP_CACHE_DIR=str(cache_dir / "pip"),
        PYTHONDONTWRITEBYTECODE="1",
    )
    return env


def _uv_command(uv: str, target: Target, dest: Path, requirements: Path, python: str,
                binary_only: bool) -> list[str]:
    cmd = [uv, "pip", "install", "--no-config", "--quiet",
           "--target", str(dest), "--python", python,
           "--python-version", target.python_version, "--python-platform", target.uv_platform,
           "--require-hashes", "--no-deps", "-r", str(requirements)]
    if binary_only:
        cmd += ["--only-binary", ":all:"]
    return cmd


def _pip_command(target: Target, dest: Path, requirements: Path) -> list[str]:
    # pip needs the whole platform tag ladder and still evaluates markers for the host (pip#11664);
    # the lock step has already evaluated them for the target.
    # Not --isolated: it makes pip ignore PIP_INDEX_URL, the only way the index reaches it
    # (config files are off through PIP_CONFIG_FILE=/dev/null in installer_environment).
    cmd = [sys.executable, "-m", "pip", "install", "--quiet",
           "--target", str(dest), "--python-version", target.python_version,
           "--implementation", "cp", "--abi", f"cp{''.join(target.python_version.split('.'))}",
           "--only-binary", ":all:", "--require-hashes", "--no-deps", "--no-compile",
           "-r", str(requirements)]
    for platform in target.pip_platforms:
        cmd += ["--platform", platform]
    return cmd


def _mentioned(stderr: str, requirements: Iterable[Requirement]) -> list[Requirement]:
    """The requirements an installer error names (uv and pip quote names in various forms)."""
    lowered = stderr.lower()
    found = []
    for req in requirements:
        spellings = {req.name, req.name.replace("-", "_"), req.name.replace("-", ".")}
        if any(re.search(rf"(?<![\w.-]){re.escape(s)}(?![\w-])", lowered) for s in spellings):
            found.append(req)
    return found


def classify_failure(stderr: str, requirements: list[Requirement], target: Target) -> LayerBuildError:
    """Turn installer output into a named, actionable error."""
    text = redact(stderr)
    lowered = text.lower()
    named = _mentioned(text, requirements)
    which = ", ".join(f"{r.name}=={r.version}" for r in named) or "a locked package"
    if "no space left on device" in lowered:
        return DiskFullError(f"The disk filled up while installing {which}: give the builder more "
                             "ephemeral storage or slim the lock.")
    if any(s in lowered for s in _UNAUTHORIZED):
        return ConfigurationError(
            "The package index refused the credentials (HTTP 401/403): check the index URL and its "
            "token (--index-url, PackageIndexUrl).")
    if "hash mismatch" in lowered or "do not match the hashes" in lowered:
        return HashMismatchError(
            f"The downloaded file of {which} does not match the hashes in Pipfile.lock: the lock "
            "was tampered with or the index serves other files. Re-run `pipenv lock` against a "
            "trusted index.")
    tail = "\n".join(text.strip().splitlines()[-6:])
    # Before the no-wheel and not-found checks: pip ends an unreachable index with
    # "No matching distribution found", which would otherwise be refused as permanent.
    if any(s in lowered for s in _NETWORK):
        return IndexUnreachableError(f"The package index could not be reached (will retry): {tail}")
    if any(s in lowered for s in _NO_WHEEL):
        return NoWheelError(
            f"No wheel of {which} for {target.describe()}: the package publishes only source or "
            "wheels for other platforms. Pin a version that ships a manylinux wheel for "
            f"{target.machine}, or allow building it from source (--allow-sdist NAME / AllowSdist).")
    if any(s in lowered for s in _NOT_FOUND):
        return PackageNotFoundError(
            f"{which} was not found on the package index: check the name and version in the "
            "Pipfile and the configured index, then re-run `pipenv lock`.")
    return LayerBuildError(f"The installer failed: {tail}")


class Installer:
    """One installer invocation per index, so every package comes only from its own index."""

    def __init__(self, *, cache_dir: Path, home: Path, python: str | None = None,
                 environ: Mapping[str, str] | None = None, runner: Runner = subprocess.run,
                 use_uv: bool = True) -> None:
        self.cache_dir = cache_dir
        self.home = home
        self.python = python or sys.executable
        self.environ = os.environ if environ is None else environ
        self.runner = runner
        self.uv = find_uv() if use_uv else None

    @property
    def name(self) -> str:
        return _uv_version(self.uv) if self.uv else "pip (uv not found)"

    def install(self, locked: LockedProject, target: Target, dest: Path, *,
                allow_sdist: frozenset[str] = frozenset(), timeout: float | None = None,
                source_python: str | None = None) -> InstallResult:
        dest.mkdir(parents=True, exist_ok=True)
        self.home.mkdir(parents=True, exist_ok=True)
        warnings: list[str] = []
        if not self.uv:
            warnings.append("uv was not found: installed with pip, which is slower.")
        unknown = sorted(allow_sdist - {r.name for r in locked.requirements})
        if unknown:
            warnings.append(
                f"Allowed to build from source but not installed for {target.runtime}: "
                f"{', '.join(unknown)} (not in the lock's default packages, or skipped by a "
                "marker); check the spelling of --allow-sdist / AllowSdist.")
        built: list[Requirement] = []
        for index, reqs in sorted(locked.by_index().items()):
            wheels = [r for r in reqs if r.name not in allow_sdist]
            allowed = [r for r in reqs if r.name in allow_sdist]
            if wheels:
                self._run(wheels, index, target, dest, binary_only=True, timeout=timeout)
            if allowed:
                built += self._install_allowed(allowed, index, target, dest, timeout, source_python)
        if built:
            _refuse_newer_glibc(dest, built, target)
        names = tuple(f"{r.name}=={r.version}" for r in built)
        if names:
            warnings.append(f"Built from source (operator allowed): {', '.join(names)}.")
        return InstallResult(self.name, tuple(warnings), names)

    def _install_allowed(self, reqs: list[Requirement], index: str, target: Target, dest: Path,
                         timeout: float | None, python: str | None) -> list[Requirement]:
        """Wheels where the index has them; only the rest is built. Returns what was built."""
        missing: list[Requirement] = []
        remaining = list(reqs)
        while remaining:  # the installer names one package without a wheel per run
            try:
                self._run(remaining, index, target, dest, binary_only=True, timeout=timeout,
                          name_every_missing=False)
                break
            except NoWheelError as exc:
                named = _mentioned(str(exc), remaining)
                if not named:
                    raise
                missing += named
                remaining = [r for r in remaining if r not in named]
        if missing:
            _check_can_build(missing, target, self.uv, python)
            self._run(missing, index, target, dest, binary_only=False, timeout=timeout,
                      python=python)
        return missing

    def _run(self, reqs: list[Requirement], index: str, target: Target, dest: Path, *,
             binary_only: bool, timeout: float | None, python: str | None = None,
             name_every_missing: bool = True) -> None:
        requirements = self.home / "requirements.txt"
        requirements.write_text("".join(r.line() + "\n" for r in reqs), encoding="utf-8")
        env = installer_environment(self.environ, self.home, self.cache_dir)
        if index:
            env["UV_INDEX_URL" if self.uv else "PIP_INDEX_URL"] = index
        if self.uv:
            cmd = _uv_command(self.uv, target, dest, requirements, python or self.python, binary_only)
        else:
            cmd = _pip_command(target, dest, requirements)
        try:
            done = self.runner(cmd, env=env, capture_output=True, text=True, timeout=timeout,
                               check=False)
        except subprocess.TimeoutExpired:
            raise OutOfTimeError(
                "Installing the locked packages did not finish in the time left: retry, or give "
                "the builder a longer timeout.") from None
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                raise DiskFullError(f"The disk filled up while installing: {exc}") from None
            raise
        finally:
            requirements.unlink(missing_ok=True)
        if done.returncode != 0:
            error = classify_failure(done.stderr or done.stdout or "", reqs, target)
            if isinstance(error, NoWheelError) and binary_only and name_every_missing:
                error = self._all_without_wheels(error, reqs, index, target, timeout)
            raise error

    def _all_without_wheels(self, first: NoWheelError, reqs: list[Requirement], index: str,
                            target: Target, timeout: float | None) -> NoWheelError:
        """Installers stop at the first package without a wheel; name every one of them."""
        missing = [r for r in reqs if r.name in {m.name for m in _mentioned(str(first), reqs)}]
        remaining = [r for r in reqs if r not in missing]
        probe = self.home / "probe"
        while missing and remaining:
            try:
                self._run(remaining, index, target, probe, binary_only=True, timeout=timeout,
                          name_every_missing=False)
                break
            except NoWheelError as more:
                newly = [r for r in _mentioned(str(more), remaining)]
                if not newly:
                    break
                missing += newly
                remaining = [r for r in remaining if r not in newly]
            except LayerBuildError:
                break
        if len(missing) <= 1:
            return first
        names = ", ".join(f"{r.name}=={r.version}" for r in missing)
        return NoWheelError(
            f"No wheel for {target.describe()} of: {names}. Pin versions that ship manylinux "
            f"wheels for {target.machine}, or allow building them from source "
            "(--allow-sdist NAME / AllowSdist).")


def _check_can_build(reqs: list[Requirement], target: Target, uv: str | None,
                     python: str | None) -> None:
    """Source builds run here, for this machine: refuse unless that is the target.

    uv builds with the given interpreter and this machine's compiler, so the wheels are for the
    host's architecture (uv refuses them for another one only after running their build code).
    """
    names = ", ".join(f"{r.name}=={r.version}" for r in reqs)
    pin = f"or pin versions that ship manylinux wheels for {target.machine}"
    host = os.uname().machine
    if not uv:
        raise NoWheelError(
            f"No wheel of {names} for {target.describe()}, and building from source needs uv, "
            f"which is not installed with this builder: install it, {pin}.")
    if host != target.machine:
        raise NoWheelError(
            f"No wheel of {names} for {target.describe()}, and a source build on this {host} "
            f"machine makes {host} binaries, not {target.machine}: build on {target.machine} (e.g. "
            f"the builder Lambda with Architecture={target.arch}), {pin}.")
    if python is None:
        raise NoWheelError(
            f"No wheel of {names} for {target.describe()}, and building from source needs a Python "
            f"{target.python_version} interpreter, which was not found (PATH, pyenv): install one, "
            f"{pin}.")


def _refuse_newer_glibc(tree: Path, built: list[Requirement], target: Target) -> None:
    """Shared objects built here must not need a newer glibc than the target runtime has.

    Source builds link against this machine's glibc; manylinux wheels are checked by their tag.
    The versions a library needs (GLIBC_2.NN) are plain strings in its dynamic string table.
    """
    wanted = {r.name for r in built}
    too_new = []
    for record in tree.glob("*.dist-info/RECORD"):
        distribution = record.parent.name.removesuffix(".dist-info").rsplit("-", 1)[0]
        if canonicalize_name(distribution) not in wanted:
            continue
        for row in record.read_text(encoding="utf-8", errors="replace").splitlines():
            relative = Path(row.split(",", 1)[0])
            path = tree / relative
            if (is_shared_object(path.name) and not relative.is_absolute()
                    and ".." not in relative.parts and path.is_file()):
                need = max((int(m) for m in _GLIBC.findall(path.read_bytes())), default=0)
                if need > target.glibc[1]:
                    too_new.append(f"{path.relative_to(tree)} (GLIBC_2.{need})")
    if too_new:
        raise TargetMismatchError(
            f"Built from source on this machine, {', '.join(too_new[:5])} needs a newer glibc than "
            f"{target.describe()} provides (2.{target.glibc[1]}): build on Amazon Linux 2023 (the "
            "builder Lambda), or pin versions that ship manylinux wheels.")
