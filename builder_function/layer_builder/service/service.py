"""One upload, end to end: team → fetch → build every target → publish → attach → report.

- The team comes from the key (`incoming/<team>/…`), never from the archive; every layer name
  is the team's prefix + the project's name (+ the target's suffix for non-primary targets).
- Every target is built before anything is published: a target that cannot be built refuses the
  upload and publishes nothing.
- Success and failure alike leave one report per upload in the artifact bucket and an
  EventBridge event. Permanent errors return a "refused" outcome (Lambda does not retry);
  transient ones are raised after reporting, so Lambda retries and the idempotency record is
  released.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .. import __version__, project, unpack
from ..cache import evict
from ..errors import LayerBuildError, ProjectError, TransientError, error_report
from ..limits import MAX_REPORT_LOG_CHARS
from ..lock import IndexPolicy
from ..pipeline import BuildRequest, BuildResult, build
from ..redact import redact, redact_data
from ..target import Target
from ..unpack import strip_archive_suffix
from . import lifecycle
from .attach import Release, attach, route, unversioned
from .aws import Adapters
from .publish import publish
from .settings import Settings, Team, target_label
from .uploads import Upload

SUCCEEDED, FAILED = "Layer Build Succeeded", "Layer Build Failed"
#: File names are limited to 255 bytes; keep room for the suffixes tools add.
MAX_LOCAL_NAME = 200
#: Kept back from the end of the invocation for the report and the event, after attaching.
REPORT_RESERVE_S = 10.0


@dataclass(frozen=True)
class Budget:
    """time.monotonic() by which building must stop, and by which attaching must stop."""

    build: float | None = None
    attach: float | None = None

    @classmethod
    def from_remaining(cls, remaining_ms: int, finish_margin_s: float) -> Budget:
        end = time.monotonic() + remaining_ms / 1000
        return cls(end - finish_margin_s, end - min(REPORT_RESERVE_S, finish_margin_s))


@dataclass
class TargetResult:
    target: str  # python3.13/x86_64
    layer_name: str
    version_arn: str = ""
    published: bool = False
    state: str = ""  # current | superseded
    attachments: list[dict[str, Any]] = field(default_factory=list)
    build: dict[str, Any] = field(default_factory=dict)
    #: The HTML picture of the layer (htmlreport), written beside the JSON report.
    page: str = field(default="", repr=False)
    page_key: str = ""
    #: What the stack's retention (KEEP_VERSIONS) and the team's sharing did after publishing.
    retention: list[dict[str, Any]] = field(default_factory=list)
    sharing: dict[str, str] = field(default_factory=dict)

    def to_dict(self, with_build: bool = True) -> dict[str, Any]:
        data = {
            "target": self.target,
            "layer_name": self.layer_name,
            "version_arn": self.version_arn,
            "published": self.published,
            "status": self.state,
            "attachments": self.attachments,
            "html": self.page_key,
            "retention": self.retention,
            "sharing": self.sharing,
        }
        if with_build:
            data["build"] = self.build
        else:
            data.update(
                {
                    k: self.build.get(k, d)
                    for k, d in (("content_hash", ""), ("unzipped_bytes", 0), ("zipped_bytes", 0))
                }
            )
        return data


@dataclass
class Outcome:
    status: str  # published | reused | unchanged | superseded | refused | failed
    upload: Upload
    team: str = ""
    targets: list[TargetResult] = field(default_factory=list)
    #: Consumers of the team that got no version of this upload, and why.
    unattached: list[dict[str, Any]] = field(default_factory=list)
    error: dict[str, str] = field(default_factory=dict)
    report_key: str = ""
    reused_report: str = ""

    @property
    def layer_name(self) -> str:
        return self.targets[0].layer_name if self.targets else ""

    @property
    def version_arn(self) -> str:
        return self.targets[0].version_arn if self.targets else ""

    @property
    def published(self) -> bool:
        return any(t.published for t in self.targets)

    @property
    def build(self) -> dict[str, Any]:
        """The primary target's build (tools reading one build keep working)."""
        build = dict(self.targets[0].build) if self.targets else {}
        if self.reused_report:
            build["reused_report"] = self.reused_report
        return build

    @property
    def attachments(self) -> list[dict[str, Any]]:
        return [a for t in self.targets for a in t.attachments] + self.unattached

    def to_dict(self, with_builds: bool = True) -> dict[str, Any]:
        data = {
            "status": self.status,
            "team": self.team,
            "layer_name": self.layer_name,
            "version_arn": self.version_arn,
            "published": self.published,
            "source": self.upload.identity(),
            "ordering": {"compared": "S3 eventTime, then sequencer", "value": self.upload.order},
            "targets": [t.to_dict(with_builds) for t in self.targets],
            "attachments": self.attachments,
            "error": self.error,
            "report": self.report_key,
        }
        if with_builds:
            data["build"] = self.build
        return data

    def summary(self) -> dict[str, Any]:
        """The report without the builds: the result, the event's detail and the log line."""
        data = self.to_dict(with_builds=False)
        data["error"] = {k: v for k, v in self.error.items() if k != "log"}  # the report has it
        build = self.build
        data["content_hash"] = build.get("content_hash", "")
        data["unzipped_bytes"] = build.get("unzipped_bytes", 0)
        data["zipped_bytes"] = build.get("zipped_bytes", 0)
        data["build_seconds"] = round(
            sum(sum(t.build.get("timings", {}).values()) for t in self.targets), 3
        )
        return redact_data(data)


