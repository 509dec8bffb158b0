"""`layer-builder rollback`: put a layer's consumers and its pointer back on an older version."""

from __future__ import annotations

import argparse

from .awsargs import adapters, add_aws_options, emit, positive, require
from .common import EXIT_OK


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    r = sub.add_parser(
        "rollback",
        help="re-point a layer's consumers and pointer at an older version",
        description="Re-point the functions that use a layer, and its SSM pointer, "
        "at an existing version. Only that layer's version changes in "
        "each function; its other layers stay in order. Everything is "
        "checked before the first change.",
    )
    r.add_argument("name", help="the layer's name")
    r.add_argument("--to", type=positive, metavar="VERSION", help="the version to go back to")
    r.add_argument(
        "--attach",
        action="append",
        default=[],
        metavar="FUNCTION",
        help="re-point this function (repeatable; default: every function whose "
        "$LATEST uses the layer)",
    )
    add_aws_options(r, pointer="set to the version")
    return r


def run(args: argparse.Namespace) -> int:
    # Imported here: `layer-builder build` and --help start without the service modules.
    from ..service.lifecycle import rollback

    require(args, "to")
    aws = adapters(args)
    result = rollback(
        args.name,
        args.to,
        layers=aws.layers,
        catalog=aws.catalog,
        functions=aws.functions,
        pointer=aws.pointer(args.ssm_parameter),
        consumers=args.attach or None,
    )
    lines = [f"Layer {args.name} rolled back to version {args.to} ({result.version.arn})"]
    for c in result.consumers:
        lines.append(
            f"  {c.function}: "
            + (
                "already on it"
                if c.status == "unchanged"
                else f"{c.previous or '-'} -> version {args.to}"
            )
        )
    if not result.consumers:
        lines.append("  no function uses the layer: no consumer changed")
    if args.ssm_parameter:
        lines.append(f"  pointer {args.ssm_parameter} -> {result.version.arn}")
    emit(args, result.to_dict(), lines)
    return EXIT_OK
