"""The gallery as a person sees it: opened from disk in headless Chromium.

Needs a Chromium binary (Debian: ``apt-get install -y chromium``). Without one the test is
skipped, unless ``CI`` is set: there a missing browser is a failure, so the check cannot
silently vanish. The screenshot is left in ``tests/export/artifacts/`` for a human to look at.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from runner.export import export_batch

from .builders import EVIL_PROMPT, Sample
from .cdp import Browser, find_chromium

pytestmark = [pytest.mark.anyio, pytest.mark.browser]

ARTIFACTS = Path(__file__).parent / "artifacts"

LOAD_EVERY_IMAGE = """
(async () => {
  const images = Array.from(document.images);
  for (const img of images) {
    img.scrollIntoView();  // lazy images load only near the viewport
    if (!img.complete) {
      await new Promise((done) => {
        img.addEventListener("load", done, { once: true });
        img.addEventListener("error", done, { once: true });
      });
    }
  }
  window.scrollTo(0, 0);
  return images.map((img) => ({
    src: img.getAttribute("src"), width: img.naturalWidth, lazy: img.loading === "lazy",
  }));
})()
"""

PAGE_FACTS = """
({
  prompts: Array.from(document.querySelectorAll(".prompt"), (p) => p.textContent),
  errors: Array.from(document.querySelectorAll(".error"), (p) => p.textContent),
  scripts: document.scripts.length,
  injected: document.querySelectorAll("img[src='x'], .prompt *").length,
  options: Array.from(document.querySelectorAll("#status option"), (o) => o.textContent),
  external: Array.from(document.querySelectorAll("[src], link[href]"))
    .map((e) => e.getAttribute("src") || e.getAttribute("href"))
    .filter((u) => /^[a-z]+:|^\\/\\//i.test(u)),
})
"""


def visible_after(status: str, query: str = "") -> str:
    return f"""
    (() => {{
      const select = document.getElementById("status");
      const search = document.getElementById("search");
      select.value = {json.dumps(status)};
      search.value = {json.dumps(query)};
      select.dispatchEvent(new Event("change"));
      search.dispatchEvent(new Event("input"));
      return Array.from(document.querySelectorAll("article.card"))
        .filter((c) => !c.hidden && c.offsetParent !== null)
        .map((c) => c.querySelector("dd").textContent);
    }})()
    """


def problems(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Console errors, uncaught exceptions, failed loads (Log) and dialogs (an XSS alert)."""
    bad = []
    for event in events:
        method, params = event.get("method"), event.get("params", {})
        if (
            (method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"))
            or method == "Runtime.exceptionThrown"
            or (method == "Log.entryAdded" and params["entry"]["level"] == "error")
            or method == "Page.javascriptDialogOpening"
        ):
            bad.append(event)
    return bad


@pytest.fixture
def chromium() -> str:
    binary = find_chromium()
    if binary is None:
        if os.environ.get("CI"):
            pytest.fail("no Chromium binary and CI is set: install chromium", pytrace=False)
        pytest.skip("no Chromium binary (apt-get install -y chromium, or set IMAGERUN_CHROMIUM)")
    return binary


async def test_gallery_shows_every_thumbnail_escapes_prompts_and_filters(
    sample: Sample, tmp_path: Path, chromium: str
) -> None:
    out = tmp_path / "out"
    await export_batch(
        sample.store,
        sample.batch,
        data_dir=sample.data_dir,
        out_dir=out,
        formats=["files", "html"],
    )
    page = out / "pets" / "index.html"
    ARTIFACTS.mkdir(exist_ok=True)

    with Browser(chromium, tmp_path / "profile", ARTIFACTS / "chromium.log") as browser:
        tab = browser.open_page()
        browser.call("Page.navigate", {"url": page.as_uri()}, session=tab)
        browser.wait_event("Page.loadEventFired")
        images = browser.evaluate(tab, LOAD_EVERY_IMAGE)
        facts = browser.evaluate(tab, PAGE_FACTS)
        browser.screenshot(tab, ARTIFACTS / "gallery.png")
        by_status = {s: browser.evaluate(tab, visible_after(s)) for s in ("failed", "unknown", "")}
        puppies = browser.evaluate(tab, visible_after("", "puppies"))
        events = list(browser.events)

    assert len(images) == 6
    assert all(img["width"] > 0 and img["lazy"] for img in images), images
    assert problems(events) == []
    assert EVIL_PROMPT in facts["prompts"]
    assert (facts["scripts"], facts["injected"], facts["external"]) == (1, 0, [])
    assert "Invalid size <b>9x9</b> (request id: gw-123)" in facts["errors"]
    assert facts["options"] == ["all", "failed (1)", "succeeded (6)", "unknown (1)"]
    assert by_status["failed"] == ["failed"]
    assert by_status["unknown"] == ["unknown"]
    assert len(by_status[""]) == 8
    assert len(puppies) == 3
