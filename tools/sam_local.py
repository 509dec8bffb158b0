"""`sam local invoke` without Docker: a function from the `sam build` output, run the same way.

What `sam local invoke FUNCTION -e EVENT --env-vars events/env.json` does in its container, done
on this machine (https://docs.aws.amazon.com/serverless-application-model/latest/developerguide/
serverless-sam-cli-using-invoke.html):
- the code is `.aws-sam/build/<Function>` (what `sam build` writes; `build()` makes the same
  layout with aws-lambda-builders, the library `sam build` itself uses);
- the handler, memory and timeout are the template's (read from the deployed stack, which
  CloudFormation created from template.yaml);
- the variables are the template's, overridden by the env-vars file (`Parameters` for every
  function, then the function's own key) only where the template declares them: SAM ignores
  any other key (aws-sam-cli#1553, #6145). That is why template.yaml declares AWS_ENDPOINT_URL
  (empty in AWS, where botocore ignores an empty value);
- each layer given with --layer is unzipped read-only under `.aws-sam/local-opt/<Function>/`,
  which stands for /opt (not writable for tests): its `python/` directory goes on sys.path as
  Lambda puts /opt/python there;
- the real runtime client, awslambdaric, runs the handler (tools/lambda_runtime.py), with the
  managed runtime's boto3 and nothing else from this project's venv.

The AWS it talks to is a local stand-in started here with template.yaml deployed as `make
local-aws --deploy` does (seeded, so the names are those in events/env.json); AWS_ENDPOINT_URL is
this stand-in's address (events/env.json says `host.docker.internal`, the host as a container
sees it).

    python -m tools.sam_local build [--build-dir .aws-sam/build]
    python -m tools.sam_local env-vars > events/env.json
    python -m tools.sam_local invoke EmrTriggerFunction -e events/emr-direct.json --layer layer.zip
    python -m tools.sam_local invoke BuilderFunction -e events/s3-put.json --upload examples/emr-launcher
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import unquote_plus

from tools.cfn import ROOT
from tools.local_aws import DEFAULT_PORT, LocalAws
from tools.stack import SERVERLESS_FUNCTION, LocalStack, provision, source_template

BUILD_DIR = ROOT / ".aws-sam" / "build"
#: Where --layer zips are unpacked read-only: the stand-in for /opt, one directory per function.
OPT_DIR = ROOT / ".aws-sam" / "local-opt"
ENV_VARS = ROOT / "events" / "env.json"
STACK_NAME = "layer-builder"
DOCKER_HOST = "host.docker.internal"
#: What events/env.json points the functions at: `make local-aws` seen from a container.
DOCKER_ENDPOINT = f"http://{DOCKER_HOST}:{DEFAULT_PORT}"
ENDPOINT_VARIABLE = "AWS_ENDPOINT_URL"
#: /tmp paths the code uses by default, given explicitly so that the harness maps them into the
#: function's private /tmp (a container's /tmp is its own; this machine's /tmp is shared).
#: The host's network set-up (its CA bundle, proxies): what a container on it would get from
#: its image and Docker; the builder needs them to reach the package index.
NETWORK_PASSTHROUGH = ("SSL_CERT_FILE", "SSL_CERT_DIR", "HTTPS_PROXY", "HTTP_PROXY", "NO_PROXY",
                       "https_proxy", "http_proxy", "no_proxy")
PRIVATE_TMP_DEFAULTS = {"BuilderFunction": {"CACHE_DIR": "/tmp/layer-builder-cache"}}


def functions() -> dict[str, dict[str, Any]]:
    """The template's functions: logical id → properties (CodeUri, Runtime...)."""
    template = source_template()
    runtime = template.get("Globals", {}).get("Function", {}).get("Runtime")
    return {lid: {"Runtime": runtime, **res["Properties"]}
            for lid, res in template["Resources"].items() if res["Type"] == SERVERLESS_FUNCTION}


def build_method(logical_id: str) -> str | None:
    """Metadata BuildMethod (the check functions: makefile), as sam build reads it."""
    return source_template()["Resources"][logical_id].get("Metadata", {}).get("BuildMethod")


