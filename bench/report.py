"""The table: medians, ratios against the seed and the floor, the issue's targets, and where the
CLI's time goes; written to bench/results/latest*.md and into the README's benchmark section."""

from __future__ import annotations

import json
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from layer_builder.limits import MAX_UNZIPPED_BYTES

from .contenders import BENCH, CLI_CONTENDERS, REPO, RunRecord

DEFAULT_OUT = BENCH / "results"
README = BENCH / "README.md"
#: bench/README.md carries the latest heavy table below this line.
README_MARK = "<!-- latest table: paste results/latest.md below after `make bench` -->\n"
#: The repository README's benchmark section lies between these two lines.
MAIN_README = REPO / "README.md"
MAIN_MARKS = ("<!-- bench:start -->\n", "<!-- bench:end -->\n")


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def _median_by_key(dicts: list[dict[str, float]]) -> dict[str, float]:
    keys = sorted({k for d in dicts for k in d})
    return {k: statistics.median([d[k] for d in dicts if k in d]) for k in keys}


def summarise(
    records: list[RunRecord], contenders: Sequence[str], imports: dict
) -> dict[str, dict]:
    summary: dict[str, dict] = {}
    for contender in contenders:
        runs = [r for r in records if r.contender == contender and not r.warmup]
        good = [r for r in runs if r.ok]
        last = runs[-1] if runs else None
        phases = _median_by_key([r.report.get("timings") or {} for r in runs])
        progress = _median_by_key([r.progress for r in runs])
        summary[contender] = {
            "seconds": [r.seconds for r in runs],
            "median_seconds": _median([r.seconds for r in runs]),
            "succeeded": len(good),
            "runs": len(runs),
            "errors": sorted({r.error for r in runs if r.error}),
            "max_rss_kb": max((r.max_rss_kb for r in runs), default=None),
            "tree_pss_kb": max((r.tree_pss_kb for r in runs), default=None),
            "layer": last.layer if last else {},
            "phases": phases,
            "progress": progress,
            "bytecode": last.report.get("bytecode") if last else None,
            "imports": imports.get(contender, {}),
            "peak_tmp_bytes": max((r.report.get("peak_tmp_bytes") or 0 for r in runs), default=0),
            "headroom": last.report.get("headroom") if last else None,
            "room_left_bytes": last.report.get("room_left_bytes") if last else None,
            "checks": last.report.get("checks") if last else None,
        }
    return summary


def _mb(size: int | None) -> str:
    return "–" if size is None else f"{size / 1e6:.1f} MB"


def _s(seconds: float | None, digits: int = 2) -> str:
    return "–" if seconds is None else f"{seconds:.{digits}f}"


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a and b else None


#: Cold build against the seed: the heavy lock must be 10× faster, a small native one 5×.
SPEED_TARGET = {"heavy": 10.0, "native": 5.0}


