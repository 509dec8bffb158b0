"""A picture of a layer: one self-contained HTML file (no script, no CDN, no network).

It shows where the unzipped bytes are: a treemap of the layer by package, then by each
package's top-level directories; Lambda's 262,144,000-byte limit with what is used, the headroom
the build keeps and what is left; what slimming removed and the bytecode coverage (from the build
report when there is one); and the same figures as tables.

The treemap layout is squarify's (the squarified algorithm of Bruls, Huizing and van Wijk); the
drawing is inline SVG with a <title> tooltip per box. Every name in it comes from a zip that may
be hostile, so everything is escaped, and a Content-Security-Policy forbids scripts and any
fetch: the file renders the same from S3, an e-mail or a laptop.

Entry points: `html_for_zip(path, report=None)` (the CLI and the builder Lambda), and
`render(picture)` for a `Picture` built by hand.
"""

from __future__ import annotations

import html
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import squarify

from . import limits
from .inspection import inspect_zip
from .report import human

WIDTH, HEIGHT = 1000, 560
#: Packages beyond this many, and directories beyond this many per package, are drawn as one box.
MAX_PACKAGES, MAX_DIRS = 40, 30
LABEL_HEADER = 16  # px above a package's directories, for its name
_PALETTE = (
    "#4e79a7",
    "#f28e2b",
    "#59a14f",
    "#e15759",
    "#76b7b2",
    "#edc948",
    "#b07aa1",
    "#ff9da7",
    "#9c755f",
    "#bab0ac",
)
OWN_COLOUR = "#2f4b7c"


@dataclass
class Picture:
    """What the page shows. `tree` maps package → top-level entry → bytes."""

    title: str
    tree: dict[str, dict[str, int]]
    zipped_bytes: int
    unzipped_bytes: int
    limit_bytes: int = limits.MAX_UNZIPPED_BYTES
    headroom_bytes: int = 0
    files: int = 0
    #: {"modules": .py files, "compiled": those with a .pyc beside them} counted in the zip.
    coverage: dict[str, int] = field(default_factory=dict)
    report: Mapping[str, Any] | None = None
    notes: list[str] = field(default_factory=list)


def html_for_zip(path: Path, report: Mapping[str, Any] | None = None) -> str:
    """The page for a layer zip, with the build report's figures when there is one."""
    result = inspect_zip(path)
    title = (
        f"{report['layer_name']} {report.get('layer_version', '')}".strip() if report else path.name
    )
    headroom = int((report or {}).get("headroom", 0) or 0)
    notes = []
    if result["outside_python_dir"]:
        notes.append(
            "Files outside python/ (Lambda does not put them on sys.path): "
            + ", ".join(result["outside_python_dir"])
        )
    return render(
        Picture(
            title=title,
            tree=result["tree"],
            zipped_bytes=result["zipped_bytes"],
            unzipped_bytes=result["unzipped_bytes"],
            limit_bytes=result["limit_bytes"],
            headroom_bytes=headroom,
            files=result["files"],
            coverage=result["bytecode"],
            report=report,
            notes=notes,
        )
    )


# ------------------------------------------------------------------------------- drawing
def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _layout(sizes: list[int], x: float, y: float, dx: float, dy: float) -> list[dict[str, float]]:
    if dx <= 0 or dy <= 0 or not sizes:
        return []
    return squarify.squarify(squarify.normalize_sizes(sizes, dx, dy), x, y, dx, dy)


def _capped(items: list[tuple[str, int]], cap: int, what: str) -> list[tuple[str, int]]:
    items = sorted(((n, s) for n, s in items if s > 0), key=lambda kv: -kv[1])
    if len(items) <= cap:
        return items
    rest = items[cap - 1 :]
    capped = [*items[: cap - 1], (f"({len(rest)} smaller {what})", sum(s for _, s in rest))]
    return sorted(capped, key=lambda kv: -kv[1])  # squarify wants sizes in descending order


def _colour(name: str, rank: int) -> str:
    return OWN_COLOUR if name.endswith(" (own)") else _PALETTE[rank % len(_PALETTE)]


def _label(x: float, y: float, w: float, h: float, text: str, size: int) -> str:
    # Roughly 0.6 em per character: skip labels that would not fit rather than overflow.
    if w < size * 3 or h < size + 2:
        return ""
    chars = max(1, int(w / (size * 0.6)) - 1)
    shown = text if len(text) <= chars else text[: max(1, chars - 1)] + "…"
    return (
        f'<text x="{x + 3:.1f}" y="{y + size:.1f}" font-size="{size}" '
        f'pointer-events="none">{_e(shown)}</text>'
    )


