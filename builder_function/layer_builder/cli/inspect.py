"""`layer-builder inspect`: size breakdown and target check of any existing layer zip."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..inspection import inspect_zip
from ..report import human
from ..target import ARCH_MACHINE, Target
from .common import EXIT_OK, EXIT_REFUSED, verbosity
from .output import sizes_table


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    i = sub.add_parser(
        "inspect",
        help="size breakdown and target check of an existing layer zip",
        description="Where the bytes of a layer zip are (any layer, ours or not), "
        "and whether its binaries suit an architecture. Exits 2 when "
        "the layer is over Lambda's limit or fails the target check.",
    )
    i.add_argument("layer", type=Path, help="the layer zip to inspect")
    i.add_argument(
        "--arch",
        choices=sorted(ARCH_MACHINE),
        help="check every shared object is built for this architecture (default: no check)",
    )
    i.add_argument(
        "--html",
        type=Path,
        metavar="FILE",
        help="also write a self-contained HTML picture of the layer (a treemap of "
        "its bytes by package) to FILE",
    )
    i.add_argument(
        "--json", action="store_true", help="print the breakdown as JSON on stdout instead of text"
    )
    return i


def _text(result: dict, level: int) -> str:
    lines = [
        f"{result['path']}: {result['files']} files, {human(result['zipped_bytes'])} zipped, "
        f"{human(result['unzipped_bytes'])} unzipped "
        f"({'fits' if result['fits'] else 'OVER'} Lambda's {human(result['limit_bytes'])})",
        "Binaries: " + (", ".join(f"{n} {m}" for m, n in result["binaries"].items()) or "none"),
    ]
    manifest = result["manifest"]
    if manifest:
        lines.insert(
            1,
            f"Layer {manifest.get('layer')} {manifest.get('version') or '(no version)'} for "
            f"{manifest.get('runtime')}/{manifest.get('architecture')}, built by layer-builder "
            f"{manifest.get('builder_version')}, content sha256:{manifest.get('content_hash')}",
        )
    if "target_check" in result:
        lines.append(f"Target check: {result['target_check']}")
    if result["outside_python_dir"]:
        lines.append(f"Outside python/: {', '.join(result['outside_python_dir'])}")
    coverage = result["bytecode"]
    lines.append(f"Bytecode: {coverage['compiled']} of {coverage['modules']} modules")
    lines += [
        "Largest packages:",
        *sizes_table(result["sizes"], result["unzipped_bytes"], count=8 if level <= 0 else 40),
    ]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    level = verbosity(args)
    result = inspect_zip(args.layer, Target(arch=args.arch) if args.arch else None)
    if args.html:
        from ..htmlreport import html_for_zip

        args.html.parent.mkdir(parents=True, exist_ok=True)
        manifest = result["manifest"] or None
        args.html.write_text(html_for_zip(args.layer, _as_report(manifest)), encoding="utf-8")
    if args.json:
        print(json.dumps(result, indent=2))
    elif level > -2:
        print(
            _text(result, level)
            if level >= 0
            else result["path"]
            + (
                f": {human(result['unzipped_bytes'])} unzipped, "
                f"{'fits' if result['fits'] else 'OVER the limit'}"
            )
        )
    return EXIT_OK if result["fits"] and result.get("target_ok", True) else EXIT_REFUSED


def _as_report(manifest: dict | None) -> dict | None:
    """The manifest our layers carry names the layer and target; the page titles with it."""
    if not manifest:
        return None
    return {
        "layer_name": manifest.get("layer", ""),
        "layer_version": manifest.get("version") or "",
        "runtime": manifest.get("runtime", ""),
        "arch": manifest.get("architecture", ""),
        "content_hash": manifest.get("content_hash", ""),
    }
