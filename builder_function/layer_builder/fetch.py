"""Fetch step: each locked requirement's file from its index, chosen for the target, verified.

The index's simple API lists a release's files with their sha256 (PEP 691 JSON, PEP 503 HTML for
private indexes that serve only that). For each requirement the best wheel for the target is the
one whose tags rank first among the target's (`Target.wheel_tags`) and whose sha256 is one of the
lock's hashes. Files are downloaded in parallel and hashed while they stream: a file whose bytes
do not match is never stored.

Why requests and not an index library (measured on the heavy lock, 16 projects, 2 cores):
pypi-simple's models take 0.48 s to read the six largest JSON pages that `json` reads in 0.06 s,
and its HTML parser 1.8 s where html.parser takes 0.24 s; unearth downloads one file at a time
(2.2 s for the lock against 0.55 s in parallel); `pip download` took 3.6 s. requests brings what
an index client needs: proxies, credentials in the URL, and dropping them on a redirect to
another host.

A page is read only as far as the choice needs: a file's name is parsed only when its sha256 is
one of the lock's, and plain absolute links are kept as listed rather than joined again (the heavy
lock's 16 JSON pages, 30,000 files: 0.38 s of CPU to parse and choose, now 0.11 s).

Every failure is decided from data (status codes, the index's file list, the lock's hashes),
never from the text of an installer's message.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import threading
import time
import tomllib
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Executor, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace
from html.parser import HTMLParser
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import SplitResult, unquote, urldefrag, urljoin, urlsplit, urlunsplit

import plette.pipfiles
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.tags import Tag
from packaging.utils import (
    InvalidSdistFilename,
    InvalidWheelFilename,
    parse_sdist_filename,
    parse_wheel_filename,
)
from packaging.version import InvalidVersion, Version

from .errors import (
    ConfigurationError,
    DiskFullError,
    HashMismatchError,
    IndexUnreachableError,
    LayerBuildError,
    NoWheelError,
    PackageNotFoundError,
)
from .lock import LockedProject, Requirement
from .redact import redact
from .target import Target

if TYPE_CHECKING:
    import requests

ACCEPT = "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html;q=0.2, text/html;q=0.1"
#: Attempts for one request on a network error, a timeout or a 5xx (then IndexUnreachableError).
ATTEMPTS = 3
BACKOFF_S = 0.5
#: Seconds without a byte before a request counts as failed.
READ_TIMEOUT_S = 60.0
CONNECT_TIMEOUT_S = 15.0
DOWNLOAD_WORKERS = 8
BLOCK = 1 << 16
SDIST_SUFFIXES = (".tar.gz", ".zip")
#: Progress is reported at most this often per download (bytes).
PROGRESS_STEP = 4 << 20


def default_index() -> str:
    """pipenv's default source, as plette (pipenv's own models) defines it: where a lock whose
    source is an unset ${VAR} installs from."""
    url = tomllib.loads(plette.pipfiles.DEFAULT_SOURCE_TOML)["source"][0]["url"]
    return url.rstrip("/") + "/"


@dataclass(frozen=True)
class IndexFile:
    filename: str
    url: str
    sha256: str | None
    requires_python: str | None = None
    #: Bytes, where the index says (PEP 700): for download progress.
    size: int | None = None

    @property
    def is_wheel(self) -> bool:
        return self.filename.endswith(".whl")

    @property
    def is_sdist(self) -> bool:
        return self.filename.endswith(SDIST_SUFFIXES)


@dataclass(frozen=True)
class Chosen:
    """The file a requirement installs from: a wheel, or an sdist the operator allowed."""

    requirement: Requirement
    filename: str
    sha256: str
    url: str = ""
    size: int | None = None

    @property
    def is_wheel(self) -> bool:
        return self.filename.endswith(".whl")


@dataclass(frozen=True)
class Missing:
    """A requirement with no wheel for the target, and what its release offers instead."""

    requirement: Requirement
    has_sdist: bool
    #: Platform/Python summaries of the release's wheels (e.g. "cp313 win_amd64").
    other_wheels: tuple[str, ...]


@dataclass
class Resolution:
    chosen: list[Chosen] = field(default_factory=list)
    missing: list[Missing] = field(default_factory=list)


# --- HTTP ------------------------------------------------------------------------------------


def _split_credentials(url: str) -> tuple[str, tuple[str, str] | None]:
    """The URL without user:password@, and the pair (requests sends it as Basic auth)."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url, None
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = host + (f":{parts.port}" if parts.port else "")
    clean = urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
    return clean, (unquote(parts.username or ""), unquote(parts.password or ""))


