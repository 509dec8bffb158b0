"""`layer-builder`: build the same layer on a laptop that the builder Lambda publishes.

Exit codes: 0 built, 2 input refused (one message on stderr, nothing left behind), 1 anything else.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from packaging.utils import canonicalize_name

from . import __version__
from .errors import LayerBuildError
from .lock import IndexPolicy, redact
from .pipeline import BuildRequest, build, inspect_zip
from .report import BuildReport, human
from .target import ARCH_MACHINE, DEFAULT_ARCH, DEFAULT_RUNTIME, RUNTIME_GLIBC, Target
from .unpack import strip_archive_suffix

EXIT_OK, EXIT_FAILED, EXIT_REFUSED = 0, 1, 2


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    return Path(base) / "layer-builder"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="layer-builder", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

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

    i = sub.add_parser("inspect", help="size breakdown and target check of an existing layer zip")
    i.add_argument("layer", type=Path)
    i.add_argument("--arch", choices=sorted(ARCH_MACHINE), help="check binaries against this arch")
    i.add_argument("--json", action="store_true")
    return parser


class _Progress:
    """Live progress on a terminal; plain timestamped lines when piped."""

    def __init__(self, stream) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self.start = time.perf_counter()

    def __call__(self, message: str) -> None:
        elapsed = time.perf_counter() - self.start
        if self.tty:
            self.stream.write(f"\r\033[K[{elapsed:5.1f}s] {message}…")
        else:
            self.stream.write(f"[{elapsed:.1f}s] {message}\n")
        self.stream.flush()

    def done(self) -> None:
        if self.tty:
            self.stream.write("\r\033[K")
            self.stream.flush()


def _sizes_table(sizes: dict[str, int], total: int, count: int = 8) -> list[str]:
    lines = []
    for name, size in list(sizes.items())[:count]:
        share = 100 * size / total if total else 0
        lines.append(f"  {name:<32} {human(size):>10}  {share:5.1f} %")
    return lines


def summary(report: BuildReport, output: Path) -> str:
    lines = [
        f"Built layer {report.layer_name} {report.layer_version}".rstrip(),
        f"  target     {report.runtime} {report.arch} ({report.platform})",
        f"  zip        {output} ({human(report.zipped_bytes)}"
        f"{', publish via S3' if report.publish_via_s3 else ''})",
        f"  unzipped   {human(report.unzipped_bytes)} of {human(report.limit_bytes)} allowed, "
        f"{report.files} files",
        f"  content    sha256:{report.content_hash}",
        f"  cache      {report.dependency_cache}; build {sum(report.timings.values()):.1f}s",
        "Largest packages:",
        *_sizes_table(report.sizes, report.unzipped_bytes),
    ]
    saved = sum(item["bytes"] for item in report.slimmed)
    if saved:
        lines.append(f"Slimmed {human(saved)}: " + ", ".join(
            f"{item['rule']} {human(item['bytes'])}" for item in report.slimmed))
    lines += [f"warning: {w}" for w in report.warnings]
    return "\n".join(lines)


def _build(args: argparse.Namespace) -> int:
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
    progress = _Progress(sys.stderr)
    try:
        result = build(request, progress)
    finally:
        progress.done()
    if args.report:
        args.report.parent.mkdir(parents=True, exist_ok=True)  # e.g. --report out/report.json
        args.report.write_text(result.report.to_json() + "\n", encoding="utf-8")
    print(result.report.to_json() if args.json else summary(result.report, output))
    return EXIT_OK


def _inspect(args: argparse.Namespace) -> int:
    result = inspect_zip(args.layer, Target(arch=args.arch) if args.arch else None)
    if args.json:
        print(json.dumps(result, indent=2))
        return EXIT_OK
    lines = [f"{result['path']}: {result['files']} files, {human(result['zipped_bytes'])} zipped, "
             f"{human(result['unzipped_bytes'])} unzipped "
             f"({'fits' if result['fits'] else 'OVER'} Lambda's {human(result['limit_bytes'])})",
             "Binaries: " + (", ".join(f"{n} {m}" for m, n in result["binaries"].items()) or "none")]
    manifest = result["manifest"]
    if manifest:
        lines.insert(1, f"Layer {manifest.get('layer')} {manifest.get('version') or '(no version)'} for "
                        f"{manifest.get('runtime')}/{manifest.get('architecture')}, built by layer-builder "
                        f"{manifest.get('builder_version')}, content sha256:{manifest.get('content_hash')}")
    if "target_check" in result:
        lines.append(f"Target check: {result['target_check']}")
    if result["outside_python_dir"]:
        lines.append(f"Outside python/: {', '.join(result['outside_python_dir'])}")
    lines += ["Largest packages:", *_sizes_table(result["sizes"], result["unzipped_bytes"])]
    print("\n".join(lines))
    return EXIT_OK if result["fits"] and result.get("target_ok", True) else EXIT_REFUSED


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return _build(args) if args.command == "build" else _inspect(args)
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
