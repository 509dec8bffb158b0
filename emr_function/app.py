"""EMR trigger: start the data-load clusters for one dataset, day and environment, once per event.

`emrlauncher` comes from the emr-launcher layer (/opt/python); none of it is vendored here.
The event is either the criteria themselves (direct invoke) or an EventBridge event whose
`detail` holds them (a schedule rule). A retried or duplicated event starts no second cluster.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, fields
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

import boto3
from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.idempotency import (
    DynamoDBPersistenceLayer,
    IdempotencyConfig,
    idempotent_function,
)
from aws_lambda_powertools.utilities.parser import parse
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    field_validator,
)


class LayerMissingError(ImportError):
    """The emr-launcher layer is not attached (an ImportError, so Lambda reports it as one)."""


class SettingsError(RuntimeError):
    """The function's environment variables are missing or wrong."""


class InvalidTriggerEvent(ValueError):
    """The event does not hold valid criteria. Retrying the same event cannot help."""


try:
    from emrlauncher import LaunchError
    from emrlauncher.data_loader import trigger_data_load
except ModuleNotFoundError as exc:
    # yaml ships in the same layer: without it the layer is attached but incomplete
    if (exc.name or "").split(".")[0] not in {"emrlauncher", "yaml"}:
        raise
    raise LayerMissingError(
        f"Cannot import {exc.name}: attach the emr-launcher layer to this function (stack "
        "parameter EmrLauncherLayerArn, or let layer-builder attach its latest build); it "
        "provides /opt/python."
    ) from exc

CONFIG_DIR = Path(__file__).parent / "config"
REGION_NAME = r"^[a-z]{2}(-[a-z]+)+-\d+$"
VARIABLE_NAME = r"^[A-Z][A-Z0-9_]*$"
#: What may follow JOB_SCRIPT_PREFIX: S3 key characters in plain segments. No "." or ".."
#: segment (Hadoop normalises paths, so "jobs/../x.py" would leave the prefix), no empty one.
SCRIPT_PATH = re.compile(
    r"(?!\.{1,2}(/|$))[\w!*'()=+-][\w.!*'()=+-]*(/(?!\.{1,2}(/|$))[\w.!*'()=+-]+)*", re.ASCII
)


@dataclass(frozen=True)
class Settings:
    """The function's environment; each field is read from the upper-cased variable of its name."""

    idempotency_table: str
    emr_service_role: str
    emr_job_flow_role: str
    emr_log_uri: str
    #: The only S3 prefix a JOB_SCRIPT may come from (template: JobScriptPrefix).
    job_script_prefix: str

    @classmethod
    def from_env(cls) -> Settings:
        values = {f.name: os.environ.get(f.name.upper(), "").strip() for f in fields(cls)}
        missing = [name.upper() for name, value in values.items() if not value]
        if missing:
            raise SettingsError(
                f"Missing environment variable(s) {', '.join(missing)}: set them on the function "
                "(template.yaml, EmrTriggerFunction Environment)."
            )
        if not values["emr_log_uri"].startswith("s3://"):
            raise SettingsError(f"EMR_LOG_URI must be an s3:// URI, not {values['emr_log_uri']!r}.")
        prefix = values["job_script_prefix"]
        if not (
            prefix.startswith("s3://") and prefix.endswith("/") and len(prefix) > len("s3://x/")
        ):
            raise SettingsError(
                f"JOB_SCRIPT_PREFIX must be an s3://bucket/prefix/ URI ending in '/', not {prefix!r}."
            )
        return cls(**values)

    def check_job_script(self, variables: dict[str, str]) -> None:
        """spark-submit runs JOB_SCRIPT: only a script under the configured prefix is accepted."""
        script = variables.get("JOB_SCRIPT")
        if script is None:
            return  # the config files then fail on ${JOB_SCRIPT}, starting nothing
        rest = script.removeprefix(self.job_script_prefix)
        if rest == script or not SCRIPT_PATH.fullmatch(rest):
            raise InvalidTriggerEvent(
                f"Invalid trigger event: variables.JOB_SCRIPT {script!r} is not a script under "
                f"{self.job_script_prefix} (stack parameter JobScriptPrefix). Put the job script "
                "under that prefix, or ask the operator to change JobScriptPrefix."
            )

    def variables(self) -> dict[str, str]:
        """Placeholders for the config files: EMR_SERVICE_ROLE, EMR_JOB_FLOW_ROLE, EMR_LOG_URI."""
        return {
            f.name.upper(): getattr(self, f.name) for f in fields(self) if f.name.startswith("emr_")
        }


#: Placeholders the function fills itself; an event may not override them.
RESERVED = {
    "DATASET",
    "RUN_DATE",
    "ENVIRONMENT",
    "REGION",
    "EMR_SERVICE_ROLE",
    "EMR_JOB_FLOW_ROLE",
    "EMR_LOG_URI",
}


