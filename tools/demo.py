"""`make demo`: the whole flow on a local AWS stand-in, no Docker, no AWS account.

1. moto on 127.0.0.1, and template.yaml deployed into it: samtranslator's transform, the
   functions' code packaged into a deployment bucket, and moto's CloudFormation create_stack
   (tools/stack.py; what moto lacks is created from the transformed template and listed);
2. examples/emr-launcher zipped and uploaded to incoming/;
3. the S3 event delivered to the builder, run by the real Lambda runtime client (awslambdaric);
4. the published layer extracted read-only, as /opt/python is, and the EMR trigger invoked with it;
5. the same event delivered again: no second layer version.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any

from layer_builder.report import BuildReport
from layer_builder.service.publish import layer_key
from tools.cfn import ROOT
from tools.lambda_runtime import InvocationResult, LocalLambda, extract_layer_readonly
from tools.local_aws import LocalAws
from tools.stack import EVENTS, LocalStack, provision

EXAMPLE = ROOT / "examples" / "emr-launcher"
#: What the builder function ships (builder_function/requirements.txt), besides the runtime's boto3.
BUILDER_PACKAGES = ("plette", "packaging", "requests", "uv", "aws-lambda-powertools", "pydantic", "aws-xray-sdk")
EMR_PACKAGES = ("aws-lambda-powertools", "pydantic", "aws-xray-sdk")
_SKIP = {".venv", "__pycache__", ".pytest_cache"}


def zip_project(project: Path, dest: Path) -> Path:
    """Zip a project as a user would: one wrapping folder, everything but caches and venvs."""
    with zipfile.ZipFile(dest, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(project.rglob("*")):
            rel = path.relative_to(project)
            if path.is_file() and not _SKIP.intersection(rel.parts):
                zf.write(path, f"{project.name}/{rel.as_posix()}")
    return dest


def run_builder(stack: LocalStack, events: list[dict[str, Any]], cache_dir: Path) -> list[InvocationResult]:
    env = stack.environment("BuilderFunction") | {"CACHE_DIR": str(cache_dir)}
    with LocalLambda(stack.code_dir("BuilderFunction"), env=env, packages=BUILDER_PACKAGES,
                     **stack.function_settings("BuilderFunction")) as builder:
        results = []
        for event in events:
            result = builder.invoke(event)
            if not result.ok:
                raise SystemExit(f"builder failed: {result.error}\n{result.logs[-3000:]}")
            results.append(result)
        return results


def run_emr(stack: LocalStack, layer_dir: Path) -> dict[str, Any]:
    event = json.loads((EVENTS / "emr-direct.json").read_text(encoding="utf-8"))
    with LocalLambda(stack.code_dir("EmrTriggerFunction"), env=stack.environment("EmrTriggerFunction"),
                     layer_dirs=[layer_dir], packages=EMR_PACKAGES,
                     **stack.function_settings("EmrTriggerFunction")) as emr:
        result = emr.invoke(event)
    if not result.ok:
        raise SystemExit(f"EMR trigger failed: {result.error}\n{result.logs[-3000:]}")
    return result.payload


def fetch_layer(stack: LocalStack, report_key: str, dest: Path) -> Path:
    """The layer zip the builder published from (moto's Content.Location is not a real URL)."""
    s3 = stack.aws.client("s3")
    artifacts = stack.name("ArtifactBucket")
    report = json.loads(s3.get_object(Bucket=artifacts, Key=report_key)["Body"].read())
    key = layer_key(BuildReport(**report["build"]))
    s3.download_file(artifacts, key, str(dest))
    return dest


def main() -> int:
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="layer-builder-demo-") as tmp, LocalAws() as aws:
        work = Path(tmp)
        stack = provision(aws)
        print(f"Local AWS on {aws.endpoint_url}: stack '{stack.stack_name}' deployed from template.yaml")
        for line in stack.deployment.lines():
            print(f"  {line}")
        missing = stack.missing()
        if missing:
            raise SystemExit(f"resources of template.yaml missing from the stack: {missing}")
        archive = zip_project(EXAMPLE, work / "aws-emr-launcher-0.1.0.zip")
        key = f"incoming/{archive.name}"
        event = stack.upload(archive, key)
        print(f"Uploaded {archive.name} ({archive.stat().st_size:,} bytes) to "
              f"s3://{stack.name('SourceBucket')}/{key}")

        reupload = stack.upload(archive, key)  # the same bytes again: a new object version
        print("Builder: the S3 event twice (S3 delivers at least once), then a re-upload of the same bytes...")
        runs = run_builder(stack, [event, event, reupload], work / "cache")
        first, again, unchanged = (run.payload["results"][0] for run in runs)
        layer_zip = fetch_layer(stack, first["report"], work / "layer.zip")
        layer_dir = extract_layer_readonly(layer_zip, work / "opt")

        print("EMR trigger: importing emrlauncher from the read-only layer...")
        emr = run_emr(stack, layer_dir)
        lam = aws.client("lambda")
        versions = lam.list_layer_versions(LayerName=first["layer_name"])["LayerVersions"]
        emr_layers = [layer["Arn"] for layer in lam.get_function_configuration(
            FunctionName=stack.name("EmrTriggerFunction")).get("Layers", [])]
        pointer = aws.client("ssm").get_parameter(
            Name=f"{stack.template_environment('BuilderFunction')['POINTER_PARAMETER_PREFIX']}"
                 f"/{first['layer_name']}")["Parameter"]["Value"]

        print()
        print(f"Layer version ARN   {first['version_arn']}  ({first['status']})")
        print(f"Layer size          {first['zipped_bytes']:,} bytes zipped, "
              f"{first['unzipped_bytes']:,} unzipped")
        print(f"Build time          {first['build_seconds']:.2f} s (engine phases)")
        print(f"Second delivery     {again['status']} (idempotent replay), versions of the layer: {len(versions)}")
        print(f"Same bytes again    {unchanged['status']} in {runs[2].duration_s:.2f} s, no new version")
        print(f"EMR function layers {', '.join(emr_layers)}")
        print(f"SSM pointer         {pointer}")
        for region, cluster in sorted(emr.get("clusters", emr).items()):
            print(f"EMR cluster         {cluster} in {region}")
        print(f"Report              s3://{stack.name('ArtifactBucket')}/{first['report']}")
        print(f"Done in {time.perf_counter() - started:.1f} s")
        ok = len(versions) == 1 and first["version_arn"] in emr_layers and pointer == first["version_arn"]
        return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