# ---------------------------------------------------------------------------------- build
def build(build_dir: Path = BUILD_DIR, architecture: str = "x86_64",
          only: Sequence[str] = ()) -> dict[str, Path]:
    """`.aws-sam/build/<Function>` for each function, as `sam build` makes it: the CodeUri's files
    plus its requirements.txt installed for the runtime, by aws-lambda-builders' pip workflow.

    It needs a python3.13 on PATH (the workflow checks it against the runtime), as `sam build`.
    """
    from aws_lambda_builders.builder import LambdaBuilder

    builder = LambdaBuilder(language="python", dependency_manager="pip", application_framework=None)
    # BuildMethod makefile: sam build runs `make build-<LogicalId>` (check_function/Makefile)
    make = LambdaBuilder(language="provided", dependency_manager=None, application_framework=None)
    built = {}
    for logical_id, props in functions().items():
        if only and logical_id not in only:
            continue
        source = ROOT / props["CodeUri"]
        dest = build_dir / logical_id
        shutil.rmtree(dest, ignore_errors=True)
        dest.mkdir(parents=True)
        with tempfile.TemporaryDirectory(prefix="sam-build-") as scratch:
            if build_method(logical_id) == "makefile":
                make.build(str(source), str(dest), scratch, manifest_path=str(source / "Makefile"),
                           runtime=props["Runtime"], architecture=props["Architectures"][0],
                           options={"build_logical_id": logical_id})
            else:
                builder.build(str(source), str(dest), scratch,
                              manifest_path=str(source / "requirements.txt"),
                              runtime=props["Runtime"], architecture=architecture)
        built[logical_id] = dest
    return built


# ------------------------------------------------------------------------------ env vars
def env_vars(stack: LocalStack, endpoint: str = DOCKER_ENDPOINT) -> dict[str, dict[str, str]]:
    """The `--env-vars` file for a stack: every variable the template declares, with the value the
    deployed stack gives it, and the stand-in's endpoint for all functions (`Parameters`)."""
    document: dict[str, dict[str, str]] = {"Parameters": {ENDPOINT_VARIABLE: endpoint}}
    for logical_id in functions():
        if logical_id in stack.deployment.not_in_this_stack:  # its Condition is false
            continue
        variables = stack.template_environment(logical_id)
        variables.pop(ENDPOINT_VARIABLE, None)
        if variables:  # the check functions declare none
            document[logical_id] = dict(sorted(variables.items()))
    return document


def deployed_stack(aws: LocalAws, code_dirs: Mapping[str, Path] | None = None) -> LocalStack:
    """template.yaml as `make local-aws --deploy` deploys it: the same seed, so the same names."""
    aws.seed()
    return provision(aws, stack_name=STACK_NAME, code_dirs=dict(code_dirs or {}))


def function_environment(stack: LocalStack, logical_id: str, env_file: Mapping[str, Any],
                         endpoint: str) -> dict[str, str]:
    """What `sam local invoke --env-vars` gives the function: declared variables, overridden from
    the file where declared; then the AWS variables SAM adds (region, credentials)."""
    declared = stack.template_environment(logical_id)
    for section in (env_file.get("Parameters", {}), env_file.get(logical_id, {})):
        declared.update({k: str(v) for k, v in section.items() if k in declared})
    if ENDPOINT_VARIABLE not in declared:
        raise SystemExit(f"template.yaml does not declare {ENDPOINT_VARIABLE} for {logical_id}: "
                         "sam local invoke would ignore it from --env-vars and the function would "
                         "call AWS itself")
    declared[ENDPOINT_VARIABLE] = endpoint
    aws_variables = {k: v for k, v in stack.aws.env().items() if k != ENDPOINT_VARIABLE}
    network = {k: os.environ[k] for k in NETWORK_PASSTHROUGH if k in os.environ}
    return {**network, **aws_variables, **declared, **PRIVATE_TMP_DEFAULTS.get(logical_id, {}),
            "AWS_LAMBDA_FUNCTION_NAME": stack.name(logical_id)}


# -------------------------------------------------------------------------------- invoke
def unpack_layers(logical_id: str, layers: Sequence[Path], opt_dir: Path = OPT_DIR) -> list[Path]:
    """Each layer zip unpacked read-only under opt_dir/<Function>/<n>/; returns the python/ dirs."""
    from tools.lambda_runtime import extract_layer_readonly, make_tree_writable

    root = opt_dir / logical_id
    if root.exists():
        make_tree_writable(root)
        shutil.rmtree(root)
    return [extract_layer_readonly(layer, root / f"{n}-{layer.stem}") for n, layer in enumerate(layers)]