class TriggerCriteria(BaseModel):
    """What to load. `environment` picks config/<environment>.yaml."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    dataset: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")]
    #: None: the day the event fires (EventBridge `time`), else today (UTC).
    run_date: date | None = None
    environment: Literal["dev", "prod"]
    regions: Annotated[list[Annotated[str, Field(pattern=REGION_NAME)]], Field(min_length=1)]
    variables: dict[Annotated[str, Field(pattern=VARIABLE_NAME)], str] = Field(default_factory=dict)

    @field_validator("run_date", mode="before")
    @classmethod
    def _iso_date(cls, value: Any) -> Any:
        # pydantic would read a number as a Unix timestamp
        if value is not None and not isinstance(value, str | date):
            raise ValueError("use an ISO date such as 2026-11-27")
        return value

    @field_validator("regions")
    @classmethod
    def _unique_sorted(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("list each region once")
        return sorted(value)  # the idempotency key then ignores the order

    @field_validator("variables")
    @classmethod
    def _not_reserved(cls, value: dict[str, str]) -> dict[str, str]:
        if clash := sorted(RESERVED & set(value)):
            raise ValueError(
                f"{', '.join(clash)} cannot be set in variables: the function sets them"
            )
        return value

    @property
    def run_day(self) -> str:
        """run_date as ISO text; parse_criteria sets it (today) when the event leaves it out."""
        if self.run_date is None:
            raise InvalidTriggerEvent("run_date is missing: send it, or parse the event first.")
        return self.run_date.isoformat()

    def launch_variables(self, settings: Settings) -> dict[str, str]:
        return {
            **self.variables,
            **settings.variables(),
            "DATASET": self.dataset,
            "RUN_DATE": self.run_day,
            "ENVIRONMENT": self.environment,
        }


class ScheduledTrigger(BaseModel):
    """An EventBridge event whose detail holds the criteria. `version` is not required, so the
    event `sam local generate-event cloudwatch scheduled-event` makes is accepted too."""

    source: str
    detail_type: str = Field(alias="detail-type")
    time: datetime | None = None
    detail: TriggerCriteria

    def criteria(self) -> TriggerCriteria:
        if self.detail.run_date is None and self.time is not None:
            return self.detail.model_copy(update={"run_date": self.time.date()})
        return self.detail


TriggerEvent = Annotated[
    Annotated[TriggerCriteria, Tag("direct")] | Annotated[ScheduledTrigger, Tag("eventbridge")],
    Discriminator(
        lambda event: "eventbridge" if isinstance(event, dict) and "detail" in event else "direct"
    ),
]

logger = Logger()
tracer = Tracer()
metrics = Metrics()
settings = Settings.from_env()
#: One session for the sandbox's life: EMR clients then share its loaded API models.
session = boto3.session.Session()
persistence = DynamoDBPersistenceLayer(table_name=settings.idempotency_table, boto3_session=session)
idempotency = IdempotencyConfig(
    event_key_jmespath="[dataset, run_date, environment, regions]",
    # the same key with other variables is refused, not answered with the first event's clusters
    payload_validation_jmespath="variables",
    raise_on_no_idempotency_key=True,
    # Lambda may deliver an async event (or a retry) up to its maximum event age later: the
    # record must outlive it, or a late duplicate starts second clusters (template: 6 h).
    expires_after_seconds=24 * 3600,
)


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics(capture_cold_start_metric=True)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    idempotency.register_lambda_context(context)
    criteria = parse_criteria(event)
    settings.check_job_script(criteria.variables)
    metrics.add_metric(name="TriggerEventsAccepted", unit=MetricUnit.Count, value=1)
    logger.append_keys(
        dataset=criteria.dataset,
        run_date=criteria.run_day,
        environment=criteria.environment,
    )
    result = launch(criteria=criteria)
    logger.info("EMR data load triggered", extra=result)
    return {
        "dataset": criteria.dataset,
        "run_date": criteria.run_day,
        "environment": criteria.environment,
        **result,
    }


def parse_criteria(event: Any) -> TriggerCriteria:
    try:
        # An Annotated union is no type[T] to mypy; pydantic validates it all the same.
        parsed = parse(event=event, model=TriggerEvent)  # type: ignore[call-overload]
    except ValidationError as exc:
        # loc[0] is the union tag (direct/eventbridge); the rest is the field path
        problems = "; ".join(
            f"{'.'.join(map(str, error['loc'][1:])) or 'event'}: {error['msg']}"
            for error in exc.errors()
        )
        raise InvalidTriggerEvent(
            f"Invalid trigger event: {problems}. Send dataset, run_date, environment, regions and "
            "variables directly, or as the detail of an EventBridge event."
        ) from exc
    criteria = parsed.criteria() if isinstance(parsed, ScheduledTrigger) else parsed
    if criteria.run_date is None:
        criteria = criteria.model_copy(update={"run_date": datetime.now(UTC).date()})
    return criteria


@idempotent_function(
    data_keyword_argument="criteria", persistence_store=persistence, config=idempotency
)
def launch(criteria: TriggerCriteria) -> dict[str, Any]:
    """Runs once per dataset, run_date, environment and regions; a repeat gets the stored result."""
    try:
        clusters = trigger_data_load(
            regions=criteria.regions,
            cluster_config_path=CONFIG_DIR / "configurations.json",
            default_config_path=CONFIG_DIR / "default.yaml",
            env_config_path=CONFIG_DIR / f"{criteria.environment}.yaml",
            input_vars=criteria.launch_variables(settings),
            session=session,
        )
        error = None
    except LaunchError as exc:
        if not exc.launched:
            raise  # nothing runs: the record is dropped and a retry may try again
        # Some clusters run: keep this result, so a retry cannot start them a second time.
        logger.error("EMR refused a region; not retrying the others", extra={"error": str(exc)})
        clusters, error = exc.launched, str(exc)
    not_started = [region for region in criteria.regions if region not in clusters]
    metrics.add_metric(name="ClustersStarted", unit=MetricUnit.Count, value=len(clusters))
    metrics.add_metric(name="RegionsNotStarted", unit=MetricUnit.Count, value=len(not_started))
    return {"clusters": clusters, "not_started": not_started, "error": error}
