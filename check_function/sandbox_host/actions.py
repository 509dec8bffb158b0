"""The check function's actions. Input comes by pre-signed GET URL, results leave by pre-signed
PUT URL; the function holds no credential for either (its role has its own logs only).

    {"action": "check", "layer_url", "spec": CheckSpec.to_json(), "timeout"}  -> Verdict JSON
    {"action": "compile", "sources_url", "result_url", "timeout"}             -> {"ok", "sha256", "files"}
    {"action": "build_sdist", "sdist_url", "filename", "name", "version", "result_url", "timeout"}
                                                                 -> {"ok", "sha256", "filename"}

An error of the build itself (an import that takes too long, a failed source build, a run that
broke its containment) comes back as {"ok": false, "error": {"kind", "message", "permanent",
"log"}} so the builder can tell permanent from transient; anything else is a function error.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
import tempfile
import time
import urllib.request
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from layer_builder import bytecode, limits, runner
from layer_builder.errors import LayerBuildError, SourceBuildError
from layer_builder.extract import MAX_CANDIDATE_BYTES, LayerZipError, extract_layer
from layer_builder.sandbox import CheckSpec

#: A check's candidate is the layer (at most what Lambda accepts unzipped) and the bytecode
#: already cached for its wheels (about as much again at most): a layer near the limit whose
#: wheels other builds compiled in full must not be refused here.
MAX_INPUT_BYTES = MAX_CANDIDATE_BYTES
#: Members of a layer zip (a big data-science layer has some tens of thousands).
MAX_MEMBERS = 200_000
#: Kept back from the invocation's time for the upload and the answer.
FINISH_MARGIN_S = 10.0
#: An sdist's file name as the builder sends it: no directories, a known archive suffix.
SDIST_FILENAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*\.(tar\.gz|zip)")
#: A failed build's log in the answer: its end, where the error is.
MAX_LOG_CHARS = 200_000
CHUNK = 1 << 20


class TransferError(RuntimeError):
    """An input could not be fetched or a result could not be stored (a function error)."""


def _checked_url(url: Any) -> str:
    if not isinstance(url, str) or not url.startswith(("https://", "http://")):
        raise TransferError("expected a pre-signed http(s) URL")
    return url


def _copy(source: Any, out: Any, written: int, max_bytes: int, too_much: str) -> int:
    """Copy in chunks, counting what is really written; returns the new total."""
    while chunk := source.read(CHUNK):
        written += len(chunk)
        if written > max_bytes:
            raise TransferError(f"{too_much} {max_bytes:,} bytes")
        out.write(chunk)
    return written


def download(url: str, dest: Path, max_bytes: int, timeout: float) -> Path:
    """GET a pre-signed URL into dest, refusing more than max_bytes."""
    with (
        urllib.request.urlopen(_checked_url(url), timeout=timeout) as response,
        open(dest, "wb") as out,
    ):
        _copy(response, out, 0, max_bytes, "the input is larger than")
    return dest


def upload(url: str, source: Path, timeout: float) -> str:
    """PUT a file to a pre-signed URL; returns its sha256."""
    with open(source, "rb") as body:
        digest = hashlib.file_digest(body, "sha256").hexdigest()
        body.seek(0)
        request = urllib.request.Request(
            _checked_url(url),
            data=body,
            method="PUT",
            # A type of our own: urllib would send a form type, which a server may parse.
            headers={
                "Content-Length": str(source.stat().st_size),
                "Content-Type": "application/octet-stream",
            },
        )
        with urllib.request.urlopen(request, timeout=timeout) as response:
            response.read()
    return digest


def extract(archive: Path, dest: Path, max_bytes: int = MAX_INPUT_BYTES) -> Path:
    """Unzip the builder's zip into dest: names stay inside, no links, the sizes are capped on
    the bytes really written (a header may lie); members in parallel (extract.py)."""
    try:
        return extract_layer(archive, dest, max_bytes=max_bytes, max_members=MAX_MEMBERS)
    except LayerZipError as exc:
        raise TransferError(str(exc)) from None


def _check(
    event: Mapping[str, Any], work: Path, time_left: Callable[[], float], environ: Mapping[str, str]
) -> dict[str, Any]:
    spec = CheckSpec.from_json(event["spec"])
    layer = download(event["layer_url"], work / "layer.zip", MAX_INPUT_BYTES, time_left())
    python_dir = extract(layer, work / "opt") / limits.LAYER_PYTHON_DIR
    python_dir.mkdir(exist_ok=True)
    layer.unlink()
    runner.read_only(work / "opt")  # as /opt is in Lambda
    verdict = runner.run_check(
        python_dir,
        spec,
        sys.executable,
        timeout=time_left(),
        environ=environ,
        cpus=runner.lambda_cpus(environ),
    )
    where = f"check function {environ.get('AWS_LAMBDA_FUNCTION_NAME', '?')}"
    ran_on = f"{verdict.ran_on}, {where}".lstrip(", ")
    # The whole verdict, `imports` included: the builder remembers each passing import by what
    # it depended on (importmemo), so a bumped pin re-runs only the imports that reach it.
    answer: dict[str, Any] = json.loads(verdict.to_json())
    answer["ran_on"] = ran_on
    return answer


def _compile(
    event: Mapping[str, Any], work: Path, time_left: Callable[[], float], environ: Mapping[str, str]
) -> dict[str, Any]:
    sources = download(event["sources_url"], work / "sources.zip", MAX_INPUT_BYTES, time_left())
    # Compiled straight from the zip: names are only the keys of what comes back (the builder
    # keeps the names it asked for), each source's size is capped by compile_sources, and the
    # compiler reads no more of a member than its listed size.
    try:
        with zipfile.ZipFile(sources) as zf:
            infos = zf.infolist()
    except zipfile.BadZipFile as exc:
        raise TransferError(f"the sources zip is damaged: {exc}") from None
    if len(infos) > MAX_MEMBERS:
        raise TransferError(f"the sources zip has more than {MAX_MEMBERS:,} members")
    files = sorted(i.filename for i in infos if i.filename.endswith(".py") and not i.is_dir())
    compiled = bytecode.compile_sources(sys.executable, sources, files, timeout=time_left()).pycs
    result = work / "bytecode.zip"
    with zipfile.ZipFile(result, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in sorted(compiled.items()):
            zf.writestr(name, data)
    return {
        "ok": True,
        "sha256": upload(event["result_url"], result, time_left()),
        "files": len(compiled),
    }


def _build_sdist(
    event: Mapping[str, Any], work: Path, time_left: Callable[[], float], environ: Mapping[str, str]
) -> dict[str, Any]:
    filename = event.get("filename")
    if not isinstance(filename, str) or not SDIST_FILENAME.fullmatch(filename):
        raise TransferError(f"not an sdist file name: {filename!r}")
    sdist = download(event["sdist_url"], work / filename, MAX_INPUT_BYTES, time_left())
    wheel = runner.build_sdist_wheel(
        sdist, sys.executable, work / "dist", timeout=time_left(), environ=environ
    )
    return {
        "ok": True,
        "sha256": upload(event["result_url"], wheel, time_left()),
        "filename": wheel.name,
    }


ACTIONS = {"check": _check, "compile": _compile, "build_sdist": _build_sdist}


def run(
    event: Mapping[str, Any], remaining_s: Callable[[], float], environ: Mapping[str, str]
) -> dict[str, Any]:
    """Do one action in a private work dir; `remaining_s` is the invocation's time left."""
    action = ACTIONS.get(str(event.get("action"))) if isinstance(event, Mapping) else None
    if action is None:
        raise ValueError(f"unknown action; expected one of {', '.join(ACTIONS)}")
    asked = event.get("timeout")  # the builder's time left for this action, from now
    ends = (
        time.monotonic() + float(asked) if isinstance(asked, (int, float)) and asked > 0 else None
    )

    def time_left() -> float:
        left = remaining_s() - FINISH_MARGIN_S
        if ends is not None:
            left = min(left, ends - time.monotonic())
        return max(left, 0.001)

    with tempfile.TemporaryDirectory(prefix=f"{event['action']}-") as tmp:  # 0700
        try:
            return action(event, Path(tmp), time_left, environ)
        except LayerBuildError as exc:
            log = exc.log[-MAX_LOG_CHARS:] if isinstance(exc, SourceBuildError) else ""
            return {
                "ok": False,
                "error": {
                    "kind": exc.kind,
                    "message": str(exc),
                    "permanent": exc.permanent,
                    "log": log,
                },
            }
        finally:
            _writable(Path(tmp))


def _writable(tree: Path) -> None:
    """Undo runner.read_only so the work dir can be removed."""
    for dirpath, _, _ in os.walk(tree):
        os.chmod(dirpath, 0o700)
