"""The reliability table: every hostile case a test tried, what happened, and whether it passed.

Load it as a plugin: `pytest -p tests.reliability.table` (also with `-n auto`). Tests call

    from tests.reliability.table import record      # or: from .table import record
    record("zip: ../ traversal", "refused: up.zip: member '../evil.py' points outside ...")
    record("10 duplicate events", "survived: one layer version", duplicates=10)

The outcome starts with what happened: `refused …`, `survived …`, `leaked nothing …`, or
`accepted …` (a valid variant that must keep working). Rows go to a JSON-lines file named by
$LAYER_BUILDER_RELIABILITY_ROWS, so pytest-xdist workers write to the controller's file; the
controller joins them with the test results and prints the table at the end of the session
(and keeps a copy in .cache/reliability/table.txt). Without the plugin, record() does nothing.
"""

from __future__ import annotations

import json
import os
from collections import Counter

import pytest

ENV = "LAYER_BUILDER_RELIABILITY_ROWS"
KINDS = ("refused", "survived", "leaked nothing", "accepted")
#: Outcomes longer than this are cut in the printed table (the messages themselves are one line).
OUTCOME_WIDTH = 240
_RANK = {"passed": 0, "skipped": 1, "failed": 2, "error": 3}


def record(case: str, outcome: str, *, duplicates: int = 0) -> None:
    """Add a row for the running test; `duplicates`: deliveries that produced one version."""
    path = os.environ.get(ENV)
    if not path:
        return
    test = os.environ.get("PYTEST_CURRENT_TEST", "").rsplit(" (", 1)[0]
    row = {"case": case, "outcome": " ".join(outcome.split()), "test": test,
           "duplicates": duplicates}
    # One write() on an O_APPEND descriptor: lines from concurrent workers never interleave.
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (json.dumps(row) + "\n").encode())
    finally:
        os.close(fd)


def kind_of(outcome: str) -> str:
    lowered = outcome.lower()
    return next((kind for kind in KINDS if lowered.startswith(kind)), "other")


class _Table:
    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.results: dict[str, str] = {}
        folder = config.rootpath / ".cache" / "reliability"
        folder.mkdir(parents=True, exist_ok=True)
        self.rows_path = folder / f"rows-{os.getpid()}.jsonl"
        self.rows_path.write_text("")
        self.text_path = folder / "table.txt"
        os.environ[ENV] = str(self.rows_path)

    @pytest.hookimpl(optionalhook=True)
    def pytest_configure_node(self, node) -> None:  # pytest-xdist: hand the file to each worker
        node.workerinput[ENV] = str(self.rows_path)

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.passed:
            status = "passed"
        elif report.skipped:
            status = "skipped"
        else:
            status = "failed" if report.when == "call" else "error"
        current = self.results.get(report.nodeid, "passed")
        self.results[report.nodeid] = max(current, status, key=_RANK.__getitem__)

    def rows(self) -> list[dict]:
        rows = [json.loads(line) for line in self.rows_path.read_text().splitlines() if line]
        recorded = {row["test"] for row in rows}
        # A reliability test that failed before recording anything still shows up.
        for nodeid, status in sorted(self.results.items()):
            failed = status in ("failed", "error")
            if failed and "reliability/" in nodeid and nodeid not in recorded:
                rows.append({"case": nodeid.split("::", 1)[-1], "outcome": "(nothing recorded)",
                             "test": nodeid, "duplicates": 0})
        for row in rows:
            row["status"] = self.results.get(row["test"], "?")
        return rows

    def render(self, rows: list[dict]) -> list[str]:
        width = min(max(len(row["case"]) for row in rows), 48)
        mark = {"passed": "pass", "failed": "FAIL", "error": "FAIL", "skipped": "skip", "?": "?"}
        lines = [f"{'result':<6} {'case':<{width}}  outcome", f"{'-' * 6} {'-' * width}  {'-' * 7}"]
        for row in sorted(rows, key=lambda r: (r["test"].split("::")[0], r["case"])):
            case = row["case"] if len(row["case"]) <= width else row["case"][: width - 1] + "…"
            outcome = row["outcome"]
            if len(outcome) > OUTCOME_WIDTH:
                outcome = outcome[: OUTCOME_WIDTH - 1] + "…"
            lines.append(f"{mark[row['status']]:<6} {case:<{width}}  {outcome}")
        kinds = Counter(kind_of(row["outcome"]) for row in rows if row["status"] == "passed")
        failed = sum(1 for row in rows if row["status"] in ("failed", "error", "?"))
        duplicates = sum(row["duplicates"] for row in rows if row["status"] == "passed")
        lines += ["", f"{len(rows)} cases tried: {kinds['refused']} refused, {kinds['survived']} "
                      f"survived, {kinds['leaked nothing']} leaked nothing, {kinds['accepted']} "
                      f"accepted, {kinds['other']} other; {failed} failed",
                  f"{duplicates} duplicate deliveries -> exactly one version each"]
        return lines

    @pytest.hookimpl(trylast=True)
    def pytest_terminal_summary(self, terminalreporter) -> None:
        rows = self.rows()
        if not rows:
            return
        lines = self.render(rows)
        terminalreporter.write_sep("=", "reliability: hostile input, duplicates and faults")
        for line in lines:
            terminalreporter.write_line(line)
        self.text_path.write_text("\n".join(lines) + "\n", encoding="utf-8")

    def pytest_unconfigure(self) -> None:
        self.rows_path.unlink(missing_ok=True)
        if os.environ.get(ENV) == str(self.rows_path):
            del os.environ[ENV]


def pytest_configure(config: pytest.Config) -> None:
    workerinput = getattr(config, "workerinput", None)
    if workerinput is not None:  # an xdist worker: write rows to the controller's file
        if ENV in workerinput:
            os.environ[ENV] = workerinput[ENV]
        return
    config.pluginmanager.register(_Table(config), "reliability-table")

