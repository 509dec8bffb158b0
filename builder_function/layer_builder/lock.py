"""Lock step: read Pipfile and Pipfile.lock with pipenv's own models and turn the lock's `default`
section into exact, hash-pinned requirements for the target.

Nothing here looks at the host interpreter: markers are evaluated for the target runtime.
"""

from __future__ import annotations

import io
import json
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import plette
from packaging.markers import InvalidMarker, Marker
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from .errors import LockError, ProjectError
from .project import read_project_file
from .redact import redact
from .target import Target

__all__ = [
    "DEFAULT_ALLOWED_ENV",
    "IndexPolicy",
    "LockedProject",
    "Requirement",
    "read_lock",
    "relock_hint",
]

PIPFILE = "Pipfile"
PIPFILE_LOCK = "Pipfile.lock"
#: Lock keys that mean "not from an index": refused because they cannot be hash-verified.
UNPINNABLE_KEYS = ("git", "hg", "svn", "bzr", "path", "file", "editable")
_VAR = re.compile(r"\$\{(\w+)\}|\$(\w+)")
_HASH = re.compile(r"sha256:[0-9a-f]{64}")  # fullmatch: `$` would admit a trailing newline
_NAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?")
_PYTHON_VERSION = re.compile(r"\d+(\.\d+){0,2}")


@dataclass(frozen=True)
class Requirement:
    name: str  # canonical
    version: str
    hashes: tuple[str, ...]
    index: str  # expanded URL, or "" for the installer's default index

    def line(self) -> str:
        hashes = " ".join(f"--hash={h}" for h in self.hashes)
        return f"{self.name}=={self.version} {hashes}"


@dataclass(frozen=True)
class LockedProject:
    requirements: tuple[Requirement, ...]
    #: Packages of `default` whose markers exclude the target, with the marker.
    skipped: tuple[tuple[str, str], ...]
    lock_sha256: str
    python_version: str | None
    warnings: tuple[str, ...] = field(default=())
    #: Path entries inside the project (`pipenv install -e .`): (name, path relative to the
    #: project root, "." for the root). They are the project's own code, copied, not installed.
    local_paths: tuple[tuple[str, str], ...] = field(default=())

    def by_index(self) -> dict[str, list[Requirement]]:
        """Requirements grouped by index URL: each group installs from its own index only."""
        groups: dict[str, list[Requirement]] = {}
        for req in self.requirements:
            groups.setdefault(req.index, []).append(req)
        return groups


