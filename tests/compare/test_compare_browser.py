"""The comparison page as a person sees it: opened from disk in headless Chromium.

2 and 3 routes, 200 prompts, images gone missing, hostile strings in the prompts and the
comparison's name. Screenshots are left in ``tests/export/artifacts/``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from runner import app
from runner.compare import ComparisonOptions, ComparisonReport, FitChoice
from runner.run.worker import RunOptions
from runner.sandbox import SandboxConfig, running_sandbox

from ..export.cdp import Browser, find_chromium
from ..export.test_gallery_browser import ARTIFACTS, LOAD_EVERY_IMAGE, problems
from .conftest import HOSTILE, TOLD_RPM, sandbox_settings, write_manifest

pytestmark = [pytest.mark.anyio, pytest.mark.browser]

PAGE_FACTS = """
({
  title: document.title,
  heading: document.querySelector("h1").textContent,
  rows: document.querySelectorAll("table.side tbody tr").length,
  columns: Array.from(document.querySelectorAll("table.side thead th"), (t) => t.textContent),
  summary: Array.from(document.querySelectorAll("table.summary thead th"), (t) => t.textContent),
  prompts: Array.from(document.querySelectorAll("td.prompt"), (t) => t.textContent),
  missing: Array.from(document.querySelectorAll("td.cell .missing"), (t) => t.textContent),
  flags: Array.from(document.querySelectorAll("dd.flag-ignored_source"), (t) => t.textContent),
  scripts: document.scripts.length,
  injected: document.querySelectorAll("img[src='x'], td.prompt *:not(b), h1 *").length,
  external: Array.from(document.querySelectorAll("[src], link[href]"))
    .map((e) => e.getAttribute("src") || e.getAttribute("href"))
    .filter((u) => /^[a-z]+:|^\\/\\//i.test(u)),
})
"""


@pytest.fixture
def chromium() -> str:
    binary = find_chromium()
    if binary is None:
        if os.environ.get("CI"):
            pytest.fail("no Chromium binary and CI is set: install chromium", pytrace=False)
        pytest.skip("no Chromium binary (apt-get install -y chromium, or set IMAGERUN_CHROMIUM)")
    return binary


ROUTES = ("sandbox-openai", "sandbox-laozhang", "sandbox-laozhang-vip")


# 600 jobs on the sandbox, then two pages in Chromium: far above the suite's per-test default.
@pytest.mark.timeout(300)
async def test_the_page_shows_200_prompts_side_by_side_escaped_with_missing_images(
    tmp_path: Path, chromium: str
) -> None:
    manifest = write_manifest(tmp_path / "in" / "m.jsonl", 200)
    name = f"cmp {HOSTILE}"
    choices = dict.fromkeys(ROUTES, FitChoice.ADAPT)
    with running_sandbox(SandboxConfig(tiny=True)) as handle:
        settings = sandbox_settings(handle, tmp_path)
        run = RunOptions(retry_scale=0, handle_signals=False, concurrency=32, rpm=TOLD_RPM)
        how = ComparisonOptions(name=name, out_dir=tmp_path / "ran", choices=choices, run=run)
        first = await app.compare(settings, manifest, ROUTES, how)
    assert isinstance(first, ComparisonReport)
    gone = [c for c in first.cells if c.route == ROUTES[0]][:3]
    assert [c.id for c in gone] == ["p000", "p001", "p002"]
    for cell in gone:
        assert cell.path is not None
        (settings.data_dir / cell.path).unlink()
    ARTIFACTS.mkdir(exist_ok=True)
    for count in (2, 3):
        # Re-submitting adds nothing: the page of the first `count` routes, from the store.
        routes = ROUTES[:count]
        how = ComparisonOptions(name=name, out_dir=tmp_path / str(count), choices=choices)
        report = await app.compare(settings, manifest, routes, how)
        assert isinstance(report, ComparisonReport)
        _check_in_chromium(chromium, tmp_path, report, routes, name)


def _check_in_chromium(
    chromium: str, tmp_path: Path, report: ComparisonReport, routes: tuple[str, ...], name: str
) -> None:
    with Browser(chromium, tmp_path / f"profile-{len(routes)}", ARTIFACTS / "chromium.log") as b:
        tab = b.open_page()
        b.call("Page.navigate", {"url": report.page.as_uri()}, session=tab)
        b.wait_event("Page.loadEventFired")
        images = b.evaluate(tab, LOAD_EVERY_IMAGE, timeout=120)
        facts = b.evaluate(tab, PAGE_FACTS)
        b.screenshot(tab, ARTIFACTS / f"compare-{len(routes)}.png")
        events = list(b.events)

    assert problems(events) == []
    assert facts["rows"] == 200
    assert facts["columns"] == ["prompt", *routes]
    assert facts["summary"] == ["", *routes]
    assert len(images) == 200 * len(routes) - 3
    assert all(img["width"] > 0 and img["lazy"] for img in images)
    assert facts["missing"] == ["image unavailable"] * 3
    assert facts["heading"] == name
    assert name in facts["title"]
    assert sum(HOSTILE in p for p in facts["prompts"]) == 40
    # Edits 1, 5, 9, … ignored their source: 50 per route, each flagged on the page (p001's
    # image is gone on the first route, but the score the first comparison stored stays).
    assert len(facts["flags"]) == 50 * len(routes)
    assert (facts["scripts"], facts["injected"], facts["external"]) == (0, 0, [])