def report_key(upload: Upload, layer_name: str) -> str:
    stamp = upload.event_time.replace("-", "").replace(":", "")
    ident = hashlib.sha256(
        f"{upload.bucket}/{upload.key}@{upload.version_id}".encode()
    ).hexdigest()[:12]
    return f"reports/{layer_name or '_unnamed'}/{stamp}-{ident}.json"


def local_name(filename: str) -> str:
    """The upload's own name (messages name it), unless it is too long for a file name; the
    layer's name always comes from the full key (source_name)."""
    if len(filename.encode()) <= MAX_LOCAL_NAME:
        return filename
    return "upload" + filename[len(strip_archive_suffix(filename)) :][:16]


def source_fingerprint(archive_sha256: str, settings: Settings, team: Team, index_url: str) -> str:
    """Everything that decides the layers before the archive is opened: its bytes, the team
    (the same bytes uploaded by two teams are two teams' layers) and our settings."""
    material = [
        archive_sha256,
        __version__,
        team.name,
        team.layer_prefix,
        ",".join(map(target_label, settings.targets)),
        ",".join(map(target_label, settings.enabled_targets)),
        hashlib.sha256(index_url.encode()).hexdigest(),
        ",".join(sorted(settings.allow_sdist)),
    ]
    return hashlib.sha256("|".join(material).encode()).hexdigest()


def project_targets(config: project.ProjectConfig, settings: Settings) -> tuple[Target, ...]:
    """The project's own targets, or the stack's; each must be one the stack can check."""
    wanted = config.targets or settings.targets
    enabled = settings.enabled_targets
    missing = [target_label(t) for t in wanted if t not in enabled]
    if missing:
        raise ProjectError(
            f"The project asks for {', '.join(missing)}, which this stack does not build (it "
            f"builds {', '.join(map(target_label, enabled))}): remove them from "
            "[tool.layer-builder] targets, or ask the operator to add them to the stack's Runtimes "
            "and Architectures parameters (TARGETS)."
        )
    return wanted


@dataclass(frozen=True)
class Inputs:
    """What every target's build of one upload shares."""

    upload: Upload
    team: Team
    environ: Mapping[str, str]
    deadline: float | None
    index_url: str
    #: The cache's HMAC key from CACHE_KEY_SECRET; None: no shared S3 level (entries from S3
    #: could not be told from forged ones), and a key file local to this container.
    signing_key: bytes | None


def build_request(
    inputs: Inputs,
    source: Path,
    output: Path,
    target: Target,
    settings: Settings,
    adapters: Adapters,
) -> BuildRequest:
    return BuildRequest(
        source=source,
        output=output,
        target=target,
        # An upload cannot pick an index: the operator's URL, or the installer's default.
        index=IndexPolicy(override=inputs.index_url, environ={}, allow_lock_urls=False),
        allow_sdist=settings.allow_sdist,
        layer_prefix=inputs.team.layer_prefix,
        source_name=inputs.upload.filename,
        cache_dir=Path(settings.cache_dir),
        deadline=inputs.deadline,
        environ=inputs.environ,
        sandbox=adapters.sandbox,
        signing_key=inputs.signing_key,
        cache_scope=inputs.team.name,
        remote_cache=adapters.cache if inputs.signing_key else None,
    )


