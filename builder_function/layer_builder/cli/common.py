"""What every command shares: exit codes, the parser, -q/-v, environment equivalents, the cache.

Habits follow uv and pip:
- usage errors (unknown flag, bad value, conflicting options) exit 64 (EX_USAGE, sysexits.h),
  so a script can tell them from a refused input (2) and a failure worth retrying (1);
- `-v`/`-q` are repeatable and work before or after the command (`layer-builder -v build .`);
- every option has an environment equivalent, LAYER_BUILDER_<LONG_OPTION> (`--cache-dir` is
  LAYER_BUILDER_CACHE_DIR); the command line wins over the environment, which wins over the
  default, and `--help` names the variable beside each option;
- the cache lives in the platform's cache directory (platformdirs), as uv's and pip's do.

A command module adds its arguments with `add_parser(sub)` and uses only what is here and in
`output.py`, so every command gets the same habits.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, NoReturn

import platformdirs

EXIT_OK, EXIT_FAILED, EXIT_REFUSED = 0, 1, 2
#: sysexits.h EX_USAGE: the command was used incorrectly.
EXIT_USAGE = 64
ENV_PREFIX = "LAYER_BUILDER_"
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


class UsageError(Exception):
    """The command line (or its environment equivalent) is wrong; exits 64."""


class Parser(argparse.ArgumentParser):
    """argparse with EX_USAGE for usage errors (argparse itself exits 2, our "refused" code)."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def default_cache_dir() -> Path:
    """The platform's user cache directory (~/.cache/layer-builder on Linux, XDG_CACHE_HOME
    honoured; ~/Library/Caches/layer-builder on macOS)."""
    return Path(platformdirs.user_cache_dir("layer-builder", appauthor=False))


# ------------------------------------------------------------------------------- verbosity
def add_verbosity(parser: argparse.ArgumentParser, *, top: bool) -> None:
    """-v/-q on the program and on each command, so both `-v build` and `build -v` work.

    The two levels keep separate counters (argparse gives a command a namespace of its own and
    would otherwise overwrite the program's count); `verbosity()` adds them up.
    """
    prefix = "" if top else "_command_"
    parser.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0,
        dest=f"{prefix}verbose",
        help="say more: -v shows every step and download, -vv also debug logs "
        "and tracebacks (repeatable)",
    )
    parser.add_argument(
        "-q",
        "--quiet",
        action="count",
        default=0,
        dest=f"{prefix}quiet",
        help="say less: -q prints no progress and a one-line result, -qq only errors (repeatable)",
    )


def verbosity(args: argparse.Namespace) -> int:
    """-2 (only errors) … 0 (default) … 2 (debug)."""
    level = (
        getattr(args, "verbose", 0)
        + getattr(args, "_command_verbose", 0)
        - getattr(args, "quiet", 0)
        - getattr(args, "_command_quiet", 0)
    )
    return max(-2, min(2, level))


# ----------------------------------------------------------------- environment equivalents
def env_name(action: argparse.Action) -> str | None:
    """LAYER_BUILDER_<LONG OPTION> for an option; None for positionals, --help and --version."""
    longs = [s for s in action.option_strings if s.startswith("--")]
    if (
        not longs
        or action.dest.startswith("_")
        or isinstance(action, (argparse._HelpAction, argparse._VersionAction))
    ):
        return None
    return ENV_PREFIX + longs[0][2:].replace("-", "_").upper()


def _parsers(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in dict.fromkeys(action.choices.values()):  # aliases map to the same parser
                yield from _parsers(sub)


def _from_environment(action: argparse.Action, name: str, raw: str) -> Any:
    if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
        value = raw.strip().lower()
        if value not in _TRUE | _FALSE:
            raise UsageError(f"{name}={raw!r} is not a boolean: use 1 or 0 (true/false, yes/no)")
        return (value in _TRUE) == isinstance(action, argparse._StoreTrueAction)
    if isinstance(action, argparse._CountAction):
        if not raw.strip().isdigit():
            raise UsageError(f"{name}={raw!r} is not a count: use 0, 1, 2…")
        return int(raw)
    convert = action.type if callable(action.type) else str
    values = raw.split() if isinstance(action, argparse._AppendAction) else [raw]
    for value in values:
        if action.choices is not None and value not in action.choices:
            choices = ", ".join(map(str, action.choices))
            raise UsageError(f"{name}={value!r} is not one of: {choices}")
    try:
        converted = [convert(value) for value in values]
    except (TypeError, ValueError) as exc:
        raise UsageError(f"{name}={raw!r}: {exc}") from None
    return converted if isinstance(action, argparse._AppendAction) else converted[0]


def apply_environment(parser: argparse.ArgumentParser, environ: Mapping[str, str]) -> None:
    """Name each option's variable in --help, and take defaults from the variables that are set.

    Repeatable options (--allow-sdist) take a space-separated list, as pip's variables do.
    """
    for each in _parsers(parser):
        for action in each._actions:
            name = env_name(action)
            if name is None:
                continue
            if action.help is not argparse.SUPPRESS:
                action.help = f"{action.help or ''} [env: {name}]".lstrip()
            if name in environ:
                action.default = _from_environment(action, name, environ[name])


def build_parser(prog: str, description: str, commands: Any, version: str) -> Parser:
    """The program's parser: -v/-q, --version, one sub-command per module in `commands`."""
    parser = Parser(prog=prog, description=description)
    parser.add_argument("--version", action="version", version=f"%(prog)s {version}")
    add_verbosity(parser, top=True)
    sub = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", parser_class=Parser
    )
    for command in commands:
        command_parser = command.add_parser(sub)
        add_verbosity(command_parser, top=False)
        command_parser.set_defaults(run=command.run)
    return parser
