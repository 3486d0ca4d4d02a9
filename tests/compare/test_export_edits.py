"""Exports of edits: every index carries ``edit_fidelity`` / ``edit_flag``; the gallery shows
source → output with its flag; an export of several batches gets an index of cards."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from runner import app
from runner.config import load_settings
from runner.export.batches_index import batch_card, render_index
from runner.sandbox import SandboxHandle

from .conftest import FAST, HOSTILE, sandbox_settings, write_manifest

pytestmark = pytest.mark.anyio


async def test_every_export_carries_the_fidelity_of_edit_rows(
    sandbox: SandboxHandle, tmp_path: Path
) -> None:
    manifest = write_manifest(tmp_path / "in" / "m.jsonl", 8, size=False)
    settings = sandbox_settings(sandbox, tmp_path)
    await app.submit(settings, manifest, "sandbox-openai", name="edits")
    await app.run(settings, ["edits"], FAST)
    out = tmp_path / "out"

    report = await app.export(
        settings, "edits", out_dir=out, formats=["files", "jsonl", "csv", "parquet", "html"]
    )

    rows = [json.loads(t) for t in (out / "edits.jsonl").read_text("utf-8").splitlines()]
    flags = {r["id"]: (r["edit_flag"], r["edit_fidelity"]) for r in rows}
    assert {k: v[0] for k, v in flags.items()} == {
        "p000": None, "p001": "ignored_source", "p002": None, "p003": "ok",
        "p004": None, "p005": "ignored_source", "p006": None, "p007": "ok",
    }  # fmt: skip
    assert flags["p003"][1] > 0.7 > 0.3 > flags["p001"][1]
    assert report.flagged_edits == 2
    with (out / "edits.csv").open(newline="", encoding="utf-8") as handle:
        by_id = {r["id"]: r for r in csv.DictReader(handle)}
    assert by_id["p001"]["edit_flag"] == "ignored_source"
    assert by_id["p000"]["edit_fidelity"] == ""
    table = pq.read_table(out / "edits.parquet").to_pylist()
    assert [r["edit_flag"] for r in table] == [v[0] for v in flags.values()]
    files = [json.loads(t) for t in (out / "edits" / "results.jsonl").read_text().splitlines()]
    assert [r["edit_fidelity"] for r in files] == [v[1] for v in flags.values()]
    gallery = (out / "edits" / "index.html").read_text("utf-8")
    assert gallery.count("class='thumb pair'") == 4
    assert gallery.count("<figcaption class='flag-ignored_source'>") == 2
    sources = sorted((out / "edits" / "thumbs").glob("src-*.webp"))
    assert len(sources) == 1  # the four edits share one source: one thumbnail


async def test_an_index_of_several_batches_has_totals_and_thumbnails(
    sandbox: SandboxHandle, tmp_path: Path
) -> None:
    settings = sandbox_settings(sandbox, tmp_path)
    names = ["first", f"second {HOSTILE}"]
    for count, name, route in zip(
        (3, 6), names, ("sandbox-openai", "sandbox-laozhang"), strict=True
    ):
        manifest = write_manifest(tmp_path / name[:6] / "m.jsonl", count, size=False)
        await app.submit(settings, manifest, route, name=name)
    await app.run(settings, names, FAST)
    out = tmp_path / "out"
    statuses = (await app.status(settings, names)).batches
    cards = []
    for status in statuses:
        report = await app.export(settings, status.batch.id, out_dir=out, formats=["html"])
        cards.append(batch_card(report, status, out))

    page = render_index(f"index {HOSTILE}", cards)

    assert [(c.jobs, c.images, c.flagged_edits) for c in cards] == [(3, 3, 1), (6, 6, 2)]
    assert [len(c.thumbs) for c in cards] == [3, 4]
    assert all((out / t).is_file() for c in cards for t in c.thumbs)
    assert all((out / c.page).is_file() for c in cards)
    assert "<script>" not in page
    assert page.count('<article class="batch">') == 2
    assert f"${cards[1].spent_usd:.4f}" in page


async def test_scores_are_kept_status_counts_flagged_edits_and_thresholds_reflag(
    sandbox: SandboxHandle, tmp_path: Path, db_url: str
) -> None:
    """On SQLite and PostgreSQL."""
    manifest = write_manifest(tmp_path / "in" / "m.jsonl", 8, size=False)
    settings = sandbox_settings(sandbox, tmp_path, db_url)
    await app.submit(settings, manifest, "sandbox-openai", name="kept")
    await app.run(settings, ["kept"], FAST)
    before = (await app.status(settings, ["kept"])).batches[0]
    assert before.flagged_edits == 0  # nothing scored yet

    await app.export(settings, "kept", out_dir=tmp_path / "a", formats=["jsonl"])

    after = (await app.status(settings, ["kept"])).batches[0]
    assert after.flagged_edits == 2
    assert after.to_json()["flagged_edits"] == 2
    # The stored score stands even with the source gone; the flag follows the thresholds.
    (tmp_path / "in" / "sources" / "mug.png").unlink()
    config = tmp_path / "strict.toml"
    config.write_text("[routes.sandbox-openai]\nfidelity_ignored_below = 0.99\n", "utf-8")
    strict = load_settings(config=config, db=db_url, data=tmp_path / "data")
    await app.export(strict, "kept", out_dir=tmp_path / "b", formats=["jsonl"])
    first = [json.loads(t) for t in (tmp_path / "a" / "kept.jsonl").read_text().splitlines()]
    again = [json.loads(t) for t in (tmp_path / "b" / "kept.jsonl").read_text().splitlines()]
    assert [r["edit_fidelity"] for r in again] == [r["edit_fidelity"] for r in first]
    assert [r["edit_flag"] for r in again if r["edit_flag"]] == ["ignored_source"] * 4
    assert (await app.status(strict, ["kept"])).batches[0].flagged_edits == 4
