"""`make demo`: the whole flow on a local AWS stand-in, no Docker, no AWS account.

1. moto on 127.0.0.1, and template.yaml deployed into it: samtranslator's transform, the
   functions' code packaged into a deployment bucket, and moto's CloudFormation create_stack
   (tools/stack.py; what moto lacks is created from the transformed template and listed);
2. the functions served by a local Lambda endpoint (tools/local_lambda_service.py): each one a
   real awslambdaric process of its own user; the builder's Lambda calls go there, so the check
   functions it invokes run as their own local Lambdas, and everything else goes to moto;
3. examples/emr-launcher zipped and uploaded to the source bucket;
4. the S3 event delivered to the builder twice (S3 delivers at least once), then a re-upload of
   the same bytes: one layer version;
5. the published layer extracted read-only, as /opt is, and the EMR trigger invoked with it;
6. a changed upload publishes version 2 and moves the EMR trigger to it; `layer-builder prune`
   (the CLI, against the stand-in) deletes version 1, which nothing uses any more;
7. a team's CI publishes the project for two targets (x86_64 and arm64) with `layer-builder
   publish`: one layer version per target.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from packaging.requirements import Requirement

from layer_builder.report import BuildReport, human
from layer_builder.service.publish import layer_key
from tools.cfn import ROOT
from tools.lambda_runtime import InvocationResult, LocalLambda, extract_layer_readonly
from tools.local_aws import LocalAws
from tools.local_lambda_service import LocalLambdaService
from tools.stack import EVENTS, LocalStack, provision

EXAMPLE = ROOT / "examples" / "emr-launcher"
CLI = Path(sys.executable).parent / "layer-builder"
_SKIP = {".venv", "__pycache__", ".pytest_cache"}


def requirements(code_dir: Path) -> tuple[str, ...]:
    """The distributions a function ships (its requirements.txt), for LocalLambda(packages=...):
    the function sees those and the runtime's own boto3, nothing else of the dev venv."""
    names = []
    for line in (code_dir / "requirements.txt").read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip().rstrip("\\").strip()
        if line and not line.startswith("-"):
            names.append(str(Requirement(line.split()[0])))
    return tuple(names)


#: What the builder function ships (builder_function/requirements.txt), besides the runtime's boto3.
BUILDER_PACKAGES = requirements(ROOT / "builder_function")
EMR_PACKAGES = requirements(ROOT / "emr_function")


