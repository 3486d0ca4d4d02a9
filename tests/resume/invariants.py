"""What must hold after any crash: database, files on disk and the provider's log agree."""

from __future__ import annotations

import hashlib
import sqlite3
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from runner.sandbox import RequestRecord

TERMINAL = {"succeeded", "failed", "cancelled"}
RUNNABLE = {"queued", "waiting", "running"}
RETRYABLE = {
    "rate_limited",
    "server_error",
    "timeout",
    "network",
    "bad_response",
    "download_failed",
}


@dataclass
class Ledger:
    jobs: list[dict[str, Any]]
    attempts: list[dict[str, Any]]
    outputs: list[dict[str, Any]]

    def runnable(self) -> list[dict[str, Any]]:
        return [j for j in self.jobs if j["state"] in RUNNABLE]

    def unknown_jobs(self) -> list[dict[str, Any]]:
        return [j for j in self.jobs if j["state"] == "unknown"]

    def attempts_by_job(self) -> dict[int, list[dict[str, Any]]]:
        grouped: dict[int, list[dict[str, Any]]] = defaultdict(list)
        for attempt in sorted(self.attempts, key=lambda a: (a["job_id"], a["number"])):
            grouped[attempt["job_id"]].append(attempt)
        return grouped


def read_ledger(db: Path) -> Ledger:
    with sqlite3.connect(db) as conn:
        conn.row_factory = sqlite3.Row
        return Ledger(
            jobs=[dict(r) for r in conn.execute("SELECT * FROM jobs")],
            attempts=[dict(r) for r in conn.execute("SELECT * FROM attempts")],
            outputs=[dict(r) for r in conn.execute("SELECT * FROM outputs")],
        )


def check_invariants(
    ledger: Ledger,
    requests: Sequence[RequestRecord],
    data_dir: Path,
    *,
    allow_unknown: bool,
) -> None:
    seen = [r.client_request_id for r in requests if r.kind == "image"]
    assert len(seen) == len(set(seen)), "the provider saw one of our request ids twice"
    seen_ids = set(seen)
    _states(ledger, seen_ids, allow_unknown)
    _outputs(ledger, data_dir)
    _one_to_one(ledger, seen_ids)
    _no_unexplained_resend(ledger, seen_ids)


def _states(ledger: Ledger, seen: set[str | None], allow_unknown: bool) -> None:
    attempts = ledger.attempts_by_job()
    for job in ledger.jobs:
        if job["state"] == "unknown":
            assert allow_unknown, f"job {job['ext_id']} is unknown after a graceful stop"
            last = attempts[job["id"]][-1]
            assert last["outcome"] == "lost", last
            if last["id"] not in seen:
                _unsent_but_held(job, last)
        else:
            assert job["state"] in TERMINAL, f"job {job['ext_id']} left {job['state']}"


def _unsent_but_held(job: dict[str, Any], last: dict[str, Any]) -> None:
    """An ``unknown`` job whose request never reached the provider.

    A kill can land after the attempt's row is committed (the row is written before the
    request leaves) and before the request reaches the provider. The runner cannot tell that
    from a request that did arrive, so what it promises is: the attempt was closed ``lost``
    from ``sending`` (charge unknown), the job is held and never re-sent by itself (this
    attempt is its last), and the provider's call log then settles it: reconcile found no row
    for it and recorded it not charged, so ``imagerun retry --unknown`` may resend it.
    """
    name = job["ext_id"]
    assert last["error_message"] == "worker stopped while the request was in flight", last
    assert (last["charge_status"], last["charge_evidence"]) == ("not_charged", "call_log"), (
        f"job {name}'s request never reached the provider, yet reconcile did not settle it: {last}"
    )


def _outputs(ledger: Ledger, data_dir: Path) -> None:
    by_job = defaultdict(list)
    for out in ledger.outputs:
        by_job[out["job_id"]].append(out)
        path = data_dir / out["path"]
        data = path.read_bytes()
        assert hashlib.sha256(data).hexdigest() == out["sha256"], path
        with Image.open(path) as image:
            image.load()
            assert (image.width, image.height) == (out["width"], out["height"])
    for job in ledger.jobs:
        if job["state"] == "succeeded":
            assert by_job[job["id"]], f"succeeded job {job['ext_id']} has no output"
    recorded = {out["path"] for out in ledger.outputs}
    on_disk = {p.relative_to(data_dir).as_posix() for p in data_dir.rglob("*") if p.is_file()}
    temporaries = [p for p in on_disk if Path(p).name.startswith(".tmp-")]
    assert not temporaries, f"temporary files survived: {temporaries[:5]}"
    assert on_disk == recorded, f"files not recorded: {sorted(on_disk - recorded)[:5]}"


def _one_to_one(ledger: Ledger, seen: set[str | None]) -> None:
    ours = {a["id"]: a for a in ledger.attempts}
    unrecorded = seen - set(ours)
    assert not unrecorded, f"the provider saw requests the ledger never recorded: {unrecorded}"
    for attempt_id, attempt in ours.items():
        if attempt_id in seen:
            continue
        # Only two ways an attempt row exists without the provider seeing it: the connection
        # never opened, or the worker died between writing the row and sending the request
        # (the call log then proved it never arrived).
        assert attempt["outcome"] in ("network", "lost"), attempt
        if attempt["outcome"] == "lost":
            assert attempt["charge_status"] == "not_charged", attempt


def _no_unexplained_resend(ledger: Ledger, seen: set[str | None]) -> None:
    for job_id, attempts in ledger.attempts_by_job().items():
        for earlier in attempts[:-1]:
            explained = earlier["outcome"] in RETRYABLE or (
                earlier["outcome"] == "lost" and earlier["id"] not in seen
            )
            assert explained, f"job {job_id} was sent again after {earlier['outcome']}"
