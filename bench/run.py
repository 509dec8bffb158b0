"""`python -m bench.run`: build speed, layer size and cold start, contenders side by side.

Contenders (bench/contenders.py) run in one process, alternating (a b c d … a b c d …), and the
median is quoted; bench/measures.py measures each run, bench/report.py writes the table to
<out>/latest.md (latest-<fixture>.md for other fixtures), into bench/README.md and the README's
benchmark section (heavy and native), and a JSON of every raw figure.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

from .contenders import (
    CONTENDERS,
    DEFAULT_VENV,
    FIXTURES,
    IMPORTS,
    Bench,
    _git_state,
    _python_version,
    _tool_version,
    ensure_bench_venv,
    host_python,
)
from .report import DEFAULT_OUT, _targets, summarise, write_table


def _load() -> str:
    return f"{os.getloadavg()[0]:.1f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.run", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--fixture", choices=sorted(FIXTURES), default="heavy")
    parser.add_argument(
        "--reps", type=int, default=3, help="timed repetitions per contender (default 3)"
    )
    parser.add_argument(
        "--contenders",
        default=",".join(CONTENDERS),
        help=f"comma-separated subset of {','.join(CONTENDERS)}",
    )
    parser.add_argument(
        "--import-runs", type=int, default=3, help="cold-import runs per layer variant"
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where the table and JSON go")
    parser.add_argument(
        "--work",
        type=Path,
        default=None,
        help="make the scratch directory in here (default: $TMPDIR)",
    )
    parser.add_argument(
        "--venv", type=Path, default=DEFAULT_VENV, help="venv with pipenv for the seed"
    )
    parser.add_argument(
        "--host-python",
        default=None,
        help="interpreter the seed runs on (default: python3 on PATH)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory")
    parser.add_argument(
        "--render",
        type=Path,
        default=None,
        metavar="JSON",
        help="only rewrite the table from the raw figures of an earlier run",
    )
    args = parser.parse_args(argv)
    if args.render is not None:
        raw = json.loads(args.render.read_text(encoding="utf-8"))
        return write_table(raw["meta"], raw["summary"], args.out)
    contenders = tuple(c for c in CONTENDERS if c in args.contenders.split(","))
    unknown = set(args.contenders.split(",")) - set(CONTENDERS)
    if unknown or not contenders or args.reps < 1 or args.import_runs < 1:
        parser.error(
            f"bad --contenders/--reps/--import-runs ({', '.join(sorted(unknown)) or 'empty'})"
        )

    host = args.host_python or host_python()
    venv = ensure_bench_venv(args.venv, host) if "seed" in contenders else args.venv
    if args.work is not None:
        args.work.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="layer-bench-", dir=args.work))
    load_before = _load()
    try:
        bench = Bench(args.fixture, contenders, args.reps, args.import_runs, work, venv, host)
        bench.run()
        imports = bench.imports()
        meta = {
            "fixture": args.fixture,
            "reps": args.reps,
            "contenders": list(contenders),
            "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "cpus": os.cpu_count(),
            "load_before": load_before,
            "load_after": _load(),
            "engine": _git_state(),
            "target_python": _python_version(bench.python),
            "arch": bench.target.arch,
            "host_python": _python_version(host),
            "pip": _tool_version([str(venv / "bin" / "pip3"), "--version"]).split(" from ")[0]
            if "seed" in contenders
            else "–",
            "pipenv": _tool_version([str(venv / "bin" / "pipenv"), "--version"]).replace(
                ", version", ""
            )
            if "seed" in contenders
            else "–",
            "import_names": list(IMPORTS[args.fixture]),
            "import_runs": args.import_runs,
            "distributions": len(bench.expected),
        }
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    summary = summarise(bench.records, contenders, imports)
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    raw = {
        "meta": meta,
        "summary": summary,
        "records": [asdict(r) for r in bench.records],
        "targets": [{"target": t, "figures": f, "verdict": v}
                    for t, f, v in _targets(summary, args.fixture)],
    }
    (args.out / f"{args.fixture}-{stamp}.json").write_text(
        json.dumps(raw, indent=2) + "\n", encoding="utf-8"
    )
    return write_table(meta, summary, args.out)


if __name__ == "__main__":
    sys.exit(main())
