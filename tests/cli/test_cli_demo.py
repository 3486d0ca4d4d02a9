"""``imagerun demo``: the whole loop offline, ending with a gallery on disk."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from runner.routes import load_catalog

from .conftest import Invoke


def test_demo_runs_the_whole_loop_and_prints_the_gallery(cli: Invoke, tmp_path: Path) -> None:
    workdir = tmp_path / "demo"

    result = cli("demo", "--dir", str(workdir), db=False)

    assert result.exit_code == 0, result.output
    match = re.search(r"^Gallery: (.+)$", result.stdout, re.MULTILINE)
    assert match, result.stdout
    gallery = Path(match.group(1))
    assert gallery.is_file()
    assert gallery.is_relative_to(workdir)
    page = gallery.read_text("utf-8")
    # The index links one gallery per demo batch, and each of those exists.
    links = re.findall(r'href="([^"]+\.html)"', page)
    assert len(links) == 6
    assert all((gallery.parent / link).is_file() for link in links)
    assert (workdir / "imagerun.db").is_file()
    # Each batch's card carries its totals and thumbnails of its first images.
    assert page.count("<dt>flagged edits</dt>") == 6
    thumbs = re.findall(r"<img src='([^']+\.webp)'", page)
    assert thumbs
    assert all((gallery.parent / t).is_file() for t in thumbs)
    # The demo ends with two sandbox routes compared on the example edits.
    match = re.search(r"^Comparison: (.+)$", result.stdout, re.MULTILINE)
    assert match, result.stdout
    comparison = Path(match.group(1)).read_text("utf-8")
    assert comparison.count("<tr data-id=") == 4
    assert "ignored_source" in comparison
    # The product prompts ran through the sandbox's Batch API too, at its price.
    batch = re.search(
        r"^Batch API \(sandbox-openai-batch\): (\d+) images for \$([\d.]+), \$([\d.]+) at "
        r"the synchronous price\.$",
        result.stdout,
        re.MULTILINE,
    )
    assert batch, result.stdout
    sync = re.search(
        r"^Same prompts on sandbox-openai: (\d+) images for \$([\d.]+)\.$",
        result.stdout,
        re.MULTILINE,
    )
    assert sync, result.stdout
    images, usd, at_sync = int(batch[1]), float(batch[2]), float(batch[3])
    discount = load_catalog().get("sandbox-openai-batch").batch_discount
    assert images >= 6
    assert usd > 0
    assert at_sync == pytest.approx(usd / discount, abs=1e-4)
    # Same prompts, same sizes: the synchronous batch cost about what the lines would have.
    assert float(sync[2]) / int(sync[1]) == pytest.approx(at_sync / images, rel=0.1)
    # Every column holds every line, though sandbox-openai ran the edits earlier in the demo.
    data = json.loads((Path(match.group(1)).parent / "compare.json").read_text("utf-8"))
    assert [(r["jobs"], r["lines"], r["succeeded"]) for r in data["routes"]] == [(4, 4, 4)] * 2
    assert all(len(row["routes"]) == 2 for row in data["jobs"])
    assert "no result" not in comparison
