"""`layer-builder`: build the same layer on a laptop that the builder Lambda publishes.

Exit codes: 0 done, 2 input refused (one message on stderr, nothing left behind or changed),
1 anything else (transient: a retry may succeed).

Each command is a module with `add_parser(subparsers)` and `run(args) -> int`.
"""

from __future__ import annotations

import argparse
import os
import sys

from .. import __version__
from ..errors import LayerBuildError
from ..redact import redact
from . import build, inspect
from .common import EXIT_FAILED, EXIT_OK, EXIT_REFUSED

__all__ = ["EXIT_FAILED", "EXIT_OK", "EXIT_REFUSED", "main"]

COMMANDS = (build, inspect)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="layer-builder", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.add_parser(sub).set_defaults(run=command.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return args.run(args)
    except LayerBuildError as exc:
        kind = "refused" if exc.permanent else "failed"
        message = redact(str(exc))
        if exc.permanent:  # a refusal is one line, even when a parser added a caret diagram
            message = " ".join(message.split())
        print(f"layer-builder: {kind}: {message}", file=sys.stderr)
        return EXIT_REFUSED if exc.permanent else EXIT_FAILED
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `layer-builder inspect x.zip | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