def _origin(url: str) -> str:
    parts = urlsplit(url)
    port = parts.port or {"https": 443, "http": 80}.get(parts.scheme)
    return f"{parts.scheme}://{(parts.hostname or '').lower()}:{port}"


def _request_errors() -> type[Exception]:
    import requests  # loaded already: a session exists before any request

    return requests.RequestException


class IndexClient:
    """Reads project pages and downloads files; file:// indexes are read from disk."""

    def __init__(
        self,
        environ: Mapping[str, str],
        *,
        attempts: int = ATTEMPTS,
        backoff: float = BACKOFF_S,
        indexes: Iterable[str] = (),
    ) -> None:
        from .indexsession import IndexSession  # lazily: see indexsession.py

        self.session = IndexSession(environ)
        self.attempts = attempts
        self.backoff = backoff
        for index in indexes:  # files on the index's own origin get its credentials too
            clean, given = _split_credentials(index)
            if given:
                self.session.credentials.setdefault(_origin(clean), given)

    def close(self) -> None:
        self.session.close()

    def _get(
        self, url: str, what: str, *, stream: bool = False, headers: Mapping[str, str] | None = None
    ) -> requests.Response:
        clean, given = _split_credentials(url)
        if given:
            self.session.credentials.setdefault(_origin(clean), given)
        auth = given or self.session.auth_for(clean)
        last = ""
        for attempt in range(self.attempts):
            if attempt:
                time.sleep(self.backoff * 2 ** (attempt - 1))
            try:
                response = self.session.get(
                    clean,
                    auth=auth,
                    headers=headers,
                    stream=stream,
                    proxies=self.session.proxies_for(clean),
                    timeout=(CONNECT_TIMEOUT_S, READ_TIMEOUT_S),
                )
            except _request_errors() as exc:
                last = type(exc).__name__
                continue
            if response.status_code >= 500 or response.status_code == 429:
                last = f"HTTP {response.status_code}"
                response.close()
                continue
            if response.status_code in (401, 403):
                response.close()
                raise ConfigurationError(
                    f"The package index refused the credentials (HTTP 401/403) for {what} at "
                    f"{redact(url)} (it answered {response.status_code}): check the index URL and "
                    "its token (--index-url, the stack's PackageIndexSecretArn) or the netrc entry for its host."
                )
            return response
        raise IndexUnreachableError(
            f"The package index could not be reached (will retry): {what} failed "
            f"{self.attempts} times ({last}) at {redact(url)}."
        )

    def project_files(self, index_url: str, name: str) -> list[IndexFile]:
        parts = urlsplit(index_url)
        # The page is under the index's path; a query (a token some indexes take there) stays.
        page = urlunsplit(parts._replace(path=parts.path.rstrip("/") + f"/{name}/", fragment=""))
        if page.startswith("file:"):
            return _read_file_page(page)
        response = self._get(page, name, headers={"Accept": ACCEPT})
        with response:
            if response.status_code == 404:
                raise PackageNotFoundError(
                    f"{name} was not found on the package index {redact(index_url)}: check the "
                    "name in the Pipfile and the configured index, then re-run `pipenv lock`."
                )
            if response.status_code != 200:
                raise IndexUnreachableError(
                    f"The package index answered HTTP {response.status_code} "
                    f"for {name} at {redact(page)} (will retry)."
                )
            kind = response.headers.get("Content-Type", "").split(";")[0].strip()
            base = response.url  # after redirects: relative links resolve against it
            try:
                if kind == "application/vnd.pypi.simple.v1+json":
                    files = _parse_json(response.content, base)
                else:
                    files = _parse_html(response.text, base)
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                raise IndexUnreachableError(
                    f"The package index's page for {name} at {redact(page)} is not a simple-API "
                    f"page ({type(exc).__name__}): check the index URL."
                ) from None
            return [_with_query(f, parts) for f in files] if parts.query else files

    def download(
        self,
        file: IndexFile,
        dest: Path,
        sha256: str,
        on_bytes: Callable[[int], None] = lambda n: None,
    ) -> None:
        """Write `file` to dest only if its bytes hash to sha256; the partial file never stays."""
        partial = dest.with_name(f".{dest.name}.{os.getpid()}.{id(file)}.part")
        try:
            if file.url.startswith("file:"):
                self._copy_local(file, partial, sha256, on_bytes)
            else:
                self._stream(file, partial, sha256, on_bytes)
            os.replace(partial, dest)
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                raise DiskFullError(
                    f"The disk filled up while downloading {file.filename}: give "
                    "the builder more ephemeral storage."
                ) from None
            raise
        finally:
            partial.unlink(missing_ok=True)

    def _copy_local(
        self, file: IndexFile, partial: Path, sha256: str, on_bytes: Callable[[int], None]
    ) -> None:
        source = Path(urllib.request.url2pathname(urlsplit(file.url).path))
        try:
            with open(source, "rb") as src:
                _write_verified(
                    iter(lambda: src.read(1 << 20), b""), partial, sha256, file, on_bytes
                )
        except FileNotFoundError:
            raise PackageNotFoundError(
                f"{file.filename} is listed by the index but missing at "
                f"{redact(file.url)}: check the index."
            ) from None

    def _stream(
        self, file: IndexFile, partial: Path, sha256: str, on_bytes: Callable[[int], None]
    ) -> None:
        for attempt in range(self.attempts):
            response = self._get(file.url, file.filename, stream=True)
            with response:
                if response.status_code == 404:
                    raise PackageNotFoundError(
                        f"{file.filename} is listed by the index but its "
                        f"download answers HTTP 404: check the index."
                    )
                if response.status_code != 200:
                    raise IndexUnreachableError(
                        f"Downloading {file.filename} answered HTTP "
                        f"{response.status_code} (will retry)."
                    )
                try:
                    # raw: the bytes as served (wheels are never content-encoded by an index)
                    _write_verified(
                        response.raw.stream(BLOCK, decode_content=True),
                        partial,
                        sha256,
                        file,
                        on_bytes,
                    )
                    return
                except (_request_errors(), OSError) as exc:
                    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
                        raise
                    if attempt == self.attempts - 1:
                        raise IndexUnreachableError(
                            f"Downloading {file.filename} failed {self.attempts} times "
                            f"({type(exc).__name__}): retry later (will retry)."
                        ) from None
                except Exception as exc:  # urllib3's ProtocolError and friends mid-stream
                    if isinstance(exc, LayerBuildError):
                        raise
                    if attempt == self.attempts - 1:
                        raise IndexUnreachableError(
                            f"Downloading {file.filename} failed {self.attempts} times "
                            f"({type(exc).__name__}): retry later (will retry)."
                        ) from None


