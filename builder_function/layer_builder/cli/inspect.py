"""`layer-builder inspect`: size breakdown and target check of any existing layer zip."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..inspection import inspect_zip
from ..report import human
from ..target import ARCH_MACHINE, Target
from .common import EXIT_OK, EXIT_REFUSED
from .output import sizes_table


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    i = sub.add_parser("inspect", help="size breakdown and target check of an existing layer zip")
    i.add_argument("layer", type=Path)
    i.add_argument("--arch", choices=sorted(ARCH_MACHINE), help="check binaries against this arch")
    i.add_argument("--json", action="store_true")
    return i


def run(args: argparse.Namespace) -> int:
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
    lines += ["Largest packages:", *sizes_table(result["sizes"], result["unzipped_bytes"])]
    print("\n".join(lines))
    return EXIT_OK if result["fits"] and result.get("target_ok", True) else EXIT_REFUSED
