"""Builder Lambda: S3 upload of a team's Pipfile project → published, attached layer versions."""

import os

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.logging.formatter import LambdaPowertoolsFormatter
from aws_lambda_powertools.metrics import MetricUnit, single_metric
from aws_lambda_powertools.utilities.idempotency import (
    DynamoDBPersistenceLayer,
    IdempotencyConfig,
    idempotent_function,
)
from aws_lambda_powertools.utilities.idempotency.exceptions import IdempotencyAlreadyInProgressError
from aws_lambda_powertools.utilities.typing import LambdaContext

from layer_builder.errors import InputError
from layer_builder.redact import RedactingFilter, RedactingFormatterMixin
from layer_builder.service.aws import Adapters, Clients
from layer_builder.service.process import forbid_environment_reads
from layer_builder.service.service import Budget, process_upload
from layer_builder.service.settings import Settings
from layer_builder.service.uploads import Upload, parse_uploads


class RedactingFormatter(RedactingFormatterMixin, LambdaPowertoolsFormatter):
    """Powertools' JSON lines with the index URL's secrets removed, exceptions included."""


forbid_environment_reads()  # keep our credentials unreadable to any process we start
logger = Logger(logger_formatter=RedactingFormatter())
logger.registered_handler.addFilter(RedactingFilter())
tracer = Tracer()
metrics = Metrics()
settings = Settings.from_env(os.environ)
clients = Clients.create()
adapters = Adapters.create(settings, clients)
# The idempotency store shares the adapters' DynamoDB client, so it gets the same standard retries
# (Powertools would otherwise build its own client with botocore's legacy retry mode).
persistence = DynamoDBPersistenceLayer(
    table_name=settings.state_table, boto3_client=clients.dynamodb
)
idempotency = IdempotencyConfig(
    event_key_jmespath="[bucket, key, version_id]",
    raise_on_no_idempotency_key=True,
    expires_after_seconds=24 * 3600,
)


@idempotent_function(
    data_keyword_argument="upload", config=idempotency, persistence_store=persistence
)
def build_upload(upload: dict, budget: Budget) -> dict:
    outcome = process_upload(Upload.from_identity(upload), settings, adapters, os.environ, budget)
    return outcome.summary()


def count_build(status: str) -> None:
    """One metric, `Build`, with the outcome as its Status dimension (alarms pick a status)."""
    with single_metric(
        name="Build",
        unit=MetricUnit.Count,
        value=1,
        namespace=metrics.provider.namespace,
        default_dimensions={"service": metrics.provider.service},
    ) as metric:
        metric.add_dimension(name="Status", value=status)


def run_upload(upload: Upload, context: LambdaContext) -> dict:
    budget = Budget.from_remaining(context.get_remaining_time_in_millis(), settings.finish_margin_s)
    try:
        result = build_upload(upload=upload.identity(), budget=budget)
    except IdempotencyAlreadyInProgressError:
        # A duplicate delivery while the first is still building: Lambda retries it later
        # and then gets the stored result. Not a failed build.
        metrics.add_metric(name="BuildDuplicateInProgress", unit=MetricUnit.Count, value=1)
        raise
    except Exception:
        logger.exception("Upload failed; Lambda retries it", key=upload.key)
        count_build("failed")
        raise
    logger.info("Upload processed", **result)
    count_build(result["status"])
    metrics.add_metric(
        name="LayerUnzippedBytes", unit=MetricUnit.Bytes, value=result["unzipped_bytes"]
    )
    return result


@metrics.log_metrics(capture_cold_start_metric=True)
@tracer.capture_lambda_handler
@logger.inject_lambda_context
def handler(event: dict, context: LambdaContext) -> dict:
    idempotency.register_lambda_context(context)
    try:
        uploads, ignored = parse_uploads(event, settings.source_prefix)
    except InputError as exc:
        logger.error("Refused event", error=str(exc))
        return {"results": [], "error": str(exc)}
    if ignored:
        logger.warning("Ignored keys that are not archives under the source prefix", keys=ignored)
    return {"results": [run_upload(upload, context) for upload in uploads]}