def zip_project(project: Path, dest: Path) -> Path:
    """Zip a project as a user would: one wrapping folder, everything but caches and venvs."""
    with zipfile.ZipFile(dest, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(project.rglob("*")):
            rel = path.relative_to(project)
            if path.is_file() and not _SKIP.intersection(rel.parts):
                zf.write(path, f"{project.name}/{rel.as_posix()}")
    return dest


def run_builder(stack: LocalStack, events: list[dict[str, Any]]) -> list[InvocationResult]:
    """The builder in one warm local Lambda, one event after the other (tests/e2e/test_flow),
    its import checks in the stack's check functions, each a local Lambda of its own."""
    with LocalLambdaService(stack.aws) as lambdas:
        builder, _ = _serve(lambdas, stack, quiet=True)
        return [_invoke(lambdas, builder, event, "builder") for event in events]


def run_emr(stack: LocalStack, layer_dir: Path) -> dict[str, Any]:
    event = json.loads((EVENTS / "emr-direct.json").read_text(encoding="utf-8"))
    with LocalLambda(stack.code_dir("EmrTriggerFunction"), env=stack.environment("EmrTriggerFunction"),
                     layer_dirs=[layer_dir], packages=EMR_PACKAGES,
                     **stack.function_settings("EmrTriggerFunction")) as emr:
        return _ok(emr.invoke(event), "EMR trigger").payload


def _ok(result: InvocationResult | None, what: str) -> InvocationResult:
    if result is None:
        raise SystemExit(f"{what} was throttled")
    if not result.ok:
        raise SystemExit(f"{what} failed: {result.error}\n{result.logs[-3000:]}")
    return result


def fetch_layer(stack: LocalStack, report_key: str, dest: Path) -> Path:
    """The layer zip the builder published from (moto's Content.Location is not a real URL)."""
    s3 = stack.aws.client("s3")
    artifacts = stack.name("ArtifactBucket")
    report = json.loads(s3.get_object(Bucket=artifacts, Key=report_key)["Body"].read())
    key = layer_key(BuildReport(**report["build"]))
    s3.download_file(artifacts, key, str(dest))
    return dest


def changed_copy(project: Path, work: Path, marker: str) -> Path:
    """The project with one more module: new content, so a new layer version."""
    copy = Path(shutil.copytree(project, work / "changed" / project.name,
                                ignore=shutil.ignore_patterns(*_SKIP)))
    package = copy / "emrlauncher"
    (package / "release.py").write_text(f"RELEASE = {marker!r}\n", encoding="utf-8")
    return copy


def two_target_copy(project: Path, work: Path, targets: Sequence[str]) -> Path:
    """The project declaring several targets in [tool.layer-builder] (INPUT's `targets`)."""
    copy = Path(shutil.copytree(project, work / "targets" / project.name,
                                ignore=shutil.ignore_patterns(*_SKIP)))
    pyproject = copy / "pyproject.toml"
    text = pyproject.read_text(encoding="utf-8")
    listed = ", ".join(f'"{t}"' for t in targets)
    pyproject.write_text(text.replace("[tool.layer-builder]\n",
                                      f"[tool.layer-builder]\ntargets = [{listed}]\n", 1),
                         encoding="utf-8")
    return copy


def publish(aws: LocalAws, project: Path, bucket: str, prefix: str) -> list[dict[str, Any]]:
    """`layer-builder publish` as a team's CI runs it: every target of the project, one layer
    version each (the first target keeps the name, the others get -py313-arm64 style suffixes)."""
    done = subprocess.run([str(CLI), "publish", str(project), "--bucket", bucket,
                           "--layer-prefix", prefix, "--json", "-q"],
                          env={**os.environ, **aws.env()}, capture_output=True, text=True,
                          timeout=900, check=False)
    if done.returncode != 0:
        raise SystemExit(f"layer-builder publish failed ({done.returncode}): {done.stderr}")
    return json.loads(done.stdout)["targets"]


def prune(aws: LocalAws, layer: str, pointer: str, keep: int) -> list[str]:
    """`layer-builder prune` as a user runs it, pointed at the stand-in by the AWS environment."""
    done = subprocess.run([str(CLI), "prune", layer, "--keep", str(keep), "--ssm-parameter", pointer],
                          env={**os.environ, **aws.env()}, capture_output=True, text=True,
                          timeout=300, check=False)
    if done.returncode != 0:
        raise SystemExit(f"layer-builder prune failed ({done.returncode}): {done.stderr}")
    return done.stdout.splitlines()


def _versions(aws: LocalAws, layer: str) -> list[int]:
    found = aws.client("lambda").list_layer_versions(LayerName=layer)["LayerVersions"]
    return sorted(v["Version"] for v in found)


def _deploy(aws: LocalAws) -> LocalStack:
    stack = provision(aws)
    print(f"Local AWS on {aws.endpoint_url}: stack '{stack.stack_name}' deployed from template.yaml")
    for line in stack.deployment.lines():
        print(f"  {line}")
    missing = stack.missing()
    if missing:
        raise SystemExit(f"resources of template.yaml missing from the stack: {missing}")
    return stack


def _serve(lambdas: LocalLambdaService, stack: LocalStack,
           quiet: bool = False) -> tuple[str, dict[str, str]]:
    """Register what runs locally; returns the builder's name and the check functions'."""
    checks = lambdas.register_check_functions(stack)
    for target, name in sorted(checks.items()):
        if not quiet:
            print(f"  check function {name} ({target}): a local Lambda of its own, no AWS access")
    # /tmp/... is the function's private /tmp in the harness.
    builder = lambdas.register_from_stack(stack, "BuilderFunction", packages=BUILDER_PACKAGES,
                                          env={"CACHE_DIR": "/tmp/layer-builder-cache"})
    return builder, checks


def _invoke(lambdas: LocalLambdaService, name: str, event: Any, what: str) -> InvocationResult:
    return _ok(lambdas.invoke(name, event), what)


def main(argv: Sequence[str] | None = None) -> int:
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="layer-builder-demo-") as tmp, LocalAws() as aws, \
            LocalLambdaService(aws) as lambdas:
        work = Path(tmp)
        stack = _deploy(aws)
        builder, checks = _serve(lambdas, stack)
        archive = zip_project(EXAMPLE, work / "aws-emr-launcher-0.1.0.zip")
        key = stack.upload_key(archive.name)
        event = stack.upload(archive, key)
        print(f"Uploaded {archive.name} ({archive.stat().st_size:,} bytes) to "
              f"s3://{stack.name('SourceBucket')}/{key}")

        reupload = stack.upload(archive, key)  # the same bytes again: a new object version
        print("Builder: the S3 event twice (S3 delivers at least once), then a re-upload of the same bytes...")
        runs = [_invoke(lambdas, builder, e, "builder") for e in (event, event, reupload)]
        first, again, unchanged = (run.payload["results"][0] for run in runs)
        layer_zip = fetch_layer(stack, first["report"], work / "layer.zip")
        layer_dir = extract_layer_readonly(layer_zip, work / "opt")

        print("EMR trigger: importing emrlauncher from the read-only layer...")
        emr_name = lambdas.register_from_stack(stack, "EmrTriggerFunction", packages=EMR_PACKAGES,
                                               layer_dirs=[layer_dir])
        emr_event = json.loads((EVENTS / "emr-direct.json").read_text(encoding="utf-8"))
        emr = _invoke(lambdas, emr_name, emr_event, "EMR trigger").payload
        lam = aws.client("lambda")
        layer = first["layer_name"]
        versions_before = _versions(aws, layer)
        emr_layers = [x["Arn"] for x in lam.get_function_configuration(FunctionName=emr_name).get("Layers", [])]
        pointer_name = f"{stack.template_environment('BuilderFunction')['POINTER_PARAMETER_PREFIX']}/{layer}"
        pointer = aws.client("ssm").get_parameter(Name=pointer_name)["Parameter"]["Value"]

        print("A changed upload, then `layer-builder prune --keep 1` against the stand-in...")
        changed = zip_project(changed_copy(EXAMPLE, work, "2"), work / "changed.zip")
        second = _invoke(lambdas, builder, stack.upload(changed, key), "builder").payload["results"][0]
        pruned = prune(aws, layer, pointer_name, keep=1)
        after_prune = _versions(aws, layer)
        emr_after = [x["Arn"] for x in lam.get_function_configuration(FunctionName=emr_name).get("Layers", [])]

        targets = ("python3.13/x86_64", "python3.13/arm64")
        print(f"A team's CI: `layer-builder publish` of the project declaring {', '.join(targets)}...")
        # CI uploads to a bucket of its own: the stack's artifact bucket takes layers/ from the
        # builder's role only (a bucket policy moto does not enforce).
        ci_bucket = f"{stack.stack_name}-ci-layers"
        aws.client("s3").create_bucket(Bucket=ci_bucket)
        ci = publish(aws, two_target_copy(EXAMPLE, work, targets), ci_bucket, "ci-")

        print()
        print(f"Layer version ARN   {first['version_arn']}  ({first['status']})")
        print(f"Layer size          {human(first['zipped_bytes'])} zipped, "
              f"{human(first['unzipped_bytes'])} unzipped")
        print(f"Build time          {first['build_seconds']:.2f} s (engine phases)")
        print(f"Second delivery     {again['status']} (idempotent replay), versions of the layer: "
              f"{len(versions_before)}")
        print(f"Same bytes again    {unchanged['status']} in {runs[2].duration_s:.2f} s, no new version")
        print(f"EMR function layers {', '.join(emr_layers)}")
        print(f"SSM pointer         {pointer}")
        for region, cluster in sorted(emr.get("clusters", emr).items()):
            print(f"EMR cluster         {cluster} in {region}")
        print(f"Changed upload      {second['version_arn']} ({second['status']}); EMR trigger now "
              f"on {', '.join(emr_after)}")
        print(f"Prune --keep 1      versions {versions_before + [int(second['version_arn'].rsplit(':', 1)[1])]}"
              f" -> {after_prune}")
        for line in pruned:
            print(f"  {line}")
        for result in ci:
            build = result["build"]
            print(f"Two-target publish  {result['target']}: {result['version_arn']}; "
                  f"{build['checks']['binaries']}; imports {build['checks']['imports']} "
                  f"({build['checks'].get('sandbox', 'local')})")
        stats = lambdas.stats(builder)
        print(f"Builder invocations {stats.invocations} in {len(lambdas.environments(builder))} "
              f"execution environment(s), {stats.errors} errors")
        for target, name in sorted(checks.items()):
            check = lambdas.stats(name)
            print(f"Check function      {name} ({target}): {check.invocations} invocations in "
                  f"{len(lambdas.environments(name))} environment(s) of their own, "
                  f"{check.errors} errors")
        print(f"Report              s3://{stack.name('ArtifactBucket')}/{first['report']}")
        print(f"Done in {time.perf_counter() - started:.1f} s")
        ok = (len(versions_before) == 1 and first["version_arn"] in emr_layers
              and pointer == first["version_arn"] and second["version_arn"] in emr_after
              and after_prune == [int(second["version_arn"].rsplit(":", 1)[1])]
              and [r["target"] for r in ci] == list(targets))
        return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
