"""leaderboard.html in a real browser: Debian's headless Chromium driven by Playwright.

.ci/run installs the chromium package where it is missing; Playwright's own browser download is
never used (executable_path points at the system browser). The screenshot is kept as a CI
artifact in $CI_ARTIFACTS (.ci/run: results/ci-artifacts/).
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from bench.reporting.html_page import MAIN_TABLE_ID
from bench.reporting.results import load_run
from bench.reporting.write import HTML_PAGE, load_predictions, run_leaderboard_spec, write_run_reports
from report_runs import N_LABELS, noisy_predictions, suite_copy, trial, write_run

WINDOW = 1400
# the headline suite's groups, with its reference block: the widest leaderboard the project ships
FUSIONS = {"cross_modal_gated_attention": 0.9, "shallow": 0.85, "late": 0.8, "tfidf_logreg": 0.7, "text_only": 0.65,
           "image_only": 0.55}
REFERENCE = {name: {"macro_f1_B": 0.729, "macro_f1_A": 0.74, "macro_f1_M": 0.815} for name in FUSIONS}


@pytest.fixture(scope="module")
def browser():
    """The system Chromium and Playwright's sync API, checked before any page is built."""
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.skip("Debian's chromium package is not installed (.ci/run installs it with apt-get where apt "
                    "can reach Debian's packages)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright is in the test extra: "
                                                                 "pip install -e '.[test]'")
    return path, sync_api


@pytest.fixture(scope="module")
def headline_page(tmp_path_factory) -> Path:
    true = np.random.default_rng(0).integers(0, N_LABELS, 134)
    trials = [trial(f"{name}-{s}", {"fusion": name}, s, true, noisy_predictions(true, acc, 10 * i + s))
              for i, (name, acc) in enumerate(FUSIONS.items()) for s in (0, 1)]
    suite = {**suite_copy("mic_fusion", {"fusion": list(FUSIONS), "seed": [0, 1]}, sort="macro_f1"),
             "reference": REFERENCE, "reference_source": "the paper's Table 3, on other data"}
    run = write_run(tmp_path_factory.mktemp("headline") / "run", trials, suite)
    _, rows = load_run(run)
    write_run_reports(run, rows, run_leaderboard_spec(run, rows), load_predictions(run))
    return run / HTML_PAGE


def _artifacts(tmp_path: Path) -> Path:
    """$CI_ARTIFACTS (.ci/run sets it to results/ci-artifacts/), else the test's own folder."""
    folder = Path(os.environ["CI_ARTIFACTS"]) if os.environ.get("CI_ARTIFACTS") else tmp_path
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def test_leaderboard_page_loads_cleanly_and_its_main_table_fits_1400_px(browser, headline_page, tmp_path):
    browser_path, sync_api = browser
    failed_requests, errors = [], []
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=browser_path, headless=True,
                                              args=["--no-sandbox", "--disable-gpu"])
        try:
            page = chromium.new_page(viewport={"width": WINDOW, "height": 900})
            page.on("requestfailed", lambda request: failed_requests.append(f"{request.url[:80]} {request.failure}"))
            page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.goto(headline_page.as_uri(), wait_until="load")
            main_width = page.eval_on_selector(f"#{MAIN_TABLE_ID}", "t => t.getBoundingClientRect().width")
            page_width = page.evaluate("document.documentElement.scrollWidth")
            headers = page.eval_on_selector_all(f"#{MAIN_TABLE_ID} th", "cells => cells.map(c => c.innerText)")
            images = page.eval_on_selector_all("img", "imgs => imgs.map(i => i.complete && i.naturalWidth > 0)")
            page.screenshot(path=str(_artifacts(tmp_path) / "leaderboard.png"), full_page=True)
        finally:
            chromium.close()
    assert failed_requests == [] and errors == []
    assert main_width <= WINDOW and page_width <= WINDOW, (main_width, page_width)
    assert "macro_f1" in headers and "≈best" in headers and "fusion" in headers
    assert images and all(images)  # every plot decoded
