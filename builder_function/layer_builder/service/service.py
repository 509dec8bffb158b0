"""One upload, end to end: fetch → build → publish → attach → report.

Success and failure alike leave a report in the artifact bucket and an EventBridge event.
Permanent errors return a "refused" outcome (Lambda does not retry); transient ones are raised
after reporting, so Lambda retries and the idempotency record is released.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .. import __version__
from ..cache import evict
from ..errors import LayerBuildError
from ..lock import IndexPolicy
from ..unpack import strip_archive_suffix
from ..pipeline import BuildRequest, build
from .attach import attach
from .aws import Adapters
from .publish import publish
from .settings import Settings
from .uploads import Upload

SUCCEEDED, FAILED = "Layer Build Succeeded", "Layer Build Failed"
#: File names are limited to 255 bytes; keep room for the suffixes tools add.
MAX_LOCAL_NAME = 200


@dataclass
class Outcome:
    status: str  # published | reused | unchanged | superseded | refused | failed
    upload: Upload
    layer_name: str = ""
    version_arn: str = ""
    published: bool = False
    attachments: list[dict[str, Any]] = field(default_factory=list)
    build: dict[str, Any] = field(default_factory=dict)
    error: dict[str, str] = field(default_factory=dict)
    report_key: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": self.status, "layer_name": self.layer_name, "version_arn": self.version_arn,
            "published": self.published, "source": self.upload.identity(),
            "ordering": {"compared": "S3 eventTime, then sequencer", "value": self.upload.order},
            "attachments": self.attachments, "error": self.error, "report": self.report_key,
            "build": self.build,
        }

    def summary(self) -> dict[str, Any]:
        data = self.to_dict()
        data.pop("build")
        data["content_hash"] = self.build.get("content_hash", "")
        data["unzipped_bytes"] = self.build.get("unzipped_bytes", 0)
        data["zipped_bytes"] = self.build.get("zipped_bytes", 0)
        data["build_seconds"] = round(sum(self.build.get("timings", {}).values()), 3)
        return data


def report_key(upload: Upload, layer_name: str) -> str:
    stamp = upload.event_time.replace("-", "").replace(":", "")
    ident = hashlib.sha256(f"{upload.bucket}/{upload.key}@{upload.version_id}".encode()).hexdigest()[:12]
    return f"reports/{layer_name or '_unnamed'}/{stamp}-{ident}.json"


def local_name(filename: str) -> str:
    """The upload's own name (messages name it), unless it is too long for a file name; the
    layer's name always comes from the full key (source_name)."""
    if len(filename.encode()) <= MAX_LOCAL_NAME:
        return filename
    return "upload" + filename[len(strip_archive_suffix(filename)):][:16]


def source_fingerprint(archive_sha256: str, settings: Settings) -> str:
    """Everything that decides the layer before the archive is opened: its bytes and our settings."""
    material = [archive_sha256, __version__, settings.target.runtime, settings.target.arch,
                hashlib.sha256(settings.package_index_url.encode()).hexdigest(),
                ",".join(sorted(settings.allow_sdist)), settings.layer_name_prefix]
    return hashlib.sha256("|".join(material).encode()).hexdigest()


def build_request(upload: Upload, archive: Path, output: Path, settings: Settings,
                  environ: Mapping[str, str], deadline: float | None,
                  remote_cache=None) -> BuildRequest:
    return BuildRequest(
        source=archive, output=output, target=settings.target,
        # An upload cannot pick an index: the operator's URL, or the installer's default.
        index=IndexPolicy(override=settings.package_index_url, environ={}, allow_lock_urls=False),
        allow_sdist=settings.allow_sdist, layer_prefix=settings.layer_name_prefix,
        source_name=upload.filename, cache_dir=Path(settings.cache_dir), deadline=deadline,
        environ=environ, remote_cache=remote_cache)