#: Variables a lock's source URLs may name without being allowed: the installers' own index
#: settings. Any other `${VAR}` could carry a secret (AWS_SECRET_ACCESS_KEY) to the project's index.
DEFAULT_ALLOWED_ENV = ("PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "UV_INDEX_URL")


@dataclass(frozen=True)
class IndexPolicy:
    """Which indexes a build may use.

    `override` (the operator's index URL) replaces every source of the lock. Without it, the CLI
    expands sources from `environ`, reading only DEFAULT_ALLOWED_ENV and the names in
    `allowed_env` (`--allow-env NAME`); any other `${VAR}` is refused by name. With
    `allow_lock_urls` False (the Lambda) only bare `${VAR}` sources are accepted and mean the
    default index, so an upload cannot choose an index.
    """

    override: str = ""
    environ: Mapping[str, str] = field(default_factory=dict)
    allow_lock_urls: bool = True
    allowed_env: tuple[str, ...] = ()

    @property
    def expandable(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys((*DEFAULT_ALLOWED_ENV, *self.allowed_env)))


def _load_pipfile(project: Path) -> plette.Pipfile:
    path = project / PIPFILE
    if not path.is_file():
        found = sorted(p.name + ("/" if p.is_dir() else "") for p in project.iterdir())[:8]
        raise ProjectError(
            f"{PIPFILE} not found at the project root (it holds {', '.join(found) or 'nothing'}): "
            "upload the project with Pipfile and Pipfile.lock at its top level."
        )
    try:
        text = read_project_file(path)
        _check_pipfile_shape(tomllib.loads(text))
        return plette.Pipfile.load(io.StringIO(text))
    except ProjectError:
        raise
    except Exception as exc:  # tomlkit and plette raise many types for bad input
        raise ProjectError(f"{PIPFILE} is not valid TOML or not a valid Pipfile: {exc}") from None


_ORDINALS = ("first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth")


def _ordinal(index: int) -> str:
    return _ORDINALS[index] if index < len(_ORDINALS) else f"#{index + 1}"


def _check_sources(sources: object, template: str, fix: str) -> None:
    """Each source needs a string name and url, and verify_ssl (if any) is a boolean: plette's
    own "Missing required field: name" says neither which table nor what to write."""
    if not isinstance(sources, list):
        return
    for i, source in enumerate(sources):
        table = template.format(_ordinal(i))
        if not isinstance(source, dict):
            raise ProjectError(f"{table} is not a table: {fix}.")
        url = source.get("url")
        shown = f" (url = {redact(url)!r})" if isinstance(url, str) else ""
        for key, example in (("name", '"pypi"'), ("url", '"${PIP_INDEX_URL}"')):
            if not isinstance(source.get(key), str) or not source[key].strip():
                raise ProjectError(
                    f"{table}{shown} has no `{key}`: add a line such as {key} = {example} to it "
                    f"(every source needs a name and a url), {fix}."
                )
        if "verify_ssl" in source and not isinstance(source["verify_ssl"], bool):
            raise ProjectError(
                f"{table}{shown} has verify_ssl = {source['verify_ssl']!r}: write "
                f"verify_ssl = true (or false, unquoted), {fix}."
            )


def _check_pipfile_shape(data: dict) -> None:
    _check_sources(
        data.get("source"),
        PIPFILE + ": the {} [[source]]",
        "then run `pipenv lock` and upload both files",
    )
    requires = data.get("requires")
    for key in ("python_version", "python_full_version"):
        value = requires.get(key) if isinstance(requires, dict) else None
        if value is not None and not isinstance(value, str):
            raise ProjectError(
                f"{PIPFILE} [requires] {key} = {value!r} is not a string: write "
                f'{key} = "{value}", then run `pipenv lock` and upload both files.'
            )


def _load_lock(project: Path) -> dict:
    path = project / PIPFILE_LOCK
    if not path.is_file():
        raise ProjectError(
            f"{PIPFILE_LOCK} not found next to the Pipfile: run `pipenv lock` and upload it too."
        )
    try:
        data = json.loads(read_project_file(path))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ProjectError(
            f"{PIPFILE_LOCK} is not valid JSON: {exc}. Re-run `pipenv lock`."
        ) from None
    if not isinstance(data, dict) or not isinstance(data.get("default"), dict):
        raise ProjectError(f"{PIPFILE_LOCK} has no `default` section: re-run `pipenv lock`.")
    if not isinstance(data.get("_meta"), dict):
        # plette would fail later with a bare AttributeError("meta").
        raise ProjectError(f"{PIPFILE_LOCK} has no `_meta` section: re-run `pipenv lock`.")
    _check_sources(
        data["_meta"].get("sources"),
        PIPFILE_LOCK + ": the {} source in _meta.sources",
        "re-run `pipenv lock` and upload both files",
    )
    try:
        plette.Lockfile.validate(data)
    except Exception as exc:
        raise LockError(f"{PIPFILE_LOCK} does not match the lock format: {exc}") from None
    return data


def _expand(url: str, source_name: str, policy: IndexPolicy) -> str:
    """Expand ${VAR} as pipenv does, allowed names only. A URL made only of unset variables means
    the default index."""
    names = [a or b for a, b in _VAR.findall(url)]
    refused = next((n for n in names if n not in policy.expandable), None)
    if refused:
        raise LockError(
            f"Source {source_name!r} in {PIPFILE_LOCK} uses ${{{refused}}}, which the builder does "
            f"not expand: a lock may only read {', '.join(policy.expandable)} from your "
            "environment, so a project cannot send your other variables to an index of its "
            f"choosing. If the project is yours and {refused} holds its index URL or credentials, "
            f"allow it: `layer-builder build --allow-env {refused}`."
        )
    environ = {n: policy.environ[n] for n in names if policy.environ.get(n)}
    missing = [n for n in names if n not in environ]
    if names and len(missing) == len(names) and not _VAR.sub("", url).strip():
        return ""
    if missing:
        raise LockError(
            f"Source {source_name!r} in {PIPFILE_LOCK} uses ${{{missing[0]}}}, which is not set in "
            "the builder's environment: set it or configure the package index URL."
        )
    return _VAR.sub(lambda m: environ[m.group(1) or m.group(2)], url)


def _resolve_sources(meta: dict, policy: IndexPolicy) -> dict[str, str]:
    """Source name → index URL ("" = installer default)."""
    resolved: dict[str, str] = {}
    for source in meta.get("sources") or []:
        name, url = source.get("name", ""), source.get("url", "")
        if policy.override:
            resolved[name] = policy.override
        elif policy.allow_lock_urls:
            resolved[name] = _expand(url, name, policy)
        elif _VAR.fullmatch(url.strip()):
            # The operator configured no index: a bare ${VAR} source means the default index.
            # Nothing is expanded, so an upload cannot make the builder disclose its environment.
            resolved[name] = ""
        else:
            raise LockError(
                f"Source {name!r} in {PIPFILE_LOCK} names the index {redact(url)!r}, which the "
                'operator did not allow: write it as url = "${PIP_INDEX_URL}" in the Pipfile, '
                "re-run `pipenv lock`, and let the builder's configured index apply."
            )
    return resolved


def _requirement(
    name: str, entry: object, sources: dict[str, str], default_index: str
) -> Requirement:
    where = f"{PIPFILE_LOCK} default entry {name!r}"
    if not _NAME.fullmatch(name):
        # Names and versions end up in the installer's requirements file: nothing but a
        # PEP 508 name and a PEP 440 version may reach it (no options such as --index-url).
        raise LockError(f"{where} is not a valid package name: re-run `pipenv lock`.")
    if not isinstance(entry, dict):
        raise LockError(f"{where} is not a table: re-run `pipenv lock`.")
    kind = next((k for k in UNPINNABLE_KEYS if entry.get(k)), None)
    if kind:
        raise LockError(
            f"{where} is a {kind} dependency, which cannot be hash-verified: publish it to a "
            "package index and pin it with == instead."
        )
    version = entry.get("version", "")
    if not isinstance(version, str) or not version.startswith("==") or "*" in version:
        raise LockError(
            f"{where} is not pinned with == (got {version or 'nothing'!r}): re-run `pipenv lock`."
        )
    try:
        if any(c.isspace() for c in version):
            raise InvalidVersion(version)
        Version(version[2:])
    except InvalidVersion:
        raise LockError(
            f"{where} pins {version!r}, which is not a valid version: re-run `pipenv lock`."
        ) from None
    hashes = entry.get("hashes") or []
    if not isinstance(hashes, list):
        raise LockError(f"{where} has hashes that are not a list: re-run `pipenv lock`.")
    if not hashes:
        raise LockError(f"{where} has no hashes: re-run `pipenv lock` (hashes must be kept).")
    bad = [h for h in hashes if not isinstance(h, str) or not _HASH.fullmatch(h)]
    if bad:
        raise LockError(f"{where} has a malformed hash {bad[0]!r}: re-run `pipenv lock`.")
    index_name = entry.get("index")
    if index_name is not None and (not isinstance(index_name, str) or index_name not in sources):
        raise LockError(
            f"{where} names the index {index_name!r}, which is not among the lock's sources "
            f"({', '.join(sources) or 'none'}): fix the Pipfile's [[source]] and re-run `pipenv lock`."
        )
    index = sources[index_name] if index_name is not None else default_index
    return Requirement(canonicalize_name(name), version[2:], tuple(sorted(hashes)), index)


def read_lock(project: Path, target: Target, policy: IndexPolicy) -> LockedProject:
    pipfile = _load_pipfile(project)
    data = _load_lock(project)
    lock = plette.Lockfile(data)
    if not lock.is_up_to_date(pipfile):
        raise LockError(
            f"{PIPFILE_LOCK} is out of date with the {PIPFILE} (its _meta hash differs): "
            "run `pipenv lock` and upload both files."
        )
    meta = data.get("_meta", {})
    sources = _resolve_sources(meta, policy)
    # pipenv installs unmarked packages from the first source.
    default_index = policy.override or next(iter(sources.values()), "")

    requirements: list[Requirement] = []
    skipped: list[tuple[str, str]] = []
    local_paths: list[tuple[str, str]] = []
    environment = target.marker_environment()
    for name in sorted(data["default"]):
        entry = data["default"][name]
        markers = entry.get("markers") if isinstance(entry, dict) else None
        if markers:
            try:
                applies = Marker(markers).evaluate(environment)
            except (InvalidMarker, TypeError) as exc:  # TypeError: markers is not a string
                raise LockError(
                    f"{PIPFILE_LOCK} entry {name!r} has an invalid marker: "
                    f"{str(exc).splitlines()[0]}. Re-run `pipenv lock`."
                ) from None
            if not applies:
                skipped.append((canonicalize_name(name), markers))
                continue
        local = _local_path(project, name, entry)
        if local is not None:
            local_paths.append((canonicalize_name(name), local))
            continue
        requirements.append(_requirement(name, entry, sources, default_index))

    requires = meta.get("requires") or {}
    python_version = next(
        (
            requires[k]
            for k in ("python_version", "python_full_version")
            if isinstance(requires, dict) and isinstance(requires.get(k), str)
        ),
        None,
    )
    warnings = [hint] if (hint := relock_hint(python_version, target)) else []
    if python_version and not _PYTHON_VERSION.fullmatch(python_version):
        warnings.append(
            f"Pipfile [requires] python_version = {python_version!r} is not a Python version, so "
            "the builder cannot tell which Python the lock was made for: write a version such as "
            f'python_version = "{target.python_version}" and run `pipenv lock`.'
        )
    lock_sha = (meta.get("hash") or {}).get("sha256", "")
    return LockedProject(
        tuple(requirements),
        tuple(skipped),
        lock_sha,
        python_version,
        tuple(warnings),
        tuple(local_paths),
    )


def relock_hint(lock_python: str | None, target: Target) -> str | None:
    """What to say when the lock was made for a Python the target is not; None when it fits.

    Compared as versions, on the parts the lock names: "3" admits 3.13, "3.13.1" is 3.13.
    """
    if not _PYTHON_VERSION.fullmatch(lock_python or ""):
        return None  # absent, or not a version ("^3.9"): read_lock says so separately
    wanted = Version(lock_python or "").release[:2]
    if wanted == target.version_tuple[: len(wanted)]:
        return None
    version = target.python_version
    return (
        f"The lock was made for Python {lock_python} (Pipfile [requires]) and the layer is for "
        f"{target.runtime}: packages pinned for {lock_python} may not install or import on "
        f'{version}. Relock for the target: set python_version = "{version}" under [requires] '
        f"in the Pipfile, run `pipenv lock --python {version}` and upload both files."
    )


def _local_path(project: Path, name: str, entry: object) -> str | None:
    """A local `path` (or `file`) entry inside the project: its path relative to the root ("."
    for the root); None for entries that are not local.

    `pipenv install -e .` locks the project's own package as {editable = true, path = "."}
    (pipenv 2024+: file = "."): that is the project's code, which the build copies anyway. A path outside the project is not in
    the upload and cannot be hash-verified; a path to a file (a wheel, an sdist) is not code.
    """
    if not isinstance(entry, dict) or any(
        entry.get(k) for k in UNPINNABLE_KEYS if k not in ("path", "file", "editable")
    ):
        return None  # a VCS entry: _requirement refuses it
    # pipenv 2024+ writes `pipenv install -e .` as {editable = true, file = "."}: a local file
    # entry is a path; one with a scheme (https://, file://) stays refused as a file dependency.
    key = "path" if "path" in entry else "file" if "file" in entry else None
    raw = entry.get(key) if key else None
    if key is None or (key == "file" and isinstance(raw, str) and "://" in raw):
        return None
    where = f"{PIPFILE_LOCK} default entry {name!r}"
    if not isinstance(raw, str) or not raw.strip():
        raise LockError(f"{where} has a {key} that is not a string: re-run `pipenv lock`.")
    posix = raw.strip().replace("\\", "/")
    root = project.resolve()
    resolved = (root / posix).resolve()
    absolute = PurePosixPath(posix).is_absolute() or re.match(r"[A-Za-z]:", posix)
    if absolute or not resolved.is_relative_to(root):
        raise LockError(
            f"{where} is a path dependency on {raw!r}, outside the project: that code is not part "
            "of the upload and a path cannot be hash-verified. Move it into the project (e.g. "
            "./lib: it then ships as the project's own code) or publish it to a package index and "
            "pin it with == instead, then re-run `pipenv lock`."
        )
    if not resolved.is_dir():
        what = "is a file, not the project's code" if resolved.exists() else "is not in the upload"
        raise LockError(
            f"{where} is a path dependency on {raw!r}, which {what}: keep the package's folder in "
            "the project, or publish it to a package index and pin it with == instead, then "
            "re-run `pipenv lock`."
        )
    return resolved.relative_to(root).as_posix()
