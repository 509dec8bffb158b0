"""`layer-builder publish`: build, upload, publish and attach, as the builder Lambda does.

The same service code as the Lambda: publish.publish (S3 key by the zip's sha256, no new version
when the bytes equal the latest version's), attach.plan_layers (only the layer's own version is
replaced, Lambda's limits first) and aws.SsmPointer. Everything that can be refused is checked
before the first change: the bucket, every --attach function (it exists, and one target is its
own runtime and architecture), every build, then each function's limits with the built size.
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

from .. import limits, project, unpack
from ..errors import InputError
from ..pipeline import build
from ..report import human
from ..target import ARCH_MACHINE, DEFAULT_ARCH, DEFAULT_RUNTIME, RUNTIME_GLIBC, Target
from .awsargs import adapters, add_aws_options, emit, require
from .build import add_build_options, build_request
from .common import EXIT_OK, verbosity
from .output import Progress


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "publish",
        help="build, upload to S3, publish and attach a layer",
        description="Build every target of the project (or --runtime/--arch), "
        "upload each zip to S3 under its sha256, publish a layer version "
        "unless the latest one holds the same bytes, and attach it to "
        "each --attach function of that runtime and architecture, "
        "keeping the function's other layers. The last line of stdout "
        "is the (last target's) layer version ARN.",
    )
    p.add_argument(
        "source",
        type=Path,
        help="the project: a directory with Pipfile and Pipfile.lock, or a .zip, "
        ".tar.gz or .tgz of one",
    )
    p.add_argument(
        "--bucket",
        metavar="BUCKET",
        help="S3 bucket in the same region for the layer zips (layers/<name>/<sha256>.zip)",
    )
    p.add_argument(
        "--layer-name",
        metavar="NAME",
        help="publish under this name (default: the project's, after --layer-prefix); "
        "targets after the first get -py312-arm64 style suffixes",
    )
    p.add_argument(
        "--attach",
        action="append",
        default=[],
        metavar="FUNCTION",
        help="attach to this function the version of its own runtime and architecture (repeatable)",
    )
    p.add_argument(
        "--runtime",
        choices=sorted(RUNTIME_GLIBC),
        help=f"build only this runtime (default: the project's targets, else {DEFAULT_RUNTIME})",
    )
    p.add_argument(
        "--arch",
        choices=sorted(ARCH_MACHINE),
        help=f"build only this architecture (default: the project's targets, else {DEFAULT_ARCH})",
    )
    p.add_argument(
        "--ssm-prefix",
        metavar="PREFIX",
        help="also set the SSM pointer PREFIX/<layer name> to each version, as the "
        "stack does under /<stack>/layers",
    )
    add_build_options(p)
    add_aws_options(p)
    return p


def _project(source: Path, work: Path) -> tuple[Path, str]:
    """The project's directory (an archive is unpacked once for every target) and its name."""
    if source.is_dir():
        return source, source.resolve().name
    if not source.is_file():
        raise InputError(f"{source} does not exist: give a project directory, .zip or .tar.gz.")
    dest = work / "src"
    dest.mkdir()
    return unpack.unpack(source, dest).root, source.name


def _targets(
    args: argparse.Namespace, config: project.ProjectConfig
) -> tuple[list[Target], Target]:
    declared = list(config.targets or (Target(),))
    if not (args.runtime or args.arch):
        return declared, declared[0]
    chosen = [
        t
        for t in declared
        if t.runtime == (args.runtime or t.runtime) and t.arch == (args.arch or t.arch)
    ]
    return chosen or [Target(args.runtime or DEFAULT_RUNTIME, args.arch or DEFAULT_ARCH)], declared[
        0
    ]


def _base_name(args: argparse.Namespace, config: project.ProjectConfig) -> str:
    if not args.layer_name:
        return project.layer_name(config.name, args.layer_prefix)
    if (
        not re.fullmatch(limits.LAYER_NAME_PATTERN, args.layer_name)
        or len(args.layer_name) > limits.MAX_LAYER_NAME_LENGTH
    ):
        raise InputError(
            f"--layer-name {args.layer_name!r} is not a layer name: letters, digits, "
            f"'-' and '_', at most {limits.MAX_LAYER_NAME_LENGTH} characters."
        )
    return args.layer_name


