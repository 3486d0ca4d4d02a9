"""``imagerun status`` counts the images kept though not the size or format asked for."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

from .conftest import Invoke, status_json


def _batch_with_one_small_image(cli: Invoke, tmp_path: Path) -> None:
    manifest = tmp_path / "kites.jsonl"
    manifest.write_text("".join(f'{{"id": "k{i}", "prompt": "kite {i}"}}\n' for i in range(2)))
    assert cli("submit", str(manifest), "-r", "laozhang", "-n", "kites").exit_code == 0
    with sqlite3.connect(tmp_path / "imagerun.db") as db:
        jobs = db.execute("SELECT id, batch_id FROM jobs ORDER BY id").fetchall()
        db.execute("UPDATE jobs SET state = 'succeeded', last_outcome = 'ok'")
        for (job_id, batch_id), (asked, got) in zip(
            jobs, [("1024x1024", "96x64"), (None, None)], strict=True
        ):
            db.execute(
                "INSERT INTO outputs (job_id, batch_id, attempt_id, k, path, sha256, width, "
                "height, format, bytes, created_at, asked, got) "
                "VALUES (?, ?, 'ir-1', 0, ?, ?, 96, 64, 'png', 10, '2026-12-02 00:00:00', ?, ?)",
                (job_id, batch_id, f"{batch_id}/{job_id}-0.png", "0" * 64, asked, got),
            )


def test_status_counts_mismatched_outputs_and_says_where_to_look(
    cli: Invoke, tmp_path: Path
) -> None:
    _batch_with_one_small_image(cli, tmp_path)
    [batch] = status_json(cli)["batches"]
    assert (batch["outputs"], batch["mismatched_outputs"]) == (2, 1)
    result = cli("status")
    assert result.exit_code == 0, result.output
    # The table folds its cells at the console's width: read it with the spaces collapsed.
    cells = re.sub(r"[\s│]+", " ", result.stdout)
    assert "2 (1 not as" in cells
    text = " ".join(line.strip() for line in result.stdout.splitlines())
    assert "kites: 1 image(s) kept (and paid for) though not what was asked for" in text
