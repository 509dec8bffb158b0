"""`layer-builder versions`: every version of a layer, its content, and who uses it."""

from __future__ import annotations

import argparse
from datetime import UTC

from ..report import human
from .awsargs import adapters, add_aws_options, emit
from .common import EXIT_OK


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    v = sub.add_parser(
        "versions",
        help="list a layer's versions, their content and their users",
        description="List every version of a layer: number, creation time, the "
        "zip's sha256, size, target, and the functions in the region "
        "that use it (any version of them, $LATEST or published).",
    )
    v.add_argument("name", help="the layer's name")
    add_aws_options(v, pointer="its version is marked with *")
    return v


def run(args: argparse.Namespace) -> int:
    # Imported here: `layer-builder build` and --help start without the service modules.
    from ..service.lifecycle import describe

    aws = adapters(args)
    rows = describe(args.name, aws.layers, aws.catalog, aws.pointer(args.ssm_parameter))
    lines = [
        f"Layer {args.name}: {len(rows)} version{'s' if len(rows) != 1 else ''}"
        + (f" (* = named by {args.ssm_parameter})" if args.ssm_parameter else ""),
        f"  {'VERSION':>9}  {'CREATED (UTC)':<16}  {'SIZE':>9}  {'SHA256':<12}  "
        f"{'TARGET':<20}  USED BY",
    ]
    for row in rows:
        v = row.version
        created = v.created.astimezone(UTC).strftime("%Y-%m-%d %H:%M")
        target = f"{','.join(v.runtimes)} {','.join(v.architectures)}".strip() or "-"
        lines.append(
            f"{'*' if row.pointer else ' '} {v.number:>9}  {created:<16}  "
            f"{human(v.code_size):>9}  {v.sha256[:12]:<12}  {target:<20}  "
            f"{', '.join(row.used_by) or '-'}"
        )
    emit(
        args,
        {
            "layer": args.name,
            "pointer_parameter": args.ssm_parameter,
            "versions": [row.to_dict() for row in rows],
        },
        lines,
    )
    return EXIT_OK