def _write_verified(
    blocks: Iterable[bytes],
    partial: Path,
    sha256: str,
    file: IndexFile,
    on_bytes: Callable[[int], None],
) -> None:
    digest = hashlib.sha256()
    pending = 0
    with open(partial, "wb") as out:
        for block in blocks:
            digest.update(block)
            out.write(block)
            pending += len(block)
            if pending >= PROGRESS_STEP:
                on_bytes(pending)
                pending = 0
    on_bytes(pending)
    if digest.hexdigest() != sha256:
        raise HashMismatchError(
            f"The downloaded {file.filename} does not match its sha256 in Pipfile.lock "
            f"(got {digest.hexdigest()[:16]}…): the index serves other bytes than were locked. "
            "Re-run `pipenv lock` against a trusted index."
        )


# --- index pages -----------------------------------------------------------------------------


def _with_query(file: IndexFile, index: SplitResult) -> IndexFile:
    """Files on the index's own origin get its query too (a token passed that way), as they get
    its credentials; files elsewhere never do."""
    parts = urlsplit(file.url)
    if parts.query or _origin(file.url) != _origin(urlunsplit(index)):
        return file
    return replace(file, url=urlunsplit(parts._replace(query=index.query)))


#: An absolute URL that urljoin and urldefrag would leave as it is (no query, params,
#: whitespace or bracketed host), and its fragment: most links of an index page.
_PLAIN_URL = re.compile(r"(https?://[-\w.:%@]+/[^\s?#;]*)(?:#(\S*))?", re.ASCII)