def _targets(summary: dict[str, dict], fixture: str = "heavy") -> list[tuple[str, str, str]]:
    """(target, figures, verdict) for issue 10's targets.

    Figures of refused builds are shown but never count as met: a build that produces no layer
    proves nothing.
    """
    med = {c: s["median_seconds"] for c, s in summary.items()}
    failed = {c for c, s in summary.items() if s["succeeded"] < s["runs"]}
    rows = []

    def row(target: str, items: list[tuple[str, Any, str, bool | None]]) -> None:
        """items: (label, figure, figure text, passes); figure None means not measured."""
        figures = "; ".join(
            f"{c} {text}" + (" (no layer)" if any(x in failed for x in c.split("/")) else "")
            if value is not None else f"{c} n/a" for c, value, text, _ in items) or "n/a"
        known = [(c, ok) for c, value, _, ok in items if value is not None]
        if not known:
            verdict = "n/a"
        elif not all(ok for _, ok in known):
            verdict = "**not met**" if not any(ok for _, ok in known) else "partly"
        elif any(x in failed for c, _ in known for x in c.split("/")):
            verdict = "unproven: the builds were refused before writing a zip"
        else:
            verdict = "met"
        rows.append((target, figures, verdict))

    goal = SPEED_TARGET.get(fixture, 10.0)
    if "cli-cold" in summary:
        r = _ratio(med.get("seed"), med["cli-cold"])
        row(f"cold build ≥ {goal:.0f}× faster than the seed",
            [("cli-cold", r, f"{r:.1f}×" if r else "", bool(r and r >= goal))])
        r = _ratio(med["cli-cold"], med.get("floor"))
        row("cold build against the floor (download + zip), for reference",
            [("cli-cold/floor", r, f"{r:.2f}×" if r else "", True)])
    if "cli-bump" in summary and "cli-cold" in summary:
        r = _ratio(med["cli-bump"], med["cli-cold"])
        row("bump one small pin ≤ 15 % of cold",
            [("cli-bump/cli-cold", r, f"{100 * r:.1f} %" if r else "", bool(r and r <= 0.15))])
    if "cli-same" in summary:
        m = med["cli-same"]
        row("same lock again < 1 s", [("cli-same", m, f"{m:.2f} s" if m else "", bool(m and m < 1))])
    cli = [c for c in CLI_CONTENDERS if c in summary]
    speedups = [(c, _ratio(summary[c]["imports"].get("without_pyc"), summary[c]["imports"].get("with_pyc")))
                for c in cli]
    row("cold import ≥ 1.5× faster with .pyc",
        [(c, r, f"{r:.2f}×" if r else "", bool(r and r >= 1.5)) for c, r in speedups])
    fits = []
    for c in cli:
        size, headroom = summary[c]["layer"].get("unzipped_bytes"), summary[c].get("headroom") or 0
        fits.append((c, size, f"{size:,} B + headroom {headroom:,} B" if size else "",
                     bool(size and size + headroom <= MAX_UNZIPPED_BYTES)))
    row(f"fits Lambda with the headroom kept (≤ {MAX_UNZIPPED_BYTES:,} B)", fits)
    rss = [(c, summary[c]["max_rss_kb"], summary[c]["tree_pss_kb"]) for c in cli]
    row("builder peak memory ≤ 300 MB",
        [(c, m, f"{m / 1024:.0f} MB max-process RSS, {p / 1024:.0f} MB tree PSS" if m else "",
          bool(m and max(m, p) / 1024 <= 300)) for c, m, p in rss])
    row("peak /tmp reported (size EphemeralStorage from it)",
        [(c, summary[c]["peak_tmp_bytes"] or None, f"{summary[c]['peak_tmp_bytes'] / 1e6:.0f} MB",
          True) for c in cli])
    return rows


def _phase_table(title: str, key: str, summary: dict[str, dict], cli: list[str]) -> list[str]:
    phases = sorted({p for c in cli for p in summary[c][key]})
    if not phases:
        return []
    lines = ["", title, "", "| phase | " + " | ".join(cli) + " |", "|---|" + "---:|" * len(cli)]
    lines += [
        f"| {p} | " + " | ".join(_s(summary[c][key].get(p)) for c in cli) + " |" for p in phases
    ]
    lines.append(
        "| (wall, whole process) | "
        + " | ".join(_s(summary[c]["median_seconds"]) for c in cli)
        + " |"
    )
    return lines


