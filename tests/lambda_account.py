"""A Lambda account on moto for the lifecycle tests: layers, consumer functions, the CLI.

Everything goes over HTTP to tools.local_aws.LocalAws (botocore validates each request); the
`layer-builder` process gets the stand-in through the standard AWS environment
(AWS_ENDPOINT_URL and fake credentials), exactly as a user's shell would pass it.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tools.local_aws import LocalAws

CLI = Path(sys.executable).parent / "layer-builder"
_ASSUME = json.dumps({"Version": "2012-10-17", "Statement": [{
    "Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}]})


def zip_bytes(files: dict[str, str]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name, text in files.items():
            zf.writestr(name, text)
    return buffer.getvalue()


@dataclass(frozen=True)
class Run:
    returncode: int
    stdout: str
    stderr: str

    @property
    def json(self) -> Any:
        return json.loads(self.stdout)


class Account:
    def __init__(self, aws: LocalAws) -> None:
        self.aws = aws
        self.lam = aws.client("lambda")
        self.ssm = aws.client("ssm")
        self._role: str | None = None

    @property
    def role(self) -> str:
        if self._role is None:
            self._role = self.aws.client("iam").create_role(
                RoleName="consumers", AssumeRolePolicyDocument=_ASSUME)["Role"]["Arn"]
        return self._role

    def layer(self, name: str, content: str, runtime: str = "python3.13",
              arch: str = "x86_64") -> str:
        return self.lam.publish_layer_version(
            LayerName=name, Content={"ZipFile": zip_bytes({"python/mod.py": content})},
            CompatibleRuntimes=[runtime], CompatibleArchitectures=[arch])["LayerVersionArn"]

    def function(self, name: str, *layers: str, runtime: str = "python3.13",
                 arch: str = "x86_64") -> None:
        self.lam.create_function(
            FunctionName=name, Runtime=runtime, Architectures=[arch], Role=self.role,
            Handler="app.handler", Code={"ZipFile": zip_bytes({"app.py": "def handler(e, c): pass\n"})},
            Layers=list(layers))

    def set_layers(self, name: str, *layers: str) -> None:
        self.lam.update_function_configuration(FunctionName=name, Layers=list(layers))

    def layers_of(self, name: str, qualifier: str | None = None) -> list[str]:
        args = {"FunctionName": name, **({"Qualifier": qualifier} if qualifier else {})}
        return [item["Arn"] for item in self.lam.get_function_configuration(**args).get("Layers", [])]

    def versions(self, layer: str) -> list[int]:
        return sorted(v["Version"] for v in self.lam.list_layer_versions(LayerName=layer)["LayerVersions"])

    def pointer(self, name: str) -> str:
        return self.ssm.get_parameter(Name=name)["Parameter"]["Value"]

    def set_pointer(self, name: str, value: str) -> None:
        self.ssm.put_parameter(Name=name, Value=value, Type="String", Overwrite=True)

    def policy(self, layer: str, version: int) -> list[dict]:
        return json.loads(self.lam.get_layer_version_policy(
            LayerName=layer, VersionNumber=version)["Policy"])["Statement"]

    def cli(self, *args: str | Path, cwd: Path | None = None, timeout: float = 600,
            env: dict[str, str] | None = None) -> Run:
        assert CLI.is_file(), f"{CLI} is missing: install the project (make venv)"
        done = subprocess.run([str(CLI), *map(str, args)], cwd=cwd, capture_output=True, text=True,
                              env={**os.environ, **self.aws.env(), **(env or {})},
                              timeout=timeout, check=False)
        return Run(done.returncode, done.stdout, done.stderr)