def treemap_svg(tree: Mapping[str, Mapping[str, int]], total: int) -> str:
    packages = _capped([(p, sum(d.values())) for p, d in tree.items()], MAX_PACKAGES, "packages")
    parts = [
        f'<svg id="treemap" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-label="Unzipped bytes by package" xmlns="http://www.w3.org/2000/svg">'
    ]
    for rank, ((name, size), box) in enumerate(
        zip(packages, _layout([s for _, s in packages], 0, 0, WIDTH, HEIGHT), strict=False)
    ):
        x, y, w, h = box["x"], box["y"], box["dx"], box["dy"]
        share = 100 * size / total if total else 0
        colour = _colour(name, rank)
        parts.append(
            f'<g class="package" data-package="{_e(name)}" data-bytes="{size}">'
            f'<rect class="package-box" x="{x:.2f}" y="{y:.2f}" width="{w:.2f}" '
            f'height="{h:.2f}" fill="{colour}"><title>{_e(name)}: {_e(human(size))} '
            f"({share:.1f} %)</title></rect>"
        )
        header = LABEL_HEADER if h > 3 * LABEL_HEADER and w > 60 else 0
        parts.append(_label(x, y, w, h, f"{name} {human(size)}", 12) if header or h > 14 else "")
        dirs = _capped(list(tree.get(name, {}).items()), MAX_DIRS, "entries")
        inner = _layout([s for _, s in dirs], x + 2, y + header + 1, w - 4, h - header - 3)
        if header:
            for (entry, bytes_), sub in zip(
                dirs, inner, strict=False
            ):  # no boxes in a box too small
                sx, sy, sw, sh = sub["x"], sub["y"], sub["dx"], sub["dy"]
                parts.append(
                    f'<g class="entry"><rect x="{sx:.2f}" y="{sy:.2f}" width="{sw:.2f}" '
                    f'height="{sh:.2f}" fill="{colour}" fill-opacity="0.55" '
                    f'stroke="#fff" stroke-width="0.8"><title>{_e(name)} › {_e(entry)}: '
                    f"{_e(human(bytes_))}</title></rect>"
                    f"{_label(sx, sy, sw, sh, entry, 10)}</g>"
                )
        parts.append("</g>")
    parts.append("</svg>")
    return "".join(parts)


def _bar(fraction: float, colour: str = "#4e79a7") -> str:
    width = max(0.0, min(100.0, 100 * fraction))
    return f'<span class="bar"><span style="width:{width:.1f}%;background:{colour}"></span></span>'


def _gauge(picture: Picture) -> str:
    limit, used, headroom = picture.limit_bytes, picture.unzipped_bytes, picture.headroom_bytes
    left = limit - used
    segments = [("used", used, "#e15759" if used > limit else "#4e79a7")]
    if headroom:
        segments.append(("headroom kept", min(headroom, max(left, 0)), "#edc948"))
    cells = "".join(
        f'<span class="seg" title="{_e(label)}: {_e(human(size))}" '
        f'style="width:{100 * min(size, limit) / limit:.2f}%;background:{colour}"></span>'
        for label, size, colour in segments
    )
    verdict = "fits" if used <= limit else "OVER the limit"
    return (
        f'<div class="gauge" id="gauge">{cells}</div><p>{_e(human(used))} of Lambda\'s '
        f"{limit:,} bytes ({_e(human(limit))}) for the function and all its layers: "
        f"<strong>{verdict}</strong>, {100 * used / limit:.1f} % used, "
        f"{_e(human(max(left, 0)))} left"
        + (f", of which the build keeps {_e(human(headroom))} as headroom" if headroom else "")
        + ".</p>"
    )


