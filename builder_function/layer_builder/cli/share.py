"""`layer-builder share` / `unshare`: let another account or an organization use a version.

share grants lambda:GetLayerVersion with AddLayerVersionPermission (an account id as the
principal, or "*" narrowed by OrganizationId); unshare removes that statement again. The
statement id is layer-builder-<grantee>, so each grantee has one, found from the grantee alone.
This module holds both commands: itself is `share`, and UNSHARE is `unshare` (both in COMMANDS).
"""

from __future__ import annotations

import argparse
from types import SimpleNamespace

from .awsargs import adapters, add_aws_options, emit, positive, require
from .common import EXIT_OK


def _grantee_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", help="the layer's name")
    parser.add_argument(
        "--version", type=positive, metavar="V", dest="layer_version", help="the layer version"
    )
    who = parser.add_mutually_exclusive_group()
    who.add_argument("--account", metavar="ID", help="a 12-digit AWS account id")
    who.add_argument(
        "--organization", metavar="o-…", help="an AWS Organizations id: every account in it"
    )
    add_aws_options(parser)


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    s = sub.add_parser(
        "share",
        help="let another account or organization use a layer version",
        description="Grant lambda:GetLayerVersion on one layer version to an "
        "account, or to every account of an organization.",
    )
    _grantee_options(s)
    return s


def _act(args: argparse.Namespace, action: str, verb: str) -> int:
    # Imported here: `layer-builder build` and --help start without the service modules.
    from ..service import lifecycle

    require(args, "layer_version")
    grant = lifecycle.Grant(account=args.account or "", organization=args.organization or "")
    aws = adapters(args)
    status = getattr(lifecycle, action)(args.name, args.layer_version, grant, aws.layers)
    emit(
        args,
        {
            "layer": args.name,
            "version": args.layer_version,
            "grantee": str(grant),
            "statement_id": grant.sid,
            "status": status,
        },
        [
            f"Version {args.layer_version} of layer {args.name}: {grant} "
            + (f"was {verb} already" if status == "unchanged" else status)
        ],
    )
    return EXIT_OK


def run(args: argparse.Namespace) -> int:
    return _act(args, "share", "granted")


def _add_unshare_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    u = sub.add_parser(
        "unshare",
        help="revoke what share granted",
        description="Remove the statement `share` added for this grantee.",
    )
    _grantee_options(u)
    return u


def _run_unshare(args: argparse.Namespace) -> int:
    return _act(args, "unshare", "revoked")


#: The `unshare` command, shaped like a command module.
UNSHARE = SimpleNamespace(add_parser=_add_unshare_parser, run=_run_unshare)