def markdown(meta: dict[str, Any], summary: dict[str, dict]) -> str:
    seed, floor = (
        summary.get("seed", {}).get("median_seconds"),
        summary.get("floor", {}).get("median_seconds"),
    )
    lines = [
        (
            f"# Benchmark: {meta['fixture']} fixture ({meta['distributions']} locked distribution{'s' if meta['distributions'] != 1 else ''}), "
            f"{meta['reps']} repetition{'s' if meta['reps'] != 1 else ''}"
        ),
        "",
        (
            f"{meta['date']} · {meta['cpus']} CPUs, load {meta['load_before']} → {meta['load_after']} · "
            f"engine {meta['engine']} · target CPython {meta['target_python']} {meta['arch']} · "
            f"seed on host Python {meta['host_python']} ({meta['pip']}, {meta['pipenv']}) · "
            f"cold import of {', '.join(meta['import_names'])}, median of {meta['import_runs']}"
        ),
        "",
        (
            "| contender | wall (median) | runs | × faster than seed | × floor | zipped | unzipped "
            "| fits | peak RSS (max process) | peak PSS (tree) | import with .pyc | import without .pyc "
            "| .pyc speed-up |"
        ),
        "|---|---:|---|---:|---:|---:|---:|:-:|---:|---:|---:|---:|---:|",
    ]
    for contender, s in summary.items():
        med, layer, imp = s["median_seconds"], s["layer"], s["imports"]
        failed = s["succeeded"] < s["runs"]
        fits = layer.get("fits")
        lines.append(
            " | ".join(
                [
                    f"| {contender}"
                    + (f" ⚠ {s['runs'] - s['succeeded']}/{s['runs']} failed" if failed else ""),
                    f"{_s(med)} s",
                    " / ".join(_s(x, 1) for x in s["seconds"]),
                    _s(_ratio(seed, med), 1) if contender != "seed" else "1.0",
                    _s(_ratio(med, floor), 2),
                    _mb(layer.get("zipped_bytes")),
                    _mb(layer.get("unzipped_bytes")),
                    "–" if fits is None else ("yes" if fits else "**no**"),
                    "–" if s["max_rss_kb"] is None else f"{s['max_rss_kb'] / 1024:.0f} MB",
                    "–" if s["tree_pss_kb"] is None else f"{s['tree_pss_kb'] / 1024:.0f} MB",
                    f"{_s(imp.get('with_pyc'))} s"
                    if imp.get("with_pyc")
                    else ("fails" if imp.get("errors") else "–"),
                    f"{_s(imp.get('without_pyc'))} s"
                    if imp.get("without_pyc")
                    else ("fails" if imp.get("errors") else "–"),
                    _s(_ratio(imp.get("without_pyc"), imp.get("with_pyc")), 2) + "×"
                    if imp.get("with_pyc") and imp.get("without_pyc")
                    else "–",
                ]
            )
            + " |"
        )
    lines += ["", "## Targets (issue 10)", "", "| target | figures | verdict |", "|---|---|---|"]
    lines += [f"| {t} | {f} | {v} |" for t, f, v in _targets(summary, meta["fixture"])]
    cli = [c for c in CLI_CONTENDERS if c in summary]
    lines += _phase_table(
        "## Where the CLI's time goes: phases from --report (median seconds)",
        "phases",
        summary,
        cli,
    )
    lines += _phase_table(
        "## Where the CLI's time goes: from each progress line to the next "
        "(median seconds; refused builds too)",
        "progress",
        summary,
        cli,
    )
    errors: dict[str, list[str]] = {}
    for contender, s in summary.items():
        for error in s["errors"]:
            errors.setdefault(error, []).append(contender)
        for label, error in s["imports"].get("errors", {}).items():
            errors.setdefault(f"cold import {label.replace('_', ' ')}: {error}", []).append(
                contender
            )
    notes = [f"- {', '.join(who)}: {error}" for error, who in errors.items()]
    notes += [
        f"- {c} bytecode: {json.dumps(summary[c]['bytecode'], sort_keys=True)}"
        for c in cli[:1]
        if summary[c].get("bytecode")
    ]
    notes += [f"- {c} checks: {json.dumps(summary[c]['checks'], sort_keys=True)}"
              for c in cli[:1] if summary[c].get("checks")]
    if notes:
        lines += ["", "## Notes", "", *notes]
    lines += [
        "",
        (
            "Reproduce: `make bench` (or `.venv/bin/python -m bench.run --fixture "
            f"{meta['fixture']} --reps {meta['reps']}`); bench/README.md says what each contender does."
        ),
    ]
    return "\n".join(lines) + "\n"


def write_table(meta: dict[str, Any], summary: dict[str, dict], out: Path) -> int:
    table = markdown(meta, summary)
    out.mkdir(parents=True, exist_ok=True)
    stem = "latest" if meta["fixture"] == "heavy" else f"latest-{meta['fixture']}"
    (out / f"{stem}.md").write_text(table, encoding="utf-8")
    if meta["fixture"] in ("heavy", "native") and out.resolve() == DEFAULT_OUT.resolve():
        update_readmes(out)
    print(table)
    return 0


def update_readmes(out: Path) -> None:
    """Copy the heavy and native tables into bench/README.md and the README's benchmark section,
    two heading levels down."""
    tables = [(out / name).read_text(encoding="utf-8") for name in ("latest.md", "latest-native.md")
              if (out / name).is_file()]
    body = "\n".join("\n".join("###" + ln if ln.startswith("#") else ln for ln in t.splitlines())
                     for t in tables) + "\n"
    text = README.read_text(encoding="utf-8")
    if README_MARK in text:
        README.write_text(text.split(README_MARK)[0] + README_MARK + "\n" + body, encoding="utf-8")
    text = MAIN_README.read_text(encoding="utf-8")
    start, end = MAIN_MARKS
    if start in text and end in text:
        head, rest = text.split(start, 1)
        MAIN_README.write_text(head + start + body + end + rest.split(end, 1)[1], encoding="utf-8")