def process_upload(upload: Upload, settings: Settings, adapters: Adapters,
                   environ: Mapping[str, str], deadline: float | None = None) -> Outcome:
    scratch = Path(tempfile.mkdtemp(prefix="upload-"))
    outcome = Outcome(status="failed", upload=upload)
    adapters.cache.errors.clear()  # a failed build's cache errors are not this build's
    try:
        archive, digest = adapters.artifacts.download(
            upload, scratch / "source" / local_name(upload.filename))
        fingerprint = source_fingerprint(digest, settings)
        remembered = adapters.memo.get(fingerprint)
        if remembered and adapters.layers.exists(remembered["version_arn"]):
            # The same bytes were built before: answer at once, no build, no new version.
            outcome.layer_name, outcome.version_arn = remembered["layer_name"], remembered["version_arn"]
            outcome.build = {**remembered["build"], "reused_report": remembered["report"]}
        else:
            remembered = None
            result = build(build_request(upload, archive, scratch / "layer.zip", settings, environ,
                                         deadline, adapters.cache))
            report = result.report
            report.warnings += adapters.cache.errors
            adapters.cache.errors.clear()
            outcome.layer_name, outcome.build = report.layer_name, report.to_dict()
            published = publish(result.output, report, adapters.layers, adapters.artifacts)
            outcome.version_arn, outcome.published = published.version_arn, not published.reused
        state, attachments = attach(outcome.layer_name, upload.order, outcome.version_arn,
                                    outcome.build.get("unzipped_bytes", 0), settings.consumer_functions,
                                    adapters.functions, adapters.book, adapters.pointer,
                                    subscribed=outcome.layer_name in settings.consumer_layers)
        # Copies, not vars(a): on CPython 3.13.0 the GC emptied a layer list reached only through
        # an Attachment's materialised __dict__ (3.13 managed-dict bugs, python/cpython#130327).
        outcome.attachments = [asdict(a) for a in attachments]
        outcome.status = ("superseded" if state == "superseded" else "unchanged" if remembered
                          else "published" if outcome.published else "reused")
        _finish(outcome, adapters, SUCCEEDED)
        if not remembered:
            adapters.memo.put(fingerprint, {
                "layer_name": outcome.layer_name, "version_arn": outcome.version_arn,
                "report": outcome.report_key, "build": {k: outcome.build.get(k) for k in (
                    "content_hash", "unzipped_bytes", "zipped_bytes", "runtime", "arch")}})
        return outcome
    except LayerBuildError as exc:
        outcome.status = "refused" if exc.permanent else "failed"
        outcome.error = {"kind": exc.kind, "message": str(exc), "retryable": str(not exc.permanent)}
        _report_failure(outcome, adapters)
        if exc.permanent:
            return outcome
        raise
    except Exception as exc:
        outcome.error = {"kind": type(exc).__name__, "message": str(exc), "retryable": "True"}
        _report_failure(outcome, adapters)
        raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        evict(Path(settings.cache_dir), settings.cache_max_bytes)


def _finish(outcome: Outcome, adapters: Adapters, detail_type: str) -> None:
    outcome.report_key = report_key(outcome.upload, outcome.layer_name)
    adapters.artifacts.put_json(outcome.report_key, outcome.to_dict())
    adapters.notifier.emit(detail_type, outcome.summary())


def _report_failure(outcome: Outcome, adapters: Adapters) -> None:
    """Best effort: a failure to report must not hide the original error, and a report that
    cannot be written must not stop the event (failures stay visible)."""
    outcome.report_key = report_key(outcome.upload, outcome.layer_name)
    try:
        adapters.artifacts.put_json(outcome.report_key, outcome.to_dict())
    except LayerBuildError as exc:
        outcome.error["report_error"], outcome.report_key = str(exc), ""
    try:
        adapters.notifier.emit(FAILED, outcome.summary())
    except LayerBuildError as exc:
        outcome.error["event_error"] = str(exc)


def deadline_from(remaining_ms: int, margin_s: float) -> float:
    return time.monotonic() + remaining_ms / 1000 - margin_s