def upload_for_event(stack: LocalStack, event: dict[str, Any], source: Path, work: Path
                     ) -> dict[str, Any]:
    """Put the project (a directory is zipped) where the event's first record says, and return
    the event with that upload's version, size, ETag and sequencer, as S3 would send it."""
    from tools.demo import zip_project

    record = event["Records"][0]["s3"]
    key = unquote_plus(record["object"]["key"])
    archive = zip_project(source, work / Path(key).name) if source.is_dir() else source
    fresh = stack.upload(archive, key)
    updated = copy.deepcopy(event)
    updated["Records"][0]["s3"]["object"].update(fresh["Records"][0]["s3"]["object"])
    updated["Records"][0]["eventTime"] = fresh["Records"][0]["eventTime"]
    return updated


def invoke(stack: LocalStack, logical_id: str, event: Any, env_file: Mapping[str, Any],
           layers: Sequence[Path] = (), build_dir: Path = BUILD_DIR, opt_dir: Path = OPT_DIR) -> Any:
    """Run the function once from its build output, as `sam local invoke` would; returns the
    InvocationResult (payload, error, logs)."""
    from tools.lambda_runtime import LocalLambda

    code = build_dir / logical_id
    if not (code / "app.py").exists() and not any(code.glob("*.py")):
        raise SystemExit(f"{code} is not a build output: run `make build` (or `make sam-build`)")
    from tools.local_lambda_service import LocalLambdaService

    env = function_environment(stack, logical_id, env_file, stack.aws.endpoint_url)
    settings = stack.function_settings(logical_id)
    with LocalLambdaService(stack.aws) as lambdas:
        if logical_id == "BuilderFunction":  # its import checks run in the stack's check functions
            lambdas.register_check_functions(stack)
            env = {**env, **lambdas.env()}
        with LocalLambda(code, handler=stack.handler(logical_id), env=env, packages=[],
                         layer_dirs=unpack_layers(logical_id, layers, opt_dir), **settings) as function:
            return function.invoke(event)


def _docker_endpoint(env_file: Mapping[str, Any]) -> str:
    return str(env_file.get("Parameters", {}).get(ENDPOINT_VARIABLE, DOCKER_ENDPOINT))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.sam_local", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="the sam build layout with aws-lambda-builders")
    b.add_argument("--build-dir", type=Path, default=BUILD_DIR)
    b.add_argument("--architecture", default="x86_64", choices=["x86_64", "arm64"])
    e = sub.add_parser("env-vars", help="print the --env-vars file for the deployed template")
    e.add_argument("--endpoint", default=DOCKER_ENDPOINT, help=f"default {DOCKER_ENDPOINT}")
    i = sub.add_parser("invoke", help="run one function from the build output, like sam local invoke")
    i.add_argument("function", choices=sorted(functions()))
    i.add_argument("-e", "--event", type=Path, required=True)
    i.add_argument("-n", "--env-vars", type=Path, default=ENV_VARS)
    i.add_argument("--layer", type=Path, action="append", default=[],
                   help="layer zip to attach, unpacked read-only as /opt (repeatable, in order)")
    i.add_argument("--upload", type=Path, help="put this project at the S3 event's key first")
    i.add_argument("--build-dir", type=Path, default=BUILD_DIR)
    args = parser.parse_args(argv)
    if args.command == "build":
        for logical_id, path in build(args.build_dir, args.architecture).items():
            print(f"{logical_id}: {path}")
        return 0
    with LocalAws() as aws, tempfile.TemporaryDirectory(prefix="sam-local-") as tmp:
        stack = deployed_stack(aws)
        if args.command == "env-vars":
            print(json.dumps(env_vars(stack, args.endpoint), indent=2))
            return 0
        env_file = json.loads(args.env_vars.read_text(encoding="utf-8"))
        event = json.loads(args.event.read_text(encoding="utf-8"))
        if args.upload:
            event = upload_for_event(stack, event, args.upload, Path(tmp))
        print(f"Invoking {stack.handler(args.function)} ({args.function}) from "
              f"{args.build_dir / args.function} against {stack.aws.endpoint_url}", file=sys.stderr)
        result = invoke(stack, args.function, event, env_file, args.layer, args.build_dir)
        sys.stderr.write(result.logs)
        print(json.dumps(result.payload))
        return 0 if result.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