def _resolve(base: str, url: str) -> tuple[str, str]:
    """url joined to base, without its fragment, and the fragment; the join is skipped for a
    plain absolute URL (pages list up to 15,000 files, and the join was most of their parse)."""
    if plain := _PLAIN_URL.fullmatch(url):
        return plain[1], plain[2] or ""
    return urldefrag(urljoin(base, url))


def _sha256_of(hashes: object, fragment: str) -> str | None:
    if isinstance(hashes, dict) and isinstance(hashes.get("sha256"), str):
        return hashes["sha256"].lower()
    if fragment.startswith("sha256="):
        return fragment[len("sha256=") :].lower()
    return None


def _parse_json(content: bytes, base: str) -> list[IndexFile]:
    """PEP 691: {"files": [{"filename", "url", "hashes": {"sha256"}, "requires-python"}]}."""
    files = []
    for entry in json.loads(content)["files"]:
        url, fragment = _resolve(base, entry["url"])
        files.append(
            IndexFile(
                entry["filename"],
                url,
                _sha256_of(entry.get("hashes"), fragment),
                entry.get("requires-python"),
                entry.get("size") if isinstance(entry.get("size"), int) else None,
            )
        )
    return files


class _Anchors(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.base: str | None = None
        self.anchors: list[dict[str, str | None]] = []
        self._open: dict[str, str | None] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "base" and self.base is None:
            self.base = dict(attrs).get("href")
        elif tag == "a":
            self._open = {**dict(attrs), "#text": ""}
            self.anchors.append(self._open)

    def handle_data(self, data: str) -> None:
        if self._open is not None:
            self._open["#text"] = (self._open["#text"] or "") + data

    def handle_endtag(self, tag: str) -> None:
        if tag == "a":
            self._open = None


def _parse_html(text: str, base: str) -> list[IndexFile]:
    """PEP 503: one <a href="…#sha256=…" data-requires-python="…"> per file."""
    parser = _Anchors()
    parser.feed(text)
    base = urljoin(base, parser.base) if parser.base else base
    files = []
    for anchor in parser.anchors:
        href = anchor.get("href")
        if not href:
            continue
        url, fragment = _resolve(base, href)
        filename = unquote(urlsplit(url).path.rsplit("/", 1)[-1])
        files.append(
            IndexFile(
                filename,
                url,
                _sha256_of(None, fragment),
                anchor.get("data-requires-python"),
            )
        )
    return files


def _read_file_page(page: str) -> list[IndexFile]:
    folder = Path(urllib.request.url2pathname(urlsplit(page).path))
    index = folder / "index.html"
    if not index.is_file():
        raise PackageNotFoundError(
            f"{folder.name} was not found on the package index "
            f"{redact(page.rsplit('/', 2)[0])}: check the name and the index."
        )
    return _parse_html(index.read_text(encoding="utf-8"), index.parent.as_uri() + "/")


# --- choosing --------------------------------------------------------------------------------


def _version_of(filename: str) -> tuple[str, Version] | None:
    try:
        if filename.endswith(".whl"):
            name, version, _, _ = parse_wheel_filename(filename)
        else:
            name, version = parse_sdist_filename(filename)
    except (InvalidWheelFilename, InvalidSdistFilename, InvalidVersion):
        return None
    return name, version


def _python_allows(spec: str | None, target: Target) -> bool:
    if not spec:
        return True
    try:
        return SpecifierSet(spec).contains(Version(target.python_version), prereleases=True)
    except (InvalidSpecifier, InvalidVersion):
        return True  # an unreadable marker does not hide a file the lock pinned by hash


def _describe_tags(wheel_tags: Iterable[Tag]) -> str:
    interpreters = sorted({t.interpreter for t in wheel_tags})
    platforms = sorted({t.platform for t in wheel_tags})
    return f"{'.'.join(interpreters)} {'.'.join(platforms)}"


def choose(
    req: Requirement, files: list[IndexFile], target: Target, *, allow_sdist: bool = False
) -> Chosen | Missing:
    """The best file of req's release for target among those the lock's hashes allow.

    Raises PackageNotFoundError when the index has no file of that version and
    HashMismatchError when it has some but none carries one of the lock's hashes.
    """
    locked = {h.split(":", 1)[1] for h in req.hashes}
    version = Version(req.version)

    def of_release(f: IndexFile) -> bool:
        return bool((nv := _version_of(f.filename)) and nv[0] == req.name and nv[1] == version)

    # Hash first: parsing every filename of a large page (15,000 for some) costs more than the
    # rest of the choice; the whole release is listed only to word the errors.
    allowed = [f for f in files if f.sha256 in locked and of_release(f)]
    if not allowed:
        release = [f for f in files if of_release(f)]
        if not release:
            raise PackageNotFoundError(
                f"{req.name}=={req.version} was not found on the package index (it lists "
                f"{len(files)} files of {req.name}, none of that version): check the name and "
                "version in the Pipfile and the configured index, then re-run `pipenv lock`."
            )
        raise HashMismatchError(
            f"{req.name}=={req.version} does not match the hashes in Pipfile.lock: none of the "
            f"{len(release)} files the index lists for it has one of them. The lock was tampered "
            "with or the index serves other files: re-run `pipenv lock` against a trusted index."
        )
    ranks = target.wheel_tags
    best: tuple[tuple[int, tuple, str], IndexFile] | None = None
    for f in allowed:
        if not f.is_wheel or not _python_allows(f.requires_python, target):
            continue
        _, _, build, wheel_tags = parse_wheel_filename(f.filename)
        rank = min((ranks[t] for t in wheel_tags if t in ranks), default=None)
        if rank is None:
            continue
        # Equal tags: the higher build number wins, as installers do; then the name, for stability.
        key = (rank, tuple(-x if isinstance(x, int) else 0 for x in build), f.filename)
        if best is None or key < best[0]:
            best = (key, f)
    if best is not None:
        return Chosen(req, best[1].filename, best[1].sha256 or "", best[1].url, best[1].size)
    sdists = [f for f in allowed if f.is_sdist]
    if allow_sdist and sdists:
        sdist = sorted(sdists, key=lambda f: f.filename)[0]
        return Chosen(req, sdist.filename, sdist.sha256 or "", sdist.url, sdist.size)
    others = sorted(
        {_describe_tags(parse_wheel_filename(f.filename)[3]) for f in allowed if f.is_wheel}
    )
    return Missing(req, bool(sdists), tuple(others))


def no_wheel_error(
    missing: list[Missing], target: Target, allow_sdist: frozenset[str]
) -> NoWheelError:
    """One error naming every package without a wheel, each with the advice its release allows."""
    lines = []
    for m in missing:
        what = f"{m.requirement.name}=={m.requirement.version}"
        pin = f"pin a version that ships manylinux wheels for {target.machine} and {target.runtime}"
        if m.other_wheels:
            shown = "; ".join(m.other_wheels[:3]) + (" …" if len(m.other_wheels) > 3 else "")
            has = f"has wheels only for other targets ({shown})"
        else:
            has = "publishes no wheels"
        if m.has_sdist and m.requirement.name not in allow_sdist:
            advice = (
                f"allow building it from source (--allow-sdist {m.requirement.name} / "
                "AllowSdist)" + (f", or {pin}" if m.other_wheels else "")
            )
            has += " and an sdist"
        elif m.requirement.name in allow_sdist:
            advice = f"it is allowed to build from source but its release has no sdist: {pin}"
        else:
            advice = pin
        lines.append(f"{what} {has}: {advice}")
    names = ", ".join(f"{m.requirement.name}=={m.requirement.version}" for m in missing)
    head = (
        f"No wheel of {names} for {target.describe()}."
        if len(missing) == 1
        else f"No wheel for {target.describe()} of: {names}."
    )
    return NoWheelError(head + " " + " ".join(f"{line}." for line in lines))


def resolve(
    locked: LockedProject,
    target: Target,
    client: IndexClient,
    *,
    allow_sdist: frozenset[str] = frozenset(),
    known: Mapping[str, Chosen] | None = None,
    workers: int = DOWNLOAD_WORKERS,
    pool: Executor | None = None,
    on_chosen: Callable[[Chosen], object] = lambda c: None,
) -> Resolution:
    """Choose a file per requirement; `known` (requirement key → choice) skips the index.

    Pages are read on `pool` (Downloads.pool) or on `workers` threads of their own. on_chosen(choice)
    runs on the page's thread as soon as a file is chosen from the index (so its download can start
    while later pages are read); it must not raise."""
    known = known or {}
    todo = [r for r in locked.requirements if requirement_key(r, target) not in known]

    def one(req: Requirement) -> Chosen | Missing:
        index = req.index or default_index()
        try:
            listed = client.project_files(index, req.name)
        except PackageNotFoundError:
            raise PackageNotFoundError(
                f"{req.name}=={req.version} was not found on the package index "
                f"{redact(index)}: check the name and version in the Pipfile and the configured "
                "index, then re-run `pipenv lock`."
            ) from None
        result = choose(req, listed, target, allow_sdist=req.name in allow_sdist)
        if isinstance(result, Chosen):
            on_chosen(result)
        return result

    found: dict[Requirement, Chosen | Missing] = {}
    if todo:
        runner = pool or ThreadPoolExecutor(min(workers, len(todo)))
        try:
            futures = [runner.submit(one, req) for req in todo]
            wait(futures)  # every page is read before the first error in lock order is raised
        finally:
            if pool is None:
                runner.shutdown()
        for req, future in zip(todo, futures, strict=True):
            found[req] = future.result()
    resolution = Resolution()
    for req in locked.requirements:
        result = found.get(req) or known[requirement_key(req, target)]
        if isinstance(result, Missing):
            resolution.missing.append(result)
        else:
            resolution.chosen.append(result)
    return resolution


def requirement_key(req: Requirement, target: Target) -> str:
    """What decides a requirement's choice: its pin, hashes, index and the target's tags."""
    material = json.dumps(
        [
            req.name,
            req.version,
            sorted(req.hashes),
            req.index,
            target.runtime,
            target.arch,
            target.platform,
        ],
        sort_keys=True,
    )
    return hashlib.sha256(material.encode()).hexdigest()


class _Abandoned(LayerBuildError):
    """Stops a download the build no longer needs (a LayerBuildError: retry loops pass it on)."""


class Downloads:
    """Files downloaded as each is chosen, so downloads overlap the reading of later index pages
    (heavy lock, cold, 2 cores: pages then downloads took 0.50 s, overlapped 0.45 s).

    Pages (resolve's `pool`) and downloads share `pool`: every page is queued before any
    download its choice starts, except those a page already read queues while later pages are
    still being submitted, and there are no more threads or connections than before. 8 page threads plus 8
    download threads took 0.49 s: their TLS and GIL contention cost more CPU than they saved.

    finish() waits for them in the caller's order and raises the first failure in that order,
    as one download after another would. close() abandons what still runs and waits for it: after
    a refusal no download keeps running, and `IndexClient.download` leaves no partial file.
    """

    def __init__(
        self,
        client: Callable[[], IndexClient],
        dest_for: Callable[[Chosen], Path],
        progress: Callable[..., None],
        message: str,
        *,
        workers: int = DOWNLOAD_WORKERS,
    ) -> None:
        self._client, self._dest_for, self._progress = client, dest_for, progress
        # Bytes are reported under the caller's running step until finish(): the count of files
        # to download is known only once every page is read.
        self._message, self._done = message, 0
        self._total: int | None = None
        self.pool = ThreadPoolExecutor(workers, thread_name_prefix="fetch")  # threads on demand
        self._futures: dict[str, Future[int]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()

    def start(self, c: Chosen) -> None:
        with self._lock:
            if not self._stop.is_set() and c.sha256 not in self._futures:
                self._futures[c.sha256] = self.pool.submit(self._one, c)

    def _one(self, c: Chosen) -> int:
        if self._stop.is_set():
            raise _Abandoned(c.filename)
        dest = self._dest_for(c)
        file = IndexFile(c.filename, c.url, c.sha256)
        self._client().download(file, dest, c.sha256, self._on_bytes)
        return dest.stat().st_size

    def _on_bytes(self, n: int) -> None:
        if self._stop.is_set():
            raise _Abandoned("closed")
        with self._lock:  # held while reporting: no count under the old step after finish()
            self._done += n
            self._progress(self._message, done=self._done, total=self._total, unit="B")

    def finish(self, chosen: list[Chosen], message: str) -> int:
        """Every file of `chosen` downloaded (started now if it was not); the bytes fetched."""
        for c in chosen:
            self.start(c)
        with self._lock:
            self._message = message
            self._total = sum(c.size or 0 for c in chosen) if all(c.size for c in chosen) else None
            self._progress(message, done=self._done, total=self._total, unit="B")
        return sum(self._futures[c.sha256].result() for c in chosen)

    def close(self) -> None:
        self._stop.set()
        self.pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> Downloads:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()
