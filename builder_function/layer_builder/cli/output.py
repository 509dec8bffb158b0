"""What the CLI prints: live progress, the build summary, size tables and bar charts.

Progress goes to stderr and results to stdout, so `layer-builder build . --json | jq` works. The
engine reports progress as `progress(message, *, done=None, total=None, unit="")` ("B" for bytes,
"" for counts); on a terminal one line is redrawn in place, piped it becomes plain timestamped
lines (a new line when the step changes, and for long steps at most every few seconds).
"""

from __future__ import annotations

import json
import logging
import shutil
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TextIO

from ..limits import MAX_UNZIPPED_BYTES
from ..redact import RedactingFilter, redact
from ..report import BuildReport, human

#: Piped output repeats a running step's counters at most this often (seconds); -v: every second.
PIPED_INTERVAL = 5.0
#: A terminal is redrawn at most this often (seconds).
TTY_INTERVAL = 0.1
BAR_WIDTH = 24
_EIGHTHS = " ▏▎▍▌▋▊▉"


def _counter(done: int | None, total: int | None, unit: str) -> str:
    if done is None:
        return ""
    if unit == "B":
        return f"{human(done)} of {human(total)}" if total else human(done)
    return f"{done}/{total}" if total else str(done)


class Progress:
    """The engine's progress callback, rendered for a terminal or a pipe (thread-safe)."""

    def __init__(self, stream: TextIO, level: int = 0) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self.level = level
        self.start = time.perf_counter()
        self._lock = threading.Lock()
        self._message = ""
        self._shown = 0.0  # perf_counter of the last line or redraw
        self._drawn = False

    def __call__(
        self, message: str, *, done: int | None = None, total: int | None = None, unit: str = ""
    ) -> None:
        if self.level < 0:
            return
        message = redact(message)  # e.g. "Installing from <index URL>"
        now = time.perf_counter()
        counter = _counter(done, total, unit)
        finished = done is not None and total is not None and done >= total
        with self._lock:
            changed = message != self._message
            if self.tty:
                if not (changed or finished or now - self._shown >= TTY_INTERVAL):
                    return
                bar = f" {bar_text(done / total, 12)}" if done is not None and total else ""
                suffix = f"{bar} {counter}" if counter else "…"
                line = f"[{now - self.start:5.1f}s] {message}{suffix}"
                # One screen line: a wrapped line could not be redrawn in place by \r.
                width = shutil.get_terminal_size((80, 24)).columns - 1
                if len(line) > width:
                    line = line[: max(width - 1, 1)] + "…"
                self.stream.write(f"\r\033[K{line}")
                self._drawn = True
            else:
                interval = 1.0 if self.level > 0 else PIPED_INTERVAL
                if not (changed or (finished and self.level > 0) or now - self._shown >= interval):
                    return
                self.stream.write(
                    f"[{now - self.start:.1f}s] {message}{f' ({counter})' if counter else ''}\n"
                )
            self._message, self._shown = message, now
            self.stream.flush()

    def done(self) -> None:
        with self._lock:
            if self.tty and self._drawn:
                self.stream.write("\r\033[K")
                self.stream.flush()
                self._drawn = False


def configure_logging(level: int) -> None:
    """-v shows the engine's INFO logs, -vv its DEBUG logs, on stderr."""
    if level > 0:
        logging.basicConfig(
            stream=sys.stderr,
            format="%(levelname)s %(name)s: %(message)s",
            level=logging.INFO if level == 1 else logging.DEBUG,
        )
        for handler in logging.getLogger().handlers:  # index secrets never reach the terminal
            handler.addFilter(RedactingFilter())


# -------------------------------------------------------------------------------- charts
def _unicode(stream: TextIO | None) -> bool:
    encoding = (getattr(stream or sys.stdout, "encoding", None) or "").lower()
    return encoding.replace("-", "") in ("utf8", "utf16", "utf32")


def bar_text(fraction: float, width: int = BAR_WIDTH, unicode: bool | None = None) -> str:
    """A horizontal bar `width` characters wide, filled to `fraction` (eighths on UTF-8)."""
    fraction = max(0.0, min(1.0, fraction))
    if unicode is None:
        unicode = _unicode(None)
    if not unicode:
        filled = round(fraction * width)
        return "#" * filled + " " * (width - filled)
    eighths = round(fraction * width * 8)
    full, part = divmod(eighths, 8)
    text = "█" * full + (_EIGHTHS[part] if part else "")
    return text + " " * (width - len(text))