def _build_targets(
    inputs: Inputs, archive: Path, scratch: Path, settings: Settings, adapters: Adapters
) -> list[tuple[Target, BuildResult]]:
    """Every target built (none published yet): one unpack, one build per target."""
    dest = scratch / "src"
    dest.mkdir()
    unpacked = unpack.unpack(archive, dest)
    config = project.load_config(unpacked.root, inputs.upload.filename)
    targets = project_targets(config, settings)
    built = []
    for number, target in enumerate(targets):
        result = build(
            build_request(
                inputs, unpacked.root, scratch / f"layer-{number}.zip", target, settings, adapters
            )
        )
        report = result.report
        report.layer_name = project.target_layer_name(report.layer_name, target, targets[0])
        report.warnings = list(
            dict.fromkeys([*unpacked.warnings, *report.warnings, *adapters.cache.errors])
        )
        adapters.cache.errors.clear()
        built.append((target, result))
    return built


def _page(result: BuildResult) -> tuple[str, str]:
    """The layer's HTML picture; a page that cannot be drawn costs a warning, not the build."""
    try:
        from .. import htmlreport  # here, not at import: it is the builder's slowest import

        return htmlreport.html_for_zip(result.output, result.report.to_dict()), ""
    except Exception as exc:  # a report, not a reason to refuse a layer that passed every check
        return "", f"The HTML report could not be drawn: {type(exc).__name__}: {exc}"


def _publish_targets(
    built: list[tuple[Target, BuildResult]], team: Team, adapters: Adapters
) -> list[TargetResult]:
    results = []
    for target, result in built:
        published = publish(result.output, result.report, adapters.layers, adapters.artifacts, team)
        page, problem = _page(result)
        if problem:
            result.report.warnings.append(problem)
        results.append(
            TargetResult(
                target_label(target),
                result.report.layer_name,
                published.version_arn,
                not published.reused,
                build=result.report.to_dict(),
                page=page,
            )
        )
    return results


def _attach_targets(
    outcome: Outcome, team: Team, adapters: Adapters, deadline: float | None
) -> None:
    family = frozenset(unversioned(t.version_arn) for t in outcome.targets)
    subscribed = outcome.layer_name in team.subscribed_layers
    groups, alone = route(
        team.consumers,
        adapters.functions,
        [t.target for t in outcome.targets],
        lambda state: any(unversioned(x.arn) in family for x in state.layers),
        subscribed,
    )
    outcome.unattached = [asdict(a) for a in alone]
    for result in outcome.targets:
        release = Release(
            result.layer_name,
            result.version_arn,
            result.build.get("unzipped_bytes", 0),
            outcome.upload.order,
            result.target,
            subscribed,
            family - {unversioned(result.version_arn)},
        )
        result.state, attachments = attach(
            release,
            groups[result.target],
            team,
            adapters.functions,
            adapters.book,
            adapters.pointer,
            deadline,
        )
        # Copies, not vars(a): on CPython 3.13.0 the GC emptied a layer list reached only through
        # an Attachment's materialised __dict__ (3.13 managed-dict bugs, python/cpython#130327).
        result.attachments = [asdict(a) for a in attachments]


def _after_publish(outcome: Outcome, team: Team, settings: Settings, adapters: Adapters) -> None:
    """The stack's and the team's sharing on every version (idempotent; a failure is retried),
    then the stack's retention once the consumers hold the new version (a failure is a warning:
    the daily sweep does it again). Retention never deletes a version a function uses or the
    pointer names."""
    grants = lifecycle.team_grants(team, settings.share_accounts, settings.share_organization)
    used: dict[str, list[str]] | None = None  # the account's functions, listed once per upload
    for result in outcome.targets:
        number = int(result.version_arn.rsplit(":", 1)[1])
        if grants:
            result.sharing = lifecycle.apply_sharing(
                result.layer_name, number, grants, adapters.lifecycle_layers
            )
        if settings.keep_versions:
            try:
                if used is None:
                    used = lifecycle.usage(adapters.catalog.all_versions())
                decisions = lifecycle.apply_retention(
                    result.layer_name,
                    settings.keep_versions,
                    layers=adapters.lifecycle_layers,
                    catalog=adapters.catalog,
                    pointer=adapters.pointer,
                    now=datetime.now(UTC),
                    keep_label="KEEP_VERSIONS",
                    used=used,
                )
                result.retention = [d.to_dict() for d in decisions if d.action != "keep"]
            except LayerBuildError as exc:
                result.build.setdefault("warnings", []).append(
                    f"Retention (KEEP_VERSIONS={settings.keep_versions}) did not finish: {exc} "
                    "The daily sweep applies it again."
                )


