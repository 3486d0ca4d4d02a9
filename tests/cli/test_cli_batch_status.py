"""How ``imagerun status`` reads: the table, then one hint per thing to do, each its own line."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

from .conftest import Invoke


def _batch_with_failed_unknown_and_queued_jobs(cli: Invoke, tmp_path: Path) -> None:
    manifest = tmp_path / "kites.jsonl"
    manifest.write_text("".join(f'{{"id": "k{i}", "prompt": "kite {i}"}}\n' for i in range(3)))
    assert cli("submit", str(manifest), "-r", "laozhang", "-n", "kites").exit_code == 0
    with sqlite3.connect(tmp_path / "imagerun.db") as db:
        db.execute("UPDATE jobs SET state = 'failed', last_outcome = 'auth' WHERE ext_id = 'k0'")
        db.execute("UPDATE jobs SET state = 'unknown', last_outcome = 'lost' WHERE ext_id = 'k1'")


def test_status_hints_are_sentences_apart_each_on_its_own_line(cli: Invoke, tmp_path: Path) -> None:
    _batch_with_failed_unknown_and_queued_jobs(cli, tmp_path)

    result = cli("status")

    assert result.exit_code == 0, result.output
    after_table = result.stdout.rsplit("┘", 1)[1]
    # Rich wraps a long hint at the console width, dropping the space where it breaks.
    lines = [line.rstrip() for line in after_table.strip().splitlines()]
    text = " ".join(lines)
    assert text == (
        "kites: 1 job(s) are unknown: a request may have reached the provider (and been charged) "
        "but its result was never recorded. Check the provider's call log (`imagerun reconcile`), "
        "then `imagerun retry kites --unknown` to resend or `imagerun cancel kites` to drop them. "
        "kites: `imagerun retry kites --failed` requeues the failed jobs. "
        "kites: 1 job(s) runnable: `imagerun run kites`."
    )
    assert "kites: `imagerun retry kites --failed` requeues the failed jobs." in lines
    assert lines[-1] == "kites: 1 job(s) runnable: `imagerun run kites`."
    # A command quoted right after the end of a sentence reads as one word with it.
    assert not re.search(r"[.:;,]`", text), text
