"""The HTML picture of a layer, opened in a real browser (Debian's chromium, driven by Playwright).

The layer is made here with three packages of known sizes; the page comes from the installed CLI
(`layer-builder inspect --html`), as a user gets it. Playwright drives the system's chromium
through `executable_path`, so no browser is downloaded. Without a chromium the tests skip and say
so (CI installs one: .ci/run).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

CLI = Path(sys.executable).parent / "layer-builder"
#: The browser: LAYER_BUILDER_CHROMIUM, else chromium on PATH (Debian's package: /usr/bin/chromium).
CHROMIUM = os.environ.get("LAYER_BUILDER_CHROMIUM") or shutil.which("chromium") or shutil.which(
    "chromium-browser")
#: As the machine's own probe starts it: no sandbox as root, and no background traffic.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
PACKAGES = {"bigpkg": 900_000, "midpkg": 400_000, "smallpkg": 60_000}
#: A package name from a hostile zip: it must show as text, never run as markup.
HOSTILE = "<img src=x onerror=alert(1)>"

pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="no chromium on PATH: install Debian's `chromium` package "
                             "(apt-get install -y chromium) or set LAYER_BUILDER_CHROMIUM")


def _layer(path: Path) -> Path:
    """A layer whose packages have dist-info records, so bytes are owned by package name."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, size in PACKAGES.items():
            files = {f"{name}/__init__.py": b"X = 1\n", f"{name}/data/blob.bin": os.urandom(size),
                     f"{name}/core/mod.py": b"# " + b"y" * (size // 10) + b"\n"}
            dist = f"{name}-1.0.dist-info"
            record = "".join(f"{f},,\n" for f in files) + f"{dist}/METADATA,,\n{dist}/RECORD,,\n"
            shown = HOSTILE if name == "smallpkg" else name
            files |= {f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {shown}\nVersion: 1.0\n".encode(),
                      f"{dist}/RECORD": record.encode()}
            for member, data in files.items():
                zf.writestr(f"python/{member}", data)
    return path


@pytest.fixture(scope="module")
def page_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("html")
    out = work / "layer.html"
    done = subprocess.run([str(CLI), "inspect", str(_layer(work / "layer.zip")), "--html", str(out)],
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    return out


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def loaded(browser, page_file: Path):
    page = browser.new_page(viewport={"width": 1100, "height": 900})
    messages, errors, requests = [], [], []
    page.on("console", lambda m: messages.append((m.type, m.text)))
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("request", lambda r: requests.append(r.url))
    page.on("dialog", lambda d: (errors.append(f"dialog: {d.message}"), d.dismiss()))
    page.goto(page_file.as_uri(), wait_until="load")
    page.screenshot(path=str(page_file.with_suffix(".png")), full_page=True)
    yield page, messages, errors, requests
    page.close()


def test_the_page_renders_every_package_as_a_box(loaded) -> None:
    page, _, _, _ = loaded
    assert page.title() == "Layer layer.zip"
    boxes = page.eval_on_selector_all(
        ".package", "gs => gs.map(g => [g.dataset.package, g.querySelector('rect')"
                    ".getBoundingClientRect().width * g.querySelector('rect')"
                    ".getBoundingClientRect().height])")
    assert {name for name, _ in boxes} == {"bigpkg", "midpkg", HOSTILE}
    assert all(area > 0 for _, area in boxes)


def test_the_largest_package_is_the_largest_box(loaded) -> None:
    page, _, _, _ = loaded
    areas = dict(page.eval_on_selector_all(
        ".package", "gs => gs.map(g => { const r = g.querySelector('rect')"
                    ".getBoundingClientRect(); return [g.dataset.package, r.width * r.height]; })"))
    ranked = sorted(areas, key=areas.__getitem__, reverse=True)
    assert ranked == ["bigpkg", "midpkg", HOSTILE], areas
    # Areas follow bytes: bigpkg holds ~2.2x midpkg's bytes.
    assert 1.8 < areas["bigpkg"] / areas["midpkg"] < 2.7, areas


def test_the_limit_gauge_and_tables_show(loaded) -> None:
    page, _, _, _ = loaded
    text = page.inner_text("body")
    assert "262,144,000 bytes" in text and "fits" in text
    assert page.locator("#gauge .seg").count() >= 1
    rows = page.locator("table.packages tbody tr").all_inner_texts()
    assert rows[0].split()[0] == "bigpkg"


def test_no_console_errors_no_script_and_no_network(loaded, page_file: Path) -> None:
    page, messages, errors, requests = loaded
    assert errors == []
    assert [m for m in messages if m[0] in ("error", "warning")] == []
    assert requests == [page_file.as_uri()]  # the file itself, nothing fetched
    # The hostile package name is on the page as text, and made no element.
    assert HOSTILE in page.inner_text("table.packages")
    assert page.locator("img").count() == 0
