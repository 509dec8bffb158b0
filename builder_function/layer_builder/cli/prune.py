"""`layer-builder prune`: delete old layer versions, never one in use or named by the pointer."""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime

from ..errors import InputError
from .awsargs import adapters, add_aws_options, emit, require
from .common import EXIT_OK

VERBS = {"keep": "kept", "deleted": "deleted", "would delete": "would delete"}


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "prune",
        help="delete versions beyond the newest N, never one in use",
        description="Delete the versions of a layer beyond the newest N (and older "
        "than DAYS). A version that any function in the region uses "
        "($LATEST or a published version) or that the SSM pointer "
        "names is always kept. Prints every version and why.",
    )
    p.add_argument("name", help="the layer's name")
    p.add_argument(
        "--keep", type=int, metavar="N", help="how many of the newest versions to keep (1 or more)"
    )
    p.add_argument(
        "--older-than",
        type=float,
        metavar="DAYS",
        help="delete only versions older than this many days",
    )
    p.add_argument(
        "--dry-run", action="store_true", help="say what would be deleted, delete nothing"
    )
    add_aws_options(p, pointer="its version is never deleted")
    return p


def run(args: argparse.Namespace) -> int:
    # Imported here: `layer-builder build` and --help start without the service modules.
    from ..service.lifecycle import apply_retention, require_versions

    require(args, "keep")
    if args.keep < 1:
        raise InputError(f"--keep {args.keep} would delete every version: keep 1 or more.")
    if args.older_than is not None and args.older_than < 0:
        raise InputError(f"--older-than {args.older_than:g} is negative: give days, 0 or more.")
    aws = adapters(args)
    versions = require_versions(args.name, aws.layers)
    decisions = apply_retention(
        args.name,
        args.keep,
        layers=aws.layers,
        catalog=aws.catalog,
        pointer=aws.pointer(args.ssm_parameter),
        now=datetime.now(UTC),
        older_than_days=args.older_than,
        dry_run=args.dry_run,
        versions=versions,
    )
    if not args.ssm_parameter and not args.json:
        print("note: no --ssm-parameter given, so no pointer was consulted", file=sys.stderr)
    gone = sum(d.action in ("deleted", "would delete") for d in decisions)
    verb = "Would delete" if args.dry_run else "Deleted"
    lines = [
        f"{VERBS[d.action]:>12} {d.version.number:>5}  "
        f"({d.version.created.astimezone(UTC):%Y-%m-%d}): {'; '.join(d.reasons)}"
        for d in decisions
    ]
    lines.append(f"{verb} {gone} of {len(decisions)} versions of {args.name}.")
    emit(
        args,
        {
            "layer": args.name,
            "keep": args.keep,
            "older_than_days": args.older_than,
            "dry_run": args.dry_run,
            "decisions": [d.to_dict() for d in decisions],
        },
        lines,
    )
    return EXIT_OK
