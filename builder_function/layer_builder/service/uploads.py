"""S3 event → typed uploads. Keys arrive URL-encoded (a space as `+`); each record is decoded."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePosixPath
from urllib.parse import unquote_plus

from aws_lambda_powertools.utilities.parser import ValidationError, parse
from aws_lambda_powertools.utilities.parser.models import S3Model

from ..errors import InputError

ARCHIVE_SUFFIXES = (".zip", ".tar.gz", ".tgz")


@dataclass(frozen=True)
class Upload:
    bucket: str
    key: str
    version_id: str
    sequencer: str
    size: int
    event_time: str

    @property
    def filename(self) -> str:
        return PurePosixPath(self.key).name

    @property
    def order(self) -> str:
        """What newer/older compares: event time, then S3's sequencer (hex, padded to compare)."""
        return f"{self.event_time}|{self.sequencer.rjust(32, '0')}"

    def identity(self) -> dict[str, str]:
        """Idempotency data: one build per bucket, decoded key and object version."""
        return {
            "bucket": self.bucket,
            "key": self.key,
            "version_id": self.version_id,
            "sequencer": self.sequencer,
            "event_time": self.event_time,
            "size": str(self.size),
        }

    @classmethod
    def from_identity(cls, data: dict[str, str]) -> Upload:
        return cls(
            data["bucket"],
            data["key"],
            data["version_id"],
            data["sequencer"],
            int(data["size"]),
            data["event_time"],
        )


def parse_uploads(event: dict, source_prefix: str) -> tuple[list[Upload], list[str]]:
    """Uploads to build, and the keys ignored (outside the prefix or not an archive)."""
    try:
        model = parse(event=event, model=S3Model)
    except ValidationError as exc:
        raise InputError(
            f"The event is not an S3 notification: {exc.errors()[:1]}. "
            "Send S3 ObjectCreated events (see events/s3-put.json)."
        ) from None
    uploads, ignored = [], []
    for record in model.Records:
        s3_object = record.s3.object
        if s3_object is None:  # not an object notification (e.g. a test event)
            continue
        key = unquote_plus(s3_object.key)
        if not key.startswith(source_prefix) or not key.lower().endswith(ARCHIVE_SUFFIXES):
            ignored.append(key)
            continue
        uploads.append(
            Upload(
                bucket=record.s3.bucket.name,
                key=key,
                version_id=s3_object.versionId or "",
                sequencer=s3_object.sequencer or "",
                size=int(s3_object.size or 0),
                event_time=record.eventTime.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            )
        )
    return uploads, ignored
