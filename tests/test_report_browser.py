"""The report in a real headless Chromium: no errors, images decode, the explorer reacts, and
generated text containing <script> is shown as text and never runs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from gptwaves.stages.report import build_report

pytestmark = pytest.mark.browser

CHROMIUM = os.environ.get("GPTWAVES_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def page_and_errors(tmp_path_factory):
    if not Path(CHROMIUM).exists():
        pytest.skip(f"headless Chromium not found at {CHROMIUM} (apt-get install chromium, or set GPTWAVES_CHROMIUM)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
    from test_report import shared_run

    run = shared_run(tmp_path_factory)
    out = build_report(run)
    shot = os.environ.get("GPTWAVES_REPORT_SCREENSHOT")
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            errors: list[str] = []
            requests: list[str] = []
            page.on("console", lambda m: errors.append(f"console: {m.text}") if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(f"pageerror: {e}"))
            page.on("request", lambda r: requests.append(r.url))
            page.goto(out.resolve().as_uri(), wait_until="load")
            page.wait_for_function("Array.from(document.images).every(i => i.complete)")
            if shot:
                page.screenshot(path=shot, full_page=True)
            yield page, errors, requests
        finally:
            browser.close()


def test_no_errors_and_no_network(page_and_errors):
    page, errors, requests = page_and_errors
    assert errors == []
    assert all(u.startswith(("file:", "data:")) for u in requests), requests


def test_every_image_decodes(page_and_errors):
    page, _, _ = page_and_errors
    widths = page.eval_on_selector_all("img", "imgs => imgs.map(i => i.naturalWidth)")
    assert len(widths) == 6  # 5 figures + the training curves
    assert all(w > 0 for w in widths)


def test_changing_channel_redraws_plot(page_and_errors):
    page, errors, _ = page_and_errors
    d0 = page.get_attribute("#wx-path", "d")
    text0 = page.inner_text("#wx-text")
    colours0 = page.eval_on_selector_all("#wx-text .ch", "s => s.map(x => x.style.backgroundColor).join()")
    ch = int(page.input_value("#wx-ch"))
    page.fill("#wx-ch", str((ch + 1) % 8))
    page.dispatch_event("#wx-ch", "change")
    d1 = page.get_attribute("#wx-path", "d")
    assert d1 and d0 and d1 != d0
    assert page.inner_text("#wx-text") == text0  # same sample, recoloured
    assert page.eval_on_selector_all("#wx-text .ch", "s => s.map(x => x.style.backgroundColor).join()") != colours0
    # the tap and checkpoint selectors redraw too
    page.select_option("#wx-tap", "hook_embed")
    d2 = page.get_attribute("#wx-path", "d")
    assert d2 != d1
    page.select_option("#wx-ckpt", "0")
    assert page.get_attribute("#wx-path", "d") != d2
    page.click("#wx-space")
    assert page.input_value("#wx-ch").isdigit()
    assert errors == []


def test_script_in_generated_text_is_text_and_never_runs(page_and_errors):
    page, errors, _ = page_and_errors
    explorer = page.inner_text("#wx-text")
    assert "<script>window.__pwned=1</script>" in explorer
    assert "<script>alert(1)</script>" in explorer
    page.select_option("#text-select", "0")
    assert "<script>alert(1)</script>" in page.inner_text("#text")
    page.select_option("#text-select", "1")
    text = page.inner_text("#text")
    assert "<script>window.__pwned=1</script>" in text and "onerror" in text  # tampered file shown as text
    assert page.evaluate("typeof window.__pwned") == "undefined"
    assert page.evaluate("document.querySelectorAll('#text script, #text img, #text a, #text style').length") == 0
    assert page.evaluate("document.scripts.length") == 2  # the page's data block and its own script
    assert errors == []
