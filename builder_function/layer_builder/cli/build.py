"""`layer-builder build`: a layer zip from a Pipfile project, as the builder Lambda makes it."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from pathlib import Path

from packaging.utils import canonicalize_name

from ..errors import LayerBuildError, error_report
from ..limits import MAX_REPORT_LOG_CHARS
from ..lock import IndexPolicy
from ..pipeline import BuildRequest, build
from ..project import directory_name
from ..redact import redact, redact_data, register_secret
from ..target import ARCH_MACHINE, DEFAULT_ARCH, DEFAULT_RUNTIME, RUNTIME_GLIBC, Target
from ..unpack import strip_archive_suffix
from .common import EXIT_OK, default_cache_dir, verbosity
from .output import Progress, summary, write_reports


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    b = sub.add_parser(
        "build",
        help="build a layer zip from a Pipfile project (dir, .zip, .tar.gz)",
        description="Build a Lambda layer zip from a Pipfile project: the locked, "
        "hash-verified wheels for the target, slimmed, with bytecode. "
        "It imports the project and its dependencies on this machine, "
        "as you: do not build projects you do not trust with it.",
    )
    b.add_argument(
        "source",
        type=Path,
        help="the project: a directory with Pipfile and Pipfile.lock, or a .zip, "
        ".tar.gz or .tgz of one",
    )
    b.add_argument(
        "--output",
        "-o",
        type=Path,
        metavar="ZIP",
        help="layer zip to write (default: <source name>-<runtime>-<arch>.zip in the "
        "current directory, the source name without its archive suffix)",
    )
    b.add_argument(
        "--runtime",
        default=DEFAULT_RUNTIME,
        choices=sorted(RUNTIME_GLIBC),
        help=f"target Lambda runtime: decides the Python version and glibc tag "
        f"(default: {DEFAULT_RUNTIME})",
    )
    b.add_argument(
        "--arch",
        default=DEFAULT_ARCH,
        choices=sorted(ARCH_MACHINE),
        help=f"target architecture (default: {DEFAULT_ARCH})",
    )
    b.add_argument(
        "--report",
        type=Path,
        metavar="JSON",
        help="write the JSON build report here, and its HTML picture beside it "
        "(same name, .html); a refused or failed build writes its error (and "
        "a failed tool's log) there instead",
    )
    add_build_options(b)
    b.add_argument(
        "--json",
        action="store_true",
        help="print the report as JSON on stdout instead of the summary",
    )
    return b


def add_build_options(b: argparse.ArgumentParser) -> None:
    """How a project is built, shared by `build` and `publish`."""
    b.add_argument(
        "--index-url",
        default="",
        metavar="URL",
        help="package index for every source of the lock (default: the lock's "
        "sources, their allowed ${VAR} expanded from the environment)",
    )
    b.add_argument(
        "--allow-env",
        action="append",
        default=[],
        metavar="NAME",
        help="let the lock's source URLs read this environment variable, beside "
        "PIP_INDEX_URL, PIP_EXTRA_INDEX_URL and UV_INDEX_URL (repeatable)",
    )
    b.add_argument(
        "--allow-sdist",
        action="append",
        default=[],
        metavar="NAME",
        help="build this package from source when it has no wheel (repeatable)",
    )
    b.add_argument(
        "--layer-prefix",
        default="",
        metavar="PREFIX",
        help="prefix for the layer name (default: none)",
    )
    b.add_argument(
        "--cache-dir",
        type=Path,
        default=None,
        metavar="DIR",
        help=f"dependency cache, also uv's (default: {default_cache_dir()})",
    )
    b.add_argument(
        "--no-cache", action="store_true", help="neither read nor write the dependency cache"
    )


def build_request(
    args: argparse.Namespace, source: Path, output: Path, target: Target, source_name: str = ""
) -> BuildRequest:
    """The BuildRequest for add_build_options' arguments."""
    index = IndexPolicy(
        override=args.index_url, allow_lock_urls=True, allowed_env=tuple(args.allow_env)
    )
    # Only the allowed variables reach the lock step, and every value that may end up in an
    # index URL is redacted from whatever the build prints or writes.
    index = dataclasses.replace(
        index, environ={name: os.environ[name] for name in index.expandable if name in os.environ}
    )
    for secret in (args.index_url, *index.environ.values()):
        register_secret(secret)
    if not source_name and source.is_dir():
        source_name = directory_name(source)  # `…/svc/lambda/` names the layer svc
    return BuildRequest(
        source=source,
        output=output.resolve(),
        target=target,
        source_name=source_name,
        index=index,
        allow_sdist=frozenset(canonicalize_name(n) for n in args.allow_sdist),
        layer_prefix=args.layer_prefix,
        cache_dir=None if args.no_cache else (args.cache_dir or default_cache_dir()),
    )


def run(args: argparse.Namespace) -> int:
    level = verbosity(args)
    target = Target(args.runtime, args.arch)
    output = args.output
    if output is None:
        # `build .` names the zip after the directory (`…/svc/lambda/` after svc)
        stem = (
            directory_name(args.source)
            if args.source.is_dir()
            else strip_archive_suffix(args.source.resolve().name)
        )
        output = Path(f"{stem}-{target.runtime}-{target.arch}.zip")
    request = build_request(args, args.source, output, target)
    progress = Progress(sys.stderr, level)
    try:
        try:
            result = build(request, progress)
        finally:
            progress.done()
    except LayerBuildError as exc:
        _report_stop(args, exc, level)
        raise
    report = redact_data(result.report.to_dict())  # no index secret in what the build says
    if args.report:
        write_reports(args.report, report, output)
    if args.json:
        print(json.dumps(report, indent=2))  # as BuildReport.to_json()
    elif level > -2:
        print(redact(summary(result.report, output, level)))
    return EXIT_OK


def _report_stop(args: argparse.Namespace, exc: LayerBuildError, level: int) -> None:
    """A build that stopped still answers --report (status, error, the tool's log), and -v shows
    the log on stderr: a failed source build's log is what the user needs next."""
    error = redact_data(error_report(exc, MAX_REPORT_LOG_CHARS))
    if args.report:
        args.report.parent.mkdir(parents=True, exist_ok=True)
        status = "refused" if exc.permanent else "failed"
        args.report.write_text(
            json.dumps({"status": status, "error": error}, indent=2) + "\n", encoding="utf-8"
        )
    if exc.log and level >= 1:
        print(error["log"], file=sys.stderr)