def _remember(remembered: dict, team: Team) -> list[TargetResult]:
    """The targets of an earlier build of the same bytes. Names read back from the state table
    are checked as a publish checks them: everything after (attach, share, retention) trusts
    that the results' layers are the team's."""
    results = []
    for t in remembered["targets"]:
        team.require_own(t["layer_name"], "reuse")
        team.require_own(t["version_arn"], "reuse")
        results.append(
            TargetResult(t["target"], t["layer_name"], t["version_arn"], build=t["build"])
        )
    return results


def process_upload(
    upload: Upload,
    settings: Settings,
    adapters: Adapters,
    environ: Mapping[str, str],
    budget: Budget = Budget(),
) -> Outcome:
    scratch = Path(tempfile.mkdtemp(prefix="upload-"))
    outcome = Outcome(status="failed", upload=upload)
    adapters.cache.errors.clear()  # a failed build's cache errors are not this build's
    try:
        team = settings.team_for(upload.key)
        outcome.team = team.name
        inputs = Inputs(
            upload,
            team,
            environ,
            budget.build,
            adapters.secrets.index_url(),
            adapters.secrets.cache_key(),
        )
        archive, digest = adapters.artifacts.download(
            upload, scratch / "source" / local_name(upload.filename)
        )
        fingerprint = source_fingerprint(digest, settings, team, inputs.index_url)
        remembered = adapters.memo.get(fingerprint)
        if (
            remembered
            and remembered.get("targets")
            and all(adapters.layers.exists(t["version_arn"]) for t in remembered["targets"])
        ):
            # The same bytes were built before: answer at once, no build, no new version.
            outcome.targets, outcome.reused_report = (
                _remember(remembered, team),
                remembered["report"],
            )
        else:
            remembered = None
            built = _build_targets(inputs, archive, scratch, settings, adapters)
            outcome.targets = _publish_targets(built, team, adapters)
        _attach_targets(outcome, team, adapters, budget.attach)
        _after_publish(outcome, team, settings, adapters)
        states = {t.state for t in outcome.targets}
        outcome.status = (
            "superseded"
            if states == {"superseded"}
            else "unchanged"
            if remembered
            else "published"
            if outcome.published
            else "reused"
        )
        _finish(outcome, adapters, SUCCEEDED)
        if not remembered:
            adapters.memo.put(
                fingerprint,
                {
                    "report": outcome.report_key,
                    "targets": [
                        {
                            "target": t.target,
                            "layer_name": t.layer_name,
                            "version_arn": t.version_arn,
                            "build": {
                                k: t.build.get(k)
                                for k in (
                                    "content_hash",
                                    "unzipped_bytes",
                                    "zipped_bytes",
                                    "runtime",
                                    "arch",
                                )
                            },
                        }
                        for t in outcome.targets
                    ],
                },
            )
        return outcome
    except LayerBuildError as exc:
        outcome.status = "refused" if exc.permanent else "failed"
        outcome.error = redact_data(error_report(exc, MAX_REPORT_LOG_CHARS))
        _report_failure(outcome, adapters)
        if exc.permanent:
            return outcome
        raise without_secrets(exc) from None
    except Exception as exc:
        outcome.error = {
            "kind": type(exc).__name__,
            "message": redact(str(exc)),
            "retryable": "True",
        }
        _report_failure(outcome, adapters)
        raise without_secrets(exc) from None
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        evict(Path(settings.cache_dir), settings.cache_max_bytes)


def without_secrets(exc: BaseException) -> BaseException:
    """The exception Lambda records (its message and X-Ray), without the index URL's secrets."""
    text = str(exc)
    clean = redact(text)
    if clean == text:
        return exc
    if isinstance(exc, LayerBuildError):  # message-only exceptions: keep the kind for retries
        exc.args = (clean,)
        return exc
    return TransientError(f"{type(exc).__name__}: {clean}").with_traceback(exc.__traceback__)


def _finish(outcome: Outcome, adapters: Adapters, detail_type: str) -> None:
    outcome.report_key = report_key(outcome.upload, outcome.layer_name)
    for result in outcome.targets:
        if result.page:
            result.page_key = (
                report_key(outcome.upload, result.layer_name).removesuffix(".json") + ".html"
            )
            adapters.artifacts.put_html(result.page_key, result.page)
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
