"""`vividhead inspect --html`: the report renders in headless Chromium with its plots and thumbnails.

The test opens the file with playwright driving Debian's /usr/bin/chromium (no browser download),
checks in the DOM that every image decoded (naturalWidth > 0) and the SVG charts are there, and
saves a full-page screenshot under the test's tmp dir for a person to look at.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from test_inspect_fixture import Expected, synthetic_build  # noqa: F401
from test_inspect_summary import real_build

from vividhead.cli import main

CHROMIUM = Path("/usr/bin/chromium")


def render(report: Path, screenshot: Path) -> dict:
    """Open the report in headless Chromium; return what the DOM holds; save a screenshot."""
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is not installed at /usr/bin/chromium (make system-packages installs it)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            args=["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"])
        try:
            page = browser.new_page(viewport={"width": 1300, "height": 900})
            page.goto(report.as_uri())
            page.wait_for_load_state("load")
            found = page.evaluate("""() => ({
                images: [...document.images].map(img => ({ok: img.complete && img.naturalWidth > 0,
                                                          width: img.naturalWidth, alt: img.alt})),
                svgs: document.querySelectorAll('svg.chart').length,
                histograms: document.querySelectorAll('svg.hist').length,
                svgRects: document.querySelectorAll('svg.chart rect').length,
                sections: [...document.querySelectorAll('section h2')].map(h => h.textContent),
            })""")
            page.screenshot(path=str(screenshot), full_page=True)
        finally:
            browser.close()
    print(f"report screenshot: {screenshot}")
    return found


def test_report_renders_with_plots_and_thumbnails(synthetic_build: Expected, tmp_path: Path) -> None:
    report = tmp_path / "report.html"
    assert main(["inspect", str(synthetic_build.root), "--html", str(report), "--verify",
                 "--what-if", "sync.min_confidence=5"]) == 0
    html = report.read_text(encoding="utf-8")
    assert not re.search(r'(src|href)="(https?:|//|file:)', html), "the report must be self-contained"
    found = render(report, tmp_path / "report.png")
    kept_tiles = [img for img in found["images"] if img["alt"].startswith("frame of")]
    source_tiles = [img for img in found["images"] if img["alt"] == "source frame"]
    assert len(kept_tiles) == 3 * 4                      # 3 kept clips x (3 frames + the mask outline)
    assert len(source_tiles) == 2 * 3                    # sync and speech examples; the probe one does not decode
    assert all(img["ok"] for img in found["images"]), found["images"]
    assert found["histograms"] >= 7 and found["svgs"] >= found["histograms"] + 2 and found["svgRects"] > 20
    assert {"Funnel", "Distributions", "Attribute balance", "What-if", "Verification"} <= set(found["sections"])
    assert "the source does not decode" in html          # the unreadable source says why it has no frames
    assert (tmp_path / "report.png").stat().st_size > 10_000


def test_report_size_is_bounded_by_its_sample(synthetic_build: Expected, tmp_path: Path) -> None:
    report = tmp_path / "small.html"
    assert main(["inspect", str(synthetic_build.root), "--html", str(report), "--thumbnails", "1",
                 "--examples", "1"]) == 0
    html = report.read_text(encoding="utf-8")
    assert html.count('alt="frame of') == 4 and html.count('alt="source frame"') == 2 * 3
    assert "a sample of 1 of 3" in html


def test_report_on_the_media_build(request: pytest.FixtureRequest, tmp_path: Path) -> None:
    out = real_build(request, "media_build")
    report = tmp_path / "media.html"
    assert main(["inspect", str(out), "--html", str(report)]) == 0
    found = render(report, tmp_path / "media.png")
    assert found["images"] and all(img["ok"] for img in found["images"])
    assert found["svgs"] >= 3
