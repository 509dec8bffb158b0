"""What the CLI prints: live progress, the build summary and size tables."""

from __future__ import annotations

import time
from pathlib import Path

from ..report import BuildReport, human


class Progress:
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


def sizes_table(sizes: dict[str, int], total: int, count: int = 8) -> list[str]:
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
        *sizes_table(report.sizes, report.unzipped_bytes),
    ]
    saved = sum(item["bytes"] for item in report.slimmed)
    if saved:
        lines.append(f"Slimmed {human(saved)}: " + ", ".join(
            f"{item['rule']} {human(item['bytes'])}" for item in report.slimmed))
    lines += [f"warning: {w}" for w in report.warnings]
    return "\n".join(lines)
