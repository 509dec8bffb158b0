"""Maintenance Lambda: the daily retention sweep and the operators' rollback (README, "Layer
lifecycle"); layer_builder/service/maintenance.py does the work.

A refused event (bad shape, unknown team, another team's layer, a deleted version) returns
{"status": "refused", "error": ...} and changes nothing: retrying cannot help. Transient failures
raise, so Lambda retries the event (the template's EventInvokeConfig).
"""

import os
from datetime import UTC, datetime

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.parser import ValidationError, parse
from aws_lambda_powertools.utilities.typing import LambdaContext

from layer_builder.errors import InputError
from layer_builder.service import maintenance
from layer_builder.service.settings import MaintenanceSettings

logger = Logger()
metrics = Metrics()
settings = MaintenanceSettings.from_env(os.environ)
stores = maintenance.Stores.create(settings)


@metrics.log_metrics
@logger.inject_lambda_context
def handler(event: dict, context: LambdaContext) -> dict:
    try:
        request = parse(event=event, model=maintenance.Request).root
        result = maintenance.run(request, settings, stores, datetime.now(UTC))
    except (InputError, ValidationError) as exc:
        error = maintenance.refusal(exc)
        logger.warning("Maintenance event refused", error=error)
        metrics.add_metric(name="MaintenanceRefused", unit=MetricUnit.Count, value=1)
        return {"status": "refused", "error": error}
    deleted = sum(len(numbers) for numbers in result.get("deleted", {}).values())
    metrics.add_metric(name="LayerVersionsDeleted", unit=MetricUnit.Count, value=deleted)
    logger.info("Maintenance done", **result)
    return result
