"""trigger_data_load: start one EMR cluster per requested region from the config files."""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .config import LaunchConfig
from .errors import ConfigError, LaunchError, RequestError

if TYPE_CHECKING:  # boto3 comes with the Lambda runtime, not with this layer
    import boto3

LOGGER = logging.getLogger(__name__)
VARIABLE_NAME = re.compile(r"[A-Z][A-Z0-9_]*")


def trigger_data_load(
    regions: Sequence[str],
    cluster_config_path: str | Path,
    default_config_path: str | Path,
    env_config_path: str | Path,
    input_vars: Mapping[str, str | int | float] | None = None,
    *,
    session: boto3.session.Session | None = None,
) -> dict[str, str]:
    """Start one cluster in every region and return {region: cluster id}.

    The arguments keep the seed library's order and names. Every region's request is built and
    checked against the EMR API model before the first cluster starts, so a config mistake
    starts nothing. `input_vars` is never modified; ${REGION} is the region being launched.
    """
    regions = _regions(regions)
    variables = _variables(input_vars)
    config = LaunchConfig.load(default_config_path, env_config_path, cluster_config_path)
    if session is None:
        import boto3

        session = boto3.session.Session()

    launches = []
    for region in regions:
        request = config.job_flow_request(region, variables)
        client = session.client("emr", region_name=region)
        _check_against_api(client, request, region)
        launches.append((region, client, request))

    from botocore.exceptions import BotoCoreError, ClientError

    started: dict[str, str] = {}
    for region, client, request in launches:
        try:
            cluster_id = client.run_job_flow(**request)["JobFlowId"]
        except (BotoCoreError, ClientError) as exc:
            raise LaunchError(region, str(exc), started) from exc
        LOGGER.info("Started EMR cluster %s (%s) in %s", cluster_id, request["Name"], region)
        started[region] = cluster_id
    return started


def _regions(regions: Sequence[str]) -> list[str]:
    # a bare string would otherwise be iterated letter by letter
    if isinstance(regions, str) or not regions:
        raise RequestError("regions must be a non-empty list of region names, e.g. ['us-east-1'].")
    bad = [r for r in regions if not isinstance(r, str) or not r]
    if bad:
        raise RequestError(
            f"regions holds invalid entries {bad!r}: use region names such as us-east-1."
        )
    duplicates = sorted({r for r in regions if list(regions).count(r) > 1})
    if duplicates:
        raise RequestError(
            f"regions lists {', '.join(duplicates)} more than once: list each region once."
        )
    return list(regions)


def _variables(input_vars: Mapping[str, Any] | None) -> dict[str, str]:
    variables: dict[str, str] = {}
    for name, value in (input_vars or {}).items():
        if not isinstance(name, str) or not VARIABLE_NAME.fullmatch(name):
            raise RequestError(
                f"Variable name {name!r} cannot match a placeholder: "
                "use upper-case letters, digits and _."
            )
        if name == "REGION":
            raise RequestError(
                "Do not pass REGION in the variables: it is set to each launched region."
            )
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise RequestError(
                f"Variable {name} must be a string or a number, not {type(value).__name__}."
            )
        variables[name] = str(value)
    return variables


def _check_against_api(client: Any, request: dict[str, Any], region: str) -> None:
    """Let botocore check field names and types now, while nothing has been started."""
    from botocore.exceptions import ParamValidationError
    from botocore.validate import validate_parameters

    shape = client.meta.service_model.operation_model("RunJobFlow").input_shape
    try:
        validate_parameters(request, shape)
    except ParamValidationError as exc:
        raise ConfigError(f"The EMR request for {region} is invalid: {exc}") from exc