def run(args: argparse.Namespace) -> int:
    # Imported here: `layer-builder build` and --help start without the service modules.
    from ..service.lifecycle import assign_consumers, check_attach, consumers_of, require_function

    require(args, "bucket")
    level = verbosity(args)
    aws = adapters(args)
    aws.require_bucket(args.bucket)
    with tempfile.TemporaryDirectory(prefix="layer-publish-") as scratch:
        work = Path(scratch)
        root, source_name = _project(args.source, work)
        config = project.load_config(root, source_name)
        targets, primary = _targets(args, config)
        base = _base_name(args, config)
        names = {t: project.target_layer_name(base, t, primary) for t in targets}
        users = lambda: [f.name for n in names.values() for f in consumers_of(n, aws.catalog)]  # noqa: E731
        functions = [
            require_function(name, aws.catalog, users) for name in dict.fromkeys(args.attach)
        ]
        assigned = assign_consumers(functions, [(t.runtime, t.arch) for t in targets])
        built = []
        progress = Progress(sys.stderr, level)
        try:
            for target in targets:
                output = work / f"{target.runtime}-{target.arch}.zip"
                result = build(build_request(args, root, output, target, source_name), progress)
                built.append((target, output, replace(result.report, layer_name=names[target])))
        finally:
            progress.done()
        for target, _, report in built:
            for function in assigned[(target.runtime, target.arch)]:
                check_attach(function, report.layer_name, report.unzipped_bytes, aws.functions)
        results = [
            _publish(args, aws, target, output, report, assigned[(target.runtime, target.arch)])
            for target, output, report in built
        ]
    _print(args, level, results)
    return EXIT_OK


def _publish(args, aws, target: Target, output: Path, report, consumers) -> dict:
    from ..service.lifecycle import repoint
    from ..service.publish import layer_key, publish

    published = publish(output, report, aws.registry, aws.artifacts(args.bucket))
    attached = [
        repoint(
            f.name,
            published.version_arn,
            aws.functions,
            unzipped=report.unzipped_bytes,
            subscribed=True,
        )
        for f in consumers
    ]
    pointer = None
    if args.ssm_prefix:
        # Imported here, as awsargs.adapters does: the AWS side (boto3, Powertools) is needed by
        # the AWS commands only, so `layer-builder build` runs without it (uv tool install .).
        from ..service.aws import SsmPointer

        ssm = SsmPointer(aws.ssm, args.ssm_prefix.rstrip("/"))
        if ssm.get(report.layer_name) != published.version_arn:
            ssm.put(report.layer_name, published.version_arn)
        pointer = ssm.name(report.layer_name)
    return {
        "target": f"{target.runtime}/{target.arch}",
        "layer_name": report.layer_name,
        "version": published.version,
        "version_arn": published.version_arn,
        "published": not published.reused,
        "code_sha256": published.code_sha256,
        "s3": f"s3://{args.bucket}/{layer_key(report)}",
        "pointer": pointer,
        "attachments": [a.to_dict() for a in attached],
        "build": report.to_dict(),
    }


def _print(args: argparse.Namespace, level: int, results: list[dict]) -> None:
    if args.json:
        emit(args, {"targets": results}, [])
        return
    lines = []
    for r in results if level >= 0 else ():
        b = r["build"]
        lines.append(
            f"Layer {r['layer_name']} for {r['target']}: {human(b['zipped_bytes'])} zipped, "
            f"{human(b['unzipped_bytes'])} unzipped, content sha256:{b['content_hash']}"
        )
        lines.append(
            f"  published version {r['version']} from {r['s3']}"
            if r["published"]
            else f"  unchanged: version {r['version']} already holds these bytes"
        )
        lines += [
            f"  {a['function']}: "
            + (
                "already on it"
                if a["status"] == "unchanged"
                else f"{a['previous'] or 'added'} -> version {r['version']}"
            )
            for a in r["attachments"]
        ]
        if r["pointer"]:
            lines.append(f"  pointer {r['pointer']}")
        lines += [f"  warning: {w}" for w in b["warnings"]]
    if level > -2:
        lines += [r["version_arn"] for r in results]  # the last line is an ARN, for scripts
    if lines:
        print("\n".join(lines))
