"""Read the three config files and turn them into one RunJobFlow request per region.

default.yaml       Emr: Name, LogUri, ReleaseLabel, Applications, BootstrapActions, Steps, Tags, ...
<environment>.yaml Emr: <region>: Instances, JobFlowRole, ServiceRole (deep-merged over the default)
configurations     a JSON list of EMR Configurations

Placeholders are substituted on the parsed values, never on the text, so a value can never
change the structure of the document.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError, PlaceholderError

#: Only upper-case names are ours: Hadoop values such as ${user.name} are left alone.
PLACEHOLDER = re.compile(r"\$\{([A-Z][A-Z0-9_]*)\}")
COMMAND_RUNNER = "command-runner.jar"
REGION_FIELDS = ("Instances", "JobFlowRole", "ServiceRole")


@dataclass(frozen=True)
class LaunchConfig:
    """The parsed files, with placeholders still in place."""

    default: dict[str, Any]
    regions: dict[str, Any]
    configurations: list[Any]
    default_file: str
    environment_file: str
    configurations_file: str

    @classmethod
    def load(
        cls, default: str | Path, environment: str | Path, configurations: str | Path
    ) -> LaunchConfig:
        default_name, environment_name = Path(default).name, Path(environment).name
        default_emr = _emr_section(_load_yaml(default), default_name)
        regions = _emr_section(_load_yaml(environment), environment_name)
        confs = _load_json(configurations)
        if not isinstance(confs, list) or not all(
            isinstance(c, dict) and "Classification" in c for c in confs
        ):
            raise ConfigError(
                f"{Path(configurations).name} must hold a JSON list of EMR configurations, "
                'each with a "Classification".'
            )
        if "Configurations" in default_emr:
            raise ConfigError(
                f"Emr.Configurations is set in {default_name}: "
                f"move it to {Path(configurations).name}."
            )
        return cls(
            default_emr, regions, confs, default_name, environment_name, Path(configurations).name
        )

    def job_flow_request(self, region: str, variables: Mapping[str, str]) -> dict[str, Any]:
        """The complete, validated RunJobFlow arguments for one region."""
        block = self.regions.get(region)
        if not isinstance(block, dict):
            known = ", ".join(sorted(self.regions)) or "none"
            raise ConfigError(
                f"Region {region} is not configured in {self.environment_file}: add "
                f"Emr.{region} with {', '.join(REGION_FIELDS)} (configured regions: {known})."
            )
        values = {**variables, "REGION": region}
        request = deep_merge(
            substitute(self.default, values, "Emr", self.default_file),
            substitute(block, values, f"Emr.{region}", self.environment_file),
        )
        _validate(request, block, region, self)
        request["Steps"] = [_step(step) for step in request["Steps"]]
        if isinstance(request.get("Tags"), dict):
            request["Tags"] = [{"Key": k, "Value": str(v)} for k, v in request["Tags"].items()]
        request["Configurations"] = substitute(
            self.configurations, values, "", self.configurations_file
        )
        request.setdefault("VisibleToAllUsers", True)
        return request


def substitute(value: Any, variables: Mapping[str, str], path: str, file: str) -> Any:
    """A copy of `value` with ${NAME} filled in every string; the input is never modified."""
    if isinstance(value, str):

        def fill(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in variables:
                raise PlaceholderError(name, f"{path} in {file}", sorted(variables))
            return variables[name]

        return PLACEHOLDER.sub(fill, value)
    if isinstance(value, list):
        return [substitute(item, variables, f"{path}[{i}]", file) for i, item in enumerate(value)]
    if isinstance(value, dict):
        return {
            key: substitute(item, variables, f"{path}.{key}", file) for key, item in value.items()
        }
    return value


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Mappings merge key by key; anything else in `override` (lists too) replaces the base."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(merged.get(key), Mapping) and isinstance(value, Mapping):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _load(path: str | Path, parse: Callable[[str], Any], kind: str,
          errors: type[Exception] | tuple[type[Exception], ...]) -> Any:
    try:
        return parse(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"Cannot read config file {path}: {exc.strerror}.") from exc
    except errors as exc:
        raise ConfigError(f"{Path(path).name} is not valid {kind}: {exc}") from exc


def _load_yaml(path: str | Path) -> Any:
    return _load(path, yaml.safe_load, "YAML", yaml.YAMLError)


def _load_json(path: str | Path) -> Any:
    return _load(path, json.loads, "JSON", json.JSONDecodeError)


def _emr_section(document: Any, file: str) -> dict[str, Any]:
    if not isinstance(document, dict) or not isinstance(document.get("Emr"), dict):
        raise ConfigError(f"Emr is missing in {file}: the file needs a top-level Emr: mapping.")
    return document["Emr"]


def _validate(
    request: dict[str, Any], block: dict[str, Any], region: str, config: LaunchConfig
) -> None:
    def where(field: str) -> str:
        root = field.split(".")[0].split("[")[0]
        if root in block or root in REGION_FIELDS:
            return f"Emr.{region}.{field} in {config.environment_file}"
        return f"Emr.{field} in {config.default_file}"

    def need(field: str, kind: type, value: Any) -> None:
        if value is None:
            name, _, file = where(field).partition(" in ")
            raise ConfigError(f"{name} is missing in {file}.")
        if not isinstance(value, kind) or (kind is not dict and not value):
            kinds = {str: "string", list: "list", dict: "mapping"}
            raise ConfigError(f"{where(field)} must be a non-empty {kinds[kind]}.")

    for field in ("Name", "ReleaseLabel"):
        need(field, str, request.get(field))
    need("Instances", dict, request.get("Instances"))
    for field in ("JobFlowRole", "ServiceRole"):
        need(field, str, request.get(field))
    need("Steps", list, request.get("Steps"))
    for i, step in enumerate(request["Steps"]):
        need(f"Steps[{i}]", dict, step)
        need(f"Steps[{i}].Name", str, step.get("Name"))
        if "HadoopJarStep" not in step:
            need(f"Steps[{i}].Args", list, step.get("Args"))
    for field in ("Applications", "BootstrapActions"):
        if field in request and not isinstance(request[field], list):
            raise ConfigError(f"{where(field)} must be a list.")
    if "Tags" in request and not isinstance(request["Tags"], list | dict):
        raise ConfigError(f"{where('Tags')} must be a list of Key/Value pairs or a mapping.")
    if "LogUri" in request and not str(request["LogUri"]).startswith("s3://"):
        raise ConfigError(f"{where('LogUri')} must be an s3:// URI.")


def _step(step: dict[str, Any]) -> dict[str, Any]:
    """Shorthand {Name, ActionOnFailure, Args} becomes a command-runner step; full steps pass."""
    if "HadoopJarStep" in step:
        return step
    full = {key: value for key, value in step.items() if key != "Args"}
    full["HadoopJarStep"] = {"Jar": COMMAND_RUNNER, "Args": [str(arg) for arg in step["Args"]]}
    return full