def _table(rows: list[list[str]], head: list[str], cls: str = "") -> str:
    cells = "".join(f"<th>{_e(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f'<table class="{cls}"><thead><tr>{cells}</tr></thead><tbody>{body}</tbody></table>'


def _packages_table(tree: Mapping[str, Mapping[str, int]], total: int) -> str:
    sizes = [(p, sum(d.values())) for p, d in tree.items()]
    largest = max((s for _, s in sizes), default=0) or 1
    rows = [
        [
            _e(p),
            f'<span class="num">{_e(human(s))}</span>',
            f'<span class="num">{100 * s / total if total else 0:.1f} %</span>',
            _bar(s / largest, _colour(p, i)),
        ]
        for i, (p, s) in enumerate(sizes)
    ]
    return _table(rows, ["package", "unzipped", "share", ""], "packages")


def _slimming(report: Mapping[str, Any]) -> str:
    stripped = report.get("stripped") or {}
    note = (
        f"<p>Stripping removed {_e(human(int(stripped.get('freed_bytes', 0))))} of symbol "
        f"tables from {_e(stripped['files'])} shared objects (strip = {_e(stripped.get('mode'))})."
        "</p>"
        if stripped.get("files")
        else ""
    )
    slimmed = report.get("slimmed") or []
    if not slimmed:
        return "<p>Slimming removed nothing (or was off).</p>" + note
    total = sum(int(item.get("bytes", 0)) for item in slimmed)
    rows = [
        [
            _e(item.get("rule", "")),
            f'<span class="num">{_e(item.get("files", ""))}</span>',
            f'<span class="num">{_e(human(int(item.get("bytes", 0))))}</span>',
        ]
        for item in slimmed
    ]
    return (
        f"<p>Slimming removed {_e(human(total))} from the dependencies.</p>"
        + _table(rows, ["rule", "files", "bytes"], "slimmed")
        + note
    )


def _bytecode(picture: Picture) -> str:
    coverage = picture.coverage
    modules, compiled = coverage.get("modules", 0), coverage.get("compiled", 0)
    share = 100 * compiled / modules if modules else 0
    text = (
        f"<p>{compiled:,} of {modules:,} modules carry bytecode ({share:.1f} %)"
        f"{_bar(compiled / modules if modules else 0, '#59a14f')}</p>"
    )
    details = dict((picture.report or {}).get("bytecode") or {})
    if details:
        rows = [[_e(k), _e(v)] for k, v in details.items()]
        text += _table(rows, ["build report", ""], "bytecode")
    return text


_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:24px;color:#222;max-width:1040px}
h1{font-size:20px;margin:0 0 4px}h2{font-size:16px;margin:24px 0 8px}
.sub{color:#666;margin:0 0 16px}
#treemap{width:100%;height:auto;border:1px solid #ddd;background:#fafafa}
#treemap text{fill:#fff;font-family:system-ui,sans-serif}
.package-box{stroke:#fff;stroke-width:2}
.gauge{display:flex;height:18px;border:1px solid #999;background:#eee;border-radius:3px;overflow:hidden}
.seg{display:block;height:100%}
table{border-collapse:collapse;margin:4px 0}td,th{padding:2px 10px;text-align:left;border-bottom:1px solid #eee}
.num{font-variant-numeric:tabular-nums;display:block;text-align:right}
.bar{display:inline-block;width:160px;height:10px;background:#eee;vertical-align:middle;margin-left:8px}
.bar span{display:block;height:100%}
.warn{color:#a33}
"""


def render(picture: Picture) -> str:
    """The whole page as a string."""
    report = picture.report or {}
    facts = [
        f"{picture.files:,} files",
        f"{human(picture.zipped_bytes)} zipped",
        f"{human(picture.unzipped_bytes)} unzipped",
    ]
    if report:
        facts.insert(0, f"{report.get('runtime', '')} {report.get('arch', '')}".strip())
        if report.get("content_hash"):
            facts.append(f"content sha256:{str(report['content_hash'])[:12]}…")
    warnings = [*picture.notes, *[str(w) for w in report.get("warnings", [])]]
    sections = [
        f"<h1>Layer {_e(picture.title)}</h1>",
        f'<p class="sub">{" · ".join(_e(f) for f in facts if f)}</p>',
        "<h2>Size against Lambda's limit</h2>",
        _gauge(picture),
        "<h2>Where the bytes are</h2>",
        "<p>Each box is a package, sized by its unzipped bytes; inside, its top-level "
        "directories and modules. Hover for exact sizes.</p>",
        treemap_svg(picture.tree, picture.unzipped_bytes),
        "<h2>Packages</h2>",
        _packages_table(picture.tree, picture.unzipped_bytes),
        "<h2>Slimming</h2>",
        _slimming(report)
        if "slimmed" in report
        else "<p>No build report: what slimming removed is not known.</p>",
        "<h2>Bytecode</h2>",
        _bytecode(picture),
    ]
    if warnings:
        sections += [
            "<h2>Warnings</h2>",
            "<ul>" + "".join(f'<li class="warn">{_e(w)}</li>' for w in warnings) + "</ul>",
        ]
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
        "style-src 'unsafe-inline'\">"
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>Layer {_e(picture.title)}</title><style>{_CSS}</style></head><body>"
        + "\n".join(sections)
        + "\n</body></html>\n"
    )
