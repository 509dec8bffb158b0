"""The import check with and without pyc_warmer's child: what compiling beside it buys.

    python -m bench.warm_study LAYER.zip [--reps 5]

For a built layer: extracts it (into RAM where it fits, as the CLI's check does), drops its
bytecode, and runs the import check (runner.run_check, the real probe) of every top-level of the
layer, alternating: as on one CPU (no child) and on two (the child compiles from the end of the
list). Medians and their ratio; the machines are shared and noisy.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
import zipfile
from pathlib import Path

from bench.probe_study import top_levels
from layer_builder.runner import run_check
from layer_builder.sandbox import CheckSpec
from layer_builder.sandbox_local import ram_dir_for


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("layer", type=Path)
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args(argv)
    unzipped = sum(i.file_size for i in zipfile.ZipFile(args.layer).infolist())
    work = Path(tempfile.mkdtemp(prefix="warm-study-", dir=ram_dir_for(unzipped)))
    try:
        with zipfile.ZipFile(args.layer) as zf:
            zf.extractall(work)
        for pyc in work.rglob("*.pyc"):
            pyc.unlink()
        python_dir = work / "python"
        spec = CheckSpec(own=tuple(top_levels(python_dir)), dependencies=())
        env = {"PATH": "/usr/bin:/bin"}
        seconds: dict[int, list[float]] = {1: [], 2: []}
        for _ in range(args.reps):
            for cpus in seconds:
                started = time.perf_counter()
                verdict = run_check(
                    python_dir, spec, sys.executable, timeout=None, environ=env, cpus=cpus
                )
                seconds[cpus].append(time.perf_counter() - started)
                if not verdict.ok:
                    print(verdict.message, file=sys.stderr)
                    return 1
        one, two = (statistics.median(seconds[c]) for c in (1, 2))
        print(f"import check of {', '.join(spec.own)} ({args.reps} runs each, median)")
        print(
            f"  one CPU, no child:      {one:.3f} s  ({' '.join(f'{s:.2f}' for s in seconds[1])})"
        )
        print(
            f"  two CPUs, child warming: {two:.3f} s  ({' '.join(f'{s:.2f}' for s in seconds[2])})"
        )
        print(f"  ratio {one / two:.2f}x")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
