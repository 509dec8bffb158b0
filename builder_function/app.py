"""Builder Lambda: S3 upload of a Pipfile project → published, attached layer version."""

import os

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.idempotency import (
    DynamoDBPersistenceLayer,
    IdempotencyConfig,
    idempotent_function,
)
from aws_lambda_powertools.utilities.idempotency.exceptions import IdempotencyAlreadyInProgressError
from aws_lambda_powertools.utilities.typing import LambdaContext

from layer_builder.errors import InputError
from layer_builder.service.aws import Adapters, Clients
from layer_builder.service.process import forbid_environment_reads
from layer_builder.service.service import deadline_from, process_upload
from layer_builder.service.settings import Settings
from layer_builder.service.uploads import Upload, parse_uploads

forbid_environment_reads()  # builds run uploaded code: keep our credentials unreadable
logger = Logger()
tracer = Tracer()
metrics = Metrics()
settings = Settings.from_env(os.environ)
clients = Clients.create()
adapters = Adapters.create(settings, clients)
# The idempotency store shares the adapters' DynamoDB client, so it gets the same standard retries
# (Powertools would otherwise build its own client with botocore's legacy retry mode).
persistence = DynamoDBPersistenceLayer(table_name=settings.idempotency_table,
                                       boto3_client=clients.dynamodb)
idempotency = IdempotencyConfig(event_key_jmespath="[bucket, key, version_id]",
                                raise_on_no_idempotency_key=True, expires_after_seconds=24 * 3600)


@idempotent_function(data_keyword_argument="upload", config=idempotency,
                     persistence_store=persistence)
def build_upload(upload: dict, deadline: float) -> dict:
    outcome = process_upload(Upload.from_identity(upload), settings, adapters, os.environ, deadline)
    return outcome.summary()


@metrics.log_metrics
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
    results = []
    for upload in uploads:
        deadline = deadline_from(context.get_remaining_time_in_millis(), settings.finish_margin_s)
        try:
            result = build_upload(upload=upload.identity(), deadline=deadline)
        except IdempotencyAlreadyInProgressError:
            # A duplicate delivery while the first is still building: Lambda retries it later
            # and then gets the stored result. Not a failed build.
            metrics.add_metric(name="BuildDuplicateInProgress", unit=MetricUnit.Count, value=1)
            raise
        except Exception:
            metrics.add_metric(name="BuildFailed", unit=MetricUnit.Count, value=1)
            raise
        logger.info("Upload processed", **result)
        metrics.add_metric(name=f"Build{result['status'].title()}", unit=MetricUnit.Count, value=1)
        metrics.add_metric(name="LayerUnzippedBytes", unit=MetricUnit.Bytes, value=result["unzipped_bytes"])
        results.append(result)
    return {"results": results}
