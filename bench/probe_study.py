"""Static import graph against running the imports: which start-up probe ranks bytecode better.

    python -m bench.probe_study LAYER.zip [--reps 5]

For a built layer: extracts it, drops its bytecode, and asks both probes which sources the
direct dependencies and the own packages load at import (the modules named in the layer's
manifest: every top-level of the layer). Then it compiles everything once and, within the same
byte budget (the bytecode of the runtime probe's set), keeps each probe's choice first and the
shallowest other modules after it, as the pipeline does (bytecode.rank; and, for reference, only the
shallowest modules: what happens without a probe), and times a cold import
(`import <every top-level>` in a fresh `python -I -S -B`) from the tree: without bytecode, with
each probe's choice, and with all of it. Ratios only: the machines are shared and noisy.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

from layer_builder import bytecode
from layer_builder.importgraph import static_startup
from layer_builder.runner import run_check
from layer_builder.sandbox import CheckSpec
from layer_builder.target import Target


def top_levels(python_dir: Path) -> list[str]:
    """Public top-level packages and modules of the layer: what a function imports."""
    names = []
    for entry in sorted(python_dir.iterdir()):
        if entry.name.startswith(("_", ".")) or entry.name.endswith((".dist-info", ".libs")):
            continue
        if entry.is_dir() and (entry / "__init__.py").is_file():
            names.append(entry.name)
        elif entry.suffix == ".py":
            names.append(entry.stem)
    return names


def choose(pycs: dict[str, int], first: set[str], budget: int, version: str) -> set[str]:
    """The pipeline's order (bytecode.rank: start-up sources first, then the shallowest), kept
    while it fits the budget."""
    by_source = {bytecode.pyc_source(p): p for p in pycs}
    kept, room = set(), budget
    for source in bytecode.rank(sorted(by_source), first):
        pyc = by_source[source]
        if pycs[pyc] <= room:
            kept.add(pyc)
            room -= pycs[pyc]
    return kept


def place(tree: Path, stash: Path, chosen: set[str]) -> None:
    for pyc in tree.rglob("*.pyc"):
        pyc.unlink()
    for name in chosen:
        (tree / name).parent.mkdir(exist_ok=True)
        os.link(stash / name, tree / name)


def cold_import(python: str, tree: Path, modules: list[str]) -> float:
    code = ("import sys, time; sys.path.insert(0, sys.argv[1]); t = time.perf_counter()\n"
            f"import {', '.join(modules)}\n"
            "print(time.perf_counter() - t)")
    done = subprocess.run([python, "-I", "-S", "-B", "-c", code, str(tree)], capture_output=True,
                          text=True, check=True)
    return float(done.stdout.split()[-1])  # the last line: imported code may print too


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("layer", type=Path)
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()
    target = Target()
    python = bytecode.find_interpreter(target)
    if python is None:
        sys.exit(f"needs a {target.runtime} interpreter")
    version = target.python_version
    with tempfile.TemporaryDirectory(prefix="probe-study-") as tmp:
        work = Path(tmp)
        with zipfile.ZipFile(args.layer) as zf:
            zf.extractall(work / "layer")
        tree = work / "layer" / "python"
        for pyc in tree.rglob("*.pyc"):
            pyc.unlink()
        modules = top_levels(tree)
        spec = CheckSpec(own=tuple(modules))

        started = time.perf_counter()
        verdict = run_check(tree, spec, python, timeout=None, environ={"PATH": os.environ["PATH"]})
        runtime_seconds = time.perf_counter() - started
        started = time.perf_counter()
        static = static_startup(tree, modules, target.version_tuple)
        static_seconds = time.perf_counter() - started
        runtime = set(verdict.startup)

        sources = sorted(p.relative_to(tree).as_posix() for p in tree.rglob("*.py"))
        compiled = bytecode.compile_sources(python, tree, sources).pycs
        failed = len(sources) - len(compiled)
        stash = work / "stash"
        for name, data in compiled.items():
            (stash / name).parent.mkdir(parents=True, exist_ok=True)
            (stash / name).write_bytes(data)
        pycs = {name: len(data) for name, data in compiled.items()}
        budget = sum(pycs.get(bytecode.pyc_name(s, version), 0) for s in runtime)
        configs = {"no bytecode": set(),
                   "no probe (shallowest first)": choose(pycs, set(), budget, version),
                   "runtime probe": choose(pycs, runtime, budget, version),
                   "static probe": choose(pycs, static, budget, version), "all bytecode": set(pycs)}
        times: dict[str, list[float]] = {name: [] for name in configs}
        importable = [m for m in modules if m not in {e.split(":")[0] for e in verdict.warnings}]
        for _ in range(args.reps):  # interleaved, so noise hits every configuration alike
            for name, chosen in configs.items():
                place(tree, stash, chosen)
                times[name].append(cold_import(python, tree, importable))

    both = runtime & static
    print(f"layer: {args.layer.name}; top-levels imported: {', '.join(importable)}")
    print(f"verdict: ok={verdict.ok} warnings={len(verdict.warnings)}; sources that did not compile: {failed}")
    print()
    print("| probe | sources found | of the runtime probe's | extra | cost |")
    print("|---|---:|---:|---:|---:|")
    print(f"| runtime (run_check) | {len(runtime)} | {len(runtime)} (100 %) | 0 | {runtime_seconds:.2f} s |")
    print(f"| static (importgraph) | {len(static)} | {len(both)} ({100 * len(both) / max(len(runtime), 1):.0f} %) "
          f"| {len(static - runtime)} | {static_seconds:.2f} s |")
    print()
    print(f"budget: {budget:,} bytes of {sum(pycs.values()):,} bytes of bytecode "
          f"({len(configs['runtime probe'])} / {len(pycs)} .pyc for the runtime probe's choice, "
          f"{len(configs['static probe'])} for the static one's); {args.reps} reps, median")
    print()
    base = statistics.median(times["no bytecode"])
    print("| bytecode | cold import | speed-up vs none |")
    print("|---|---:|---:|")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"| {name} | {median:.3f} s | {base / median:.2f}× |")
    missed = sorted(runtime - static)
    if missed:
        print(f"\nfirst runtime sources the static probe missed: {', '.join(missed[:8])}")


if __name__ == "__main__":
    main()
