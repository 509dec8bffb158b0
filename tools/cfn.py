"""Read template.yaml the way CloudFormation would, for the local stand-in and the tests.

moto cannot apply the SAM transform, so the demo and the end-to-end tests take names, settings and
environment variables from the template through this small resolver instead of repeating them.
It understands the intrinsic functions the template uses: Ref, Sub, Join, Split, Select, If,
Equals, Not, And, Or, Condition, GetAtt (Arn, an SSM parameter's Value, a queue's QueueName) and
the pseudo parameters, and a resource's Condition (`enabled`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = ROOT / "template.yaml"
NO_VALUE = object()
_TAGS = ("Ref", "Sub", "Join", "Split", "Select", "If", "Equals", "Not", "GetAtt", "And", "Or",
         "Condition", "FindInMap", "Base64", "GetAZs", "ImportValue", "Cidr")


class CfnLoader(yaml.SafeLoader):
    """A YAML loader that keeps CloudFormation short-form tags as {"Fn::X": ...} / {"Ref": ...}."""


def _constructor(tag: str):
    key = "Ref" if tag == "Ref" else ("Condition" if tag == "Condition" else f"Fn::{tag}")

    def construct(loader: yaml.SafeLoader, node: yaml.Node) -> dict[str, Any]:
        if isinstance(node, yaml.ScalarNode):
            value: Any = loader.construct_scalar(node)
            if tag == "GetAtt":
                value = value.split(".", 1)
        elif isinstance(node, yaml.SequenceNode):
            value = loader.construct_sequence(node, deep=True)
        else:
            value = loader.construct_mapping(node, deep=True)
        return {key: value}

    return construct


for _tag in _TAGS:
    CfnLoader.add_constructor(f"!{_tag}", _constructor(_tag))


def load_template(path: Path = TEMPLATE) -> dict[str, Any]:
    return yaml.load(path.read_text(encoding="utf-8"), Loader=CfnLoader)  # noqa: S506 (safe subclass)


@dataclass
class Resolver:
    template: dict[str, Any]
    stack_name: str = "layer-builder"
    account: str = "123456789012"
    region: str = "us-east-1"
    overrides: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.parameters: dict[str, Any] = {}
        for name, spec in self.template.get("Parameters", {}).items():
            raw = str(self.overrides.get(name, spec.get("Default", "")))
            self.parameters[name] = raw.split(",") if spec.get("Type") == "CommaDelimitedList" else raw
        # Conditions may name other conditions (Condition: X), in any order: evaluate on demand.
        self.conditions: dict[str, bool] = {}
        for name in self.template.get("Conditions", {}):
            self._condition(name)

    def _condition(self, name: str) -> bool:
        if name not in self.conditions:
            self.conditions[name] = bool(self.resolve(self.template["Conditions"][name]))
        return self.conditions[name]

    @property
    def resources(self) -> dict[str, Any]:
        return self.template["Resources"]

    def physical_name(self, logical_id: str) -> str:
        props = self.resources[logical_id].get("Properties", {})
        for key in ("BucketName", "FunctionName", "TableName", "QueueName", "LogGroupName", "Name"):
            if key in props:
                return self.resolve(props[key])
        return f"{self.stack_name}-{logical_id}"

    def enabled(self, logical_id: str) -> bool:
        """False when the resource's Condition is false: CloudFormation would not create it."""
        condition = self.resources[logical_id].get("Condition")
        return condition is None or self._condition(condition)

    def arn(self, logical_id: str) -> str:
        if logical_id not in self.resources and self._sam_role_of(logical_id):
            # SAM names a function's generated role <FunctionId>Role; IAM gives it a random suffix.
            return f"arn:aws:iam::{self.account}:role/{self.stack_name}-{logical_id}"
        kind = self.resources[logical_id]["Type"]
        name = self.physical_name(logical_id)
        prefix = f"arn:aws:{{}}:{self.region}:{self.account}"
        return {
            "AWS::S3::Bucket": f"arn:aws:s3:::{name}",
            "AWS::Serverless::Function": f"{prefix.format('lambda')}:function:{name}",
            "AWS::DynamoDB::Table": f"{prefix.format('dynamodb')}:table/{name}",
            "AWS::SQS::Queue": f"{prefix.format('sqs')}:{name}",
            "AWS::IAM::Role": f"arn:aws:iam::{self.account}:role/{self.stack_name}-{logical_id}",
            "AWS::SecretsManager::Secret": f"{prefix.format('secretsmanager')}:secret:{name}",
            "AWS::Logs::LogGroup": f"{prefix.format('logs')}:log-group:{name}",
        }.get(kind, f"{prefix.format('cloudformation')}:{logical_id}")

    def _sam_role_of(self, logical_id: str) -> bool:
        function = self.resources.get(logical_id.removesuffix("Role"), {})
        return logical_id.endswith("Role") and function.get("Type") == "AWS::Serverless::Function"

    def attribute(self, logical_id: str, name: str) -> Any:
        """Fn::GetAtt: an SSM parameter's Value, a queue's QueueName, otherwise the ARN."""
        if name == "Value":
            return self.resolve(self.resources[logical_id]["Properties"]["Value"])
        if name == "QueueName":
            return self.physical_name(logical_id)
        return self.arn(logical_id)

    def _ref(self, name: str) -> Any:
        pseudo = {"AWS::StackName": self.stack_name, "AWS::AccountId": self.account,
                  "AWS::Region": self.region, "AWS::Partition": "aws", "AWS::URLSuffix": "amazonaws.com",
                  "AWS::NoValue": NO_VALUE}
        if name in pseudo:
            return pseudo[name]
        if name in self.parameters:
            return self.parameters[name]
        return self.physical_name(name)

    def _sub(self, text: str, variables: dict[str, Any]) -> str:
        def replace(match: re.Match) -> str:
            name = match.group(1)
            if name in variables:
                return str(variables[name])
            if "." in name:
                logical, attribute = name.split(".", 1)
                return str(self.attribute(logical, attribute))
            value = self._ref(name)
            return ",".join(value) if isinstance(value, list) else str(value)

        return re.sub(r"\$\{([^!}][^}]*)\}", replace, text)

    def resolve(self, value: Any) -> Any:
        if isinstance(value, list):
            items = [self.resolve(v) for v in value]
            return [v for v in items if v is not NO_VALUE]
        if not isinstance(value, dict):
            return value
        if len(value) == 1:
            (key, arg), = value.items()
            if key == "Ref":
                return self._ref(arg)
            if key == "Fn::Sub":
                if isinstance(arg, list):
                    return self._sub(arg[0], {k: self.resolve(v) for k, v in arg[1].items()})
                return self._sub(arg, {})
            if key == "Fn::Join":
                return arg[0].join(str(v) for v in self.resolve(arg[1]))
            if key == "Fn::Split":
                return self.resolve(arg[1]).split(arg[0])
            if key == "Fn::Select":
                return self.resolve(arg[1])[int(self.resolve(arg[0]))]
            if key == "Fn::If":
                return self.resolve(arg[1] if self._condition(arg[0]) else arg[2])
            if key == "Fn::Equals":
                return self.resolve(arg[0]) == self.resolve(arg[1])
            if key == "Fn::Not":
                return not self.resolve(arg[0])
            if key == "Fn::And":
                return all(self.resolve(a) for a in arg)
            if key == "Fn::Or":
                return any(self.resolve(a) for a in arg)
            if key == "Condition":
                return self._condition(arg)
            if key == "Fn::GetAtt":
                return self.attribute(arg[0], arg[1])
        return {k: v for k, v in ((k, self.resolve(v)) for k, v in value.items()) if v is not NO_VALUE}

    def function_environment(self, logical_id: str) -> dict[str, str]:
        """Globals' variables overlaid by the function's own, resolved."""
        merged = dict(self.template.get("Globals", {}).get("Function", {})
                      .get("Environment", {}).get("Variables", {}))
        merged.update(self.resources[logical_id]["Properties"].get("Environment", {}).get("Variables", {}))
        return {k: str(self.resolve(v)) for k, v in merged.items()}

    def function_property(self, logical_id: str, name: str) -> Any:
        own = self.resources[logical_id]["Properties"]
        if name in own:
            return self.resolve(own[name])
        return self.resolve(self.template.get("Globals", {}).get("Function", {}).get(name))
