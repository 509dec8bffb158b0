"""`layer-builder build`: a layer zip from a Pipfile project, as the builder Lambda makes it."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from packaging.utils import canonicalize_name

from ..lock import IndexPolicy
from ..pipeline import BuildRequest, build
from ..target import ARCH_MACHINE, DEFAULT_ARCH, DEFAULT_RUNTIME, RUNTIME_GLIBC, Target
from ..unpack import strip_archive_suffix
from .common import EXIT_OK, default_cache_dir
from .output import Progress, summary


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    b = sub.add_parser("build", help="build a layer zip from a Pipfile project (dir, .zip, .tar.gz)")
    b.add_argument("source", type=Path)
    b.add_argument("--output", "-o", type=Path, help="layer zip to write (default: <layer>.zip)")
    b.add_argument("--runtime", default=DEFAULT_RUNTIME, choices=sorted(RUNTIME_GLIBC))
    b.add_argument("--arch", default=DEFAULT_ARCH, choices=sorted(ARCH_MACHINE))
    b.add_argument("--report", type=Path, help="write the JSON build report here")
    b.add_argument("--index-url", default="", help="package index for every source of the lock")
    b.add_argument("--allow-sdist", action="append", default=[], metavar="NAME",
                   help="build this package from source when it has no wheel (repeatable)")
    b.add_argument("--layer-prefix", default="", help="prefix for the layer name")
    b.add_argument("--cache-dir", type=Path, default=None,
                   help=f"dependency cache (default: {default_cache_dir()})")
    b.add_argument("--no-cache", action="store_true", help="do not use the dependency cache")
    b.add_argument("--json", action="store_true", help="print the report as JSON instead of a summary")
    return b


def run(args: argparse.Namespace) -> int:
    target = Target(args.runtime, args.arch)
    output = args.output
    if output is None:
        # `build .` names the zip after the directory
        stem = strip_archive_suffix(args.source.resolve().name)
        output = Path(f"{stem}-{target.runtime}-{target.arch}.zip")
    request = BuildRequest(
        source=args.source, output=output.resolve(), target=target,
        index=IndexPolicy(override=args.index_url, environ=dict(os.environ), allow_lock_urls=True),
        allow_sdist=frozenset(canonicalize_name(n) for n in args.allow_sdist),
        layer_prefix=args.layer_prefix,
        cache_dir=None if args.no_cache else (args.cache_dir or default_cache_dir()),
    )
    progress = Progress(sys.stderr)
    try:
        result = build(request, progress)
    finally:
        progress.done()
    if args.report:
        args.report.parent.mkdir(parents=True, exist_ok=True)  # e.g. --report out/report.json
        args.report.write_text(result.report.to_json() + "\n", encoding="utf-8")
    print(result.report.to_json() if args.json else summary(result.report, output))
    return EXIT_OK
