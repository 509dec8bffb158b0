"""CLI habits shared by every command: exit 64 for usage errors, -q/-v, environment equivalents,
the per-platform cache directory, progress rendering and the bar chart."""

from __future__ import annotations

import argparse
import io
import zipfile
from pathlib import Path

import pytest
from layer_builder import cli
from layer_builder.cli import common, output


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        code = cli.main(argv)
    except SystemExit as exc:  # argparse exits for usage errors, --help and --version
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def _layer(path: Path) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("python/big/__init__.py", b"x" * 5000)
        zf.writestr("python/small.py", b"y" * 100)
    return path


@pytest.mark.parametrize("argv", [["build"], ["nosuchcommand"], ["build", ".", "--arch", "sparc"],
                                  ["inspect", "x.zip", "--no-such-flag"], []])
def test_usage_errors_exit_64(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _run(argv, capsys)
    assert code == common.EXIT_USAGE == 64
    assert out == "" and "error:" in err and err.lstrip().startswith("usage:")


def test_a_bad_environment_value_is_a_usage_error(monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("LAYER_BUILDER_ARCH", "sparc")
    code, _, err = _run(["inspect", "x.zip"], capsys)
    assert code == 64
    assert "LAYER_BUILDER_ARCH='sparc' is not one of: arm64, x86_64" in err


def test_refusals_keep_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    not_a_zip = tmp_path / "x.zip"
    not_a_zip.write_text("hello")
    code, out, err = _run(["inspect", str(not_a_zip)], capsys)
    assert code == 2 and out == ""
    assert err.startswith("layer-builder: refused: ") and "is not a readable zip" in err


def test_every_option_names_its_environment_variable_in_help(
        capsys: pytest.CaptureFixture[str]) -> None:
    parser = common.build_parser("layer-builder", "", cli.COMMANDS, "0")
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    assert {"build", "inspect"} <= set(commands)
    for command in commands:
        code, out, _ = _run([command, "--help"], capsys)
        assert code == 0
        parser = _subparser(command)
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            assert action.help, f"{command} {action.option_strings or action.dest} has no help"
            name = common.env_name(action)
            if action.option_strings and name:
                assert f"[env: {name}]" in " ".join(out.split()), name
    assert "[env: LAYER_BUILDER_CACHE_DIR]" in " ".join(_run(["build", "--help"], capsys)[1].split())


def _subparser(name: str) -> argparse.ArgumentParser:
    parser = common.build_parser("layer-builder", "", cli.COMMANDS, "0")
    common.apply_environment(parser, {})
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[name]


def test_environment_sets_defaults_and_the_command_line_wins() -> None:
    parser = common.build_parser("layer-builder", "", cli.COMMANDS, "0")
    common.apply_environment(parser, {"LAYER_BUILDER_CACHE_DIR": "/env/cache",
                                      "LAYER_BUILDER_NO_CACHE": "yes",
                                      "LAYER_BUILDER_ALLOW_SDIST": "pyyaml numpy",
                                      "LAYER_BUILDER_VERBOSE": "2", "LAYER_BUILDER_ARCH": "arm64"})
    args = parser.parse_args(["build", "."])
    assert args.cache_dir == Path("/env/cache") and args.no_cache is True
    assert args.allow_sdist == ["pyyaml", "numpy"] and args.arch == "arm64"
    assert common.verbosity(args) == 2
    args = parser.parse_args(["build", ".", "--cache-dir", "/cli", "--arch", "x86_64"])
    assert args.cache_dir == Path("/cli") and args.arch == "x86_64"


def test_booleans_from_the_environment_must_be_booleans() -> None:
    parser = common.build_parser("layer-builder", "", cli.COMMANDS, "0")
    with pytest.raises(common.UsageError, match="LAYER_BUILDER_NO_CACHE='maybe' is not a boolean"):
        common.apply_environment(parser, {"LAYER_BUILDER_NO_CACHE": "maybe"})


def test_verbosity_counts_before_and_after_the_command() -> None:
    parser = common.build_parser("layer-builder", "", cli.COMMANDS, "0")
    assert common.verbosity(parser.parse_args(["-v", "build", ".", "-v"])) == 2
    assert common.verbosity(parser.parse_args(["build", ".", "-qq"])) == -2
    assert common.verbosity(parser.parse_args(["-q", "build", ".", "-v"])) == 0


def test_cache_dir_is_the_platform_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert common.default_cache_dir() == tmp_path / "layer-builder"


def test_quiet_inspect_prints_one_line_and_qq_nothing(tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    layer = _layer(tmp_path / "l.zip")
    code, out, _ = _run(["-q", "inspect", str(layer)], capsys)
    assert code == 0 and out.strip() == f"{layer}: 5.1 KB unzipped, fits"
    code, out, _ = _run(["inspect", str(layer), "-qq"], capsys)
    assert code == 0 and out == ""


def test_inspect_html_writes_the_picture(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    page = tmp_path / "pictures" / "l.html"
    code, out, _ = _run(["inspect", str(_layer(tmp_path / "l.zip")), "--html", str(page)], capsys)
    assert code == 0 and "Largest packages:" in out
    text = page.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>") and 'data-package="(other)"' in text


# --- progress -----------------------------------------------------------------------------------

class _Stream(io.StringIO):
    def __init__(self, tty: bool) -> None:
        super().__init__()
        self._tty = tty

    def isatty(self) -> bool:
        return self._tty


def test_piped_progress_is_plain_lines_with_counts_and_bytes() -> None:
    stream = _Stream(tty=False)
    progress = output.Progress(stream)
    progress("Downloading wheels", done=0, total=3_000_000, unit="B")
    for done in range(1, 100):  # a burst of updates within the interval is not repeated
        progress("Downloading wheels", done=done * 30_000, total=3_000_000, unit="B")
    progress("Writing the layer zip", done=2, total=16)
    progress("Checking")
    progress.done()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 3, lines
    assert lines[0].endswith("] Downloading wheels (0 B of 3.0 MB)")
    assert lines[1].endswith("] Writing the layer zip (2/16)")
    assert lines[2].endswith("] Checking")
    assert "\r" not in stream.getvalue() and "\x1b" not in stream.getvalue()


def test_terminal_progress_redraws_one_line_with_a_bar() -> None:
    stream = _Stream(tty=True)
    progress = output.Progress(stream)
    progress("Downloading wheels", done=1_500_000, total=3_000_000, unit="B")
    progress.done()
    text = stream.getvalue()
    assert text.startswith("\r\033[K[") and "Downloading wheels " in text
    assert "1.5 MB of 3.0 MB" in text and text.endswith("\r\033[K") and "\n" not in text


def test_terminal_progress_fits_one_screen_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "40")
    stream = _Stream(tty=True)
    output.Progress(stream)("Downloading a great many wheels of a great many packages",
                            done=1, total=2, unit="B")
    drawn = stream.getvalue().removeprefix("\r\033[K")
    assert len(drawn) == 39 and drawn.endswith("…")


def test_quiet_progress_prints_nothing() -> None:
    stream = _Stream(tty=False)
    output.Progress(stream, level=-1)("Installing")
    assert stream.getvalue() == ""


def test_bar_chart_scales_to_the_largest_package() -> None:
    lines = output.sizes_table({"a": 800, "b": 400, "c": 0}, 1200, unicode=False)
    assert lines[0].endswith("#" * output.BAR_WIDTH)
    assert lines[1].endswith("#" * (output.BAR_WIDTH // 2))
    assert output.bar_text(0.5, 8, unicode=True) == "████    "
    assert output.bar_text(0.5, 1, unicode=True) == "▌"
    more = output.sizes_table({str(i): 10 for i in range(10)}, 100, count=8, unicode=False)
    assert more[-1].split()[:2] == ["(2", "more)"]


def test_report_html_goes_beside_the_json() -> None:
    assert output.html_path(Path("out/r.json")) == Path("out/r.html")
    assert output.html_path(Path("r")) == Path("r.html")
    assert output.html_path(Path("r.html")) == Path("r.html.html")


def test_the_command_runs_main_with_the_cycle_collector_tuned_for_one_short_run(monkeypatch):
    calls: list[object] = []
    monkeypatch.setattr(cli.gc, "freeze", lambda: calls.append("freeze"))
    monkeypatch.setattr(cli.gc, "set_threshold", lambda *t: calls.append(t))
    monkeypatch.setattr(cli, "main", lambda: calls.append("main") or 0)
    assert cli.entry() == 0
    assert calls == ["freeze", (50_000, 20, 20), "main"]  # still collecting, less often


def test_the_summary_says_what_stripping_took_out(tmp_path: Path) -> None:
    from layer_builder.report import BuildReport

    report = BuildReport(layer_name="x", layer_version="1", description="", runtime="python3.13",
                         arch="x86_64", platform="", builder_version="0")
    assert "Stripped" not in output.summary(report, tmp_path / "x.zip")
    report.stripped = {"mode": "auto", "files": 2, "freed_bytes": 3_000_000, "reused": 1}
    text = output.summary(report, tmp_path / "x.zip")
    assert "Stripped 3.0 MB of symbol tables from 2 shared objects (strip = auto)" in text
