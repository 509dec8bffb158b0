"""What the AWS-side commands (publish, versions, prune, rollback, share, unshare) share.

They act on the account the standard AWS environment names: credentials and profile as boto3
finds them, AWS_ENDPOINT_URL for a stand-in such as moto, and --region over AWS_REGION.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterable
from typing import TYPE_CHECKING

from .common import UsageError

if TYPE_CHECKING:
    from ..service.aws_lifecycle import LifecycleAdapters


def add_aws_options(parser: argparse.ArgumentParser, *, pointer: str = "") -> None:
    """--region and --json; --ssm-parameter when `pointer` says what the command does with it."""
    parser.add_argument(
        "--region",
        metavar="REGION",
        help="AWS region (default: AWS_REGION, AWS_DEFAULT_REGION or the profile's)",
    )
    if pointer:
        parser.add_argument(
            "--ssm-parameter",
            metavar="NAME",
            help=f"the SSM parameter holding the layer's current version ARN: {pointer}",
        )
    parser.add_argument("--json", action="store_true", help="print the result as JSON on stdout")


def positive(value: str) -> int:
    """A layer version number (argparse type)."""
    number = int(value)
    if number < 1:
        raise ValueError(f"{value} is not a version number")
    return number


def adapters(args: argparse.Namespace) -> LifecycleAdapters:
    # Imported here: boto3 is needed by these commands only, and takes a while to import.
    from ..service.aws_lifecycle import LifecycleAdapters

    return LifecycleAdapters.create(args.region)


def require(args: argparse.Namespace, *names: str) -> None:
    """Options that are required but may come from their LAYER_BUILDER_* variable instead
    (argparse's required=True would ignore the variable)."""
    missing = [f"--{n.replace('_', '-')}" for n in names if getattr(args, n) in (None, "")]
    if missing:
        raise UsageError(
            f"{args.command} needs {' and '.join(missing)} (or its LAYER_BUILDER_ variable)"
        )


def emit(args: argparse.Namespace, data: dict, lines: Iterable[str]) -> None:
    print(json.dumps(data, indent=2) if args.json else "\n".join(lines))