def sizes_table(
    sizes: dict[str, int], total: int, count: int = 8, unicode: bool | None = None
) -> list[str]:
    """The largest packages, each with its size, share of the layer and a bar of that share."""
    lines = []
    items = list(sizes.items())[:count]
    largest = items[0][1] if items else 0
    for name, size in items:
        share = 100 * size / total if total else 0
        # Bars are scaled to the largest package so small layers still show their shape.
        bar = bar_text(size / largest if largest else 0, unicode=unicode).rstrip()
        lines.append(f"  {name:<32} {human(size):>10}  {share:5.1f} %  {bar}".rstrip())
    rest = list(sizes.values())[count:]
    if rest:
        lines.append(
            f"  {f'({len(rest)} more)':<32} {human(sum(rest)):>10}  "
            f"{100 * sum(rest) / total if total else 0:5.1f} %"
        )
    return lines


def limit_gauge(
    unzipped: int, limit: int = MAX_UNZIPPED_BYTES, headroom: int = 0, unicode: bool | None = None
) -> str:
    """`[████░░░░] 47.0 % of Lambda's 262.1 MB; 138.9 MB left` (with the headroom kept)."""
    left = limit - unzipped
    text = (
        f"  limit      [{bar_text(unzipped / limit, unicode=unicode)}] "
        f"{100 * unzipped / limit:.1f} % of Lambda's {human(limit)}; "
        f"{human(max(left, 0))} left for the function and other layers"
    )
    if headroom:
        text += f" (headroom kept: {human(headroom)})"
    return text


def summary(report: BuildReport, output: Path, level: int = 0) -> str:
    """What a build prints on stdout: one line with -q, the whole picture by default."""
    if level < 0:
        return (
            f"Built layer {report.layer_name} {report.layer_version}".rstrip()
            + f": {output} ({human(report.zipped_bytes)} zipped, "
            f"{human(report.unzipped_bytes)} unzipped)"
        )
    lines = [
        f"Built layer {report.layer_name} {report.layer_version}".rstrip(),
        f"  target     {report.runtime} {report.arch} ({report.platform})",
        f"  zip        {output} ({human(report.zipped_bytes)}"
        f"{', publish via S3' if report.publish_via_s3 else ''})",
        f"  unzipped   {human(report.unzipped_bytes)} of {human(report.limit_bytes)} allowed, "
        f"{report.files} files",
        limit_gauge(
            report.unzipped_bytes, report.limit_bytes, int(getattr(report, "headroom", 0) or 0)
        ),
        f"  content    sha256:{report.content_hash}",
        f"  cache      {report.dependency_cache}; build {sum(report.timings.values()):.1f}s"
        + ("; reused an identical earlier build" if getattr(report, "reused", "") else ""),
        "Largest packages:",
        *sizes_table(report.sizes, report.unzipped_bytes, count=8 if level == 0 else 20),
    ]
    saved = sum(item["bytes"] for item in report.slimmed)
    if saved:
        lines.append(
            f"Slimmed {human(saved)}: "
            + ", ".join(f"{item['rule']} {human(item['bytes'])}" for item in report.slimmed)
        )
    stripped = getattr(report, "stripped", None) or {}
    if stripped.get("files"):
        lines.append(
            f"Stripped {human(stripped['freed_bytes'])} of symbol tables from "
            f"{stripped['files']} shared objects (strip = {stripped['mode']})"
        )
    lines += [f"warning: {w}" for w in report.warnings]
    return "\n".join(lines)


# ------------------------------------------------------------------------------- reports
def html_path(json_path: Path) -> Path:
    """Where the HTML picture of a JSON report goes: the same name with .html."""
    return (
        json_path.with_name(json_path.name + ".html")
        if json_path.suffix == ".html"
        else json_path.with_suffix(".html")
    )


def write_reports(json_path: Path, report: Mapping[str, Any], layer_zip: Path) -> Path:
    """The JSON report and, beside it, its HTML picture of `layer_zip`; returns the HTML path."""
    from ..htmlreport import html_for_zip  # squarify and the page template only when asked

    json_path.parent.mkdir(parents=True, exist_ok=True)  # e.g. --report out/report.json
    json_path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    page = html_path(json_path)
    page.write_text(html_for_zip(layer_zip, report), encoding="utf-8")
    return page
