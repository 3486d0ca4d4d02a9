"""How ``imagerun status`` reads: the batches table, live workers and what to do next."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from rich.table import Table

from runner.app import StatusReport
from runner.cli.output import console, money
from runner.models import JobState, RemoteStep, utcnow
from runner.store import BatchStatus, RemoteBatch, WorkerInfo

_PENDING = (JobState.QUEUED, JobState.RUNNING, JobState.WAITING, JobState.CANCELLED)


def print_status(report: StatusReport) -> None:
    """The batches table, the live workers and one hint per thing the user can do next."""
    if not report.batches:
        console.print("No batches yet: `imagerun submit MANIFEST --route R`.")
        return
    console.print(status_table(report.batches))
    if report.workers:
        console.print(workers_table(report.workers))
    if report.paces:
        console.print(paces_table(report.paces))
    live = [rb for rb in report.remote_batches if rb.step is not RemoteStep.DONE]
    if live:
        console.print(remote_table(live, names={s.batch.id: s.batch.name for s in report.batches}))
    for rb in live:
        if rb.step is RemoteStep.UNCOLLECTED:
            console.print(f"uncollected: {rb.error}.", markup=False)
    names = {s.batch.id: s.batch.name for s in report.batches}
    for hint in undriven_hints(live, {w.id for w in report.workers}, names):
        console.print(hint, markup=False)
    for hint in status_hints(report.batches):
        console.print(hint, markup=False)


def status_json(report: StatusReport) -> dict[str, Any]:
    """``imagerun status --json``."""
    return {
        "batches": [s.to_json() for s in report.batches],
        "workers": [
            {"id": w.id, "host": w.host, "pid": w.pid, "running": w.running_jobs}
            for w in report.workers
        ],
        "paces": report.paces,
        "remote_batches": [rb.to_json() for rb in report.remote_batches],
    }


def status_table(statuses: Sequence[BatchStatus]) -> Table:
    """One row per batch: jobs by state, outputs, attempts, spend, failed attempts by class."""
    table = Table(title="Batches")
    for col in ("batch", "route", "jobs", "succeeded", "failed", "unknown", "pending"):
        table.add_column(col, overflow="fold")
    for col in ("outputs", "attempts", "spent", "failed attempts"):
        table.add_column(col, overflow="fold")
    for st in statuses:
        c = st.counts
        pending = ", ".join(f"{s.value} {c[s]}" for s in _PENDING if c.get(s))
        failures = ", ".join(f"{k}×{v}" for k, v in sorted(st.attempt_failures.items()))
        spent = money(st.spent_usd)
        if st.unknown_charges_usd:
            spent += f" (+{money(st.unknown_charges_usd)} unknown)"
        table.add_row(
            f"{st.batch.name} ({st.batch.id})",
            st.batch.route,
            str(st.total),
            str(c.get(JobState.SUCCEEDED, 0)),
            str(c.get(JobState.FAILED, 0)),
            str(c.get(JobState.UNKNOWN, 0)),
            pending or "-",
            _outputs(st),
            str(st.attempts),
            spent,
            failures or "-",
        )
    return table


def _outputs(st: BatchStatus) -> str:
    notes = [f"{st.mismatched} not as asked"] if st.mismatched else []
    if st.flagged_edits:
        notes.append(f"{st.flagged_edits} flagged edits")
    return f"{st.outputs} ({', '.join(notes)})" if notes else str(st.outputs)


def status_hints(statuses: Sequence[BatchStatus]) -> list[str]:
    """What the user can do next, batch by batch."""
    hints = []
    for st in statuses:
        name = st.batch.name
        unknown = st.counts.get(JobState.UNKNOWN, 0)
        if unknown:
            hints.append(
                f"{name}: {unknown} job(s) are unknown: a request may have reached the provider "
                f"(and been charged) but its result was never recorded. Check the provider's call "
                f"log (`imagerun reconcile`), then `imagerun retry {name} --unknown` to resend "
                f"or `imagerun cancel {name}` to drop them."
            )
        if st.counts.get(JobState.FAILED, 0):
            hints.append(f"{name}: `imagerun retry {name} --failed` requeues the failed jobs.")
        if st.runnable:
            hints.append(f"{name}: {st.runnable} job(s) runnable: `imagerun run {name}`.")
        if st.mismatched:
            hints.append(
                f"{name}: {st.mismatched} image(s) kept (and paid for) though not what was asked "
                f"for (another size or format); exports name them in `asked` and `got`."
            )
        if st.flagged_edits:
            hints.append(
                f"{name}: {st.flagged_edits} edit(s) flagged: their output ignored the source "
                f"(likely a fresh generation) or sent it back unchanged; the gallery shows "
                f"source and output side by side (`imagerun export {name} -f html`)."
            )
    return hints


def undriven_hints(
    live: Sequence[RemoteBatch], workers: set[str], names: Mapping[str, str]
) -> list[str]:
    """Batches whose remote batches no live worker drives (its run stopped or died)."""
    undriven: dict[str, int] = {}
    for rb in live:
        if not rb.step.ended and rb.worker_id not in workers:
            undriven[rb.batch_id] = undriven.get(rb.batch_id, 0) + 1
    return [
        f"{names.get(batch_id, batch_id)}: {count} remote batch(es) with no run driving them: "
        f"`imagerun run {names.get(batch_id, batch_id)}` takes them up and records their "
        "results (none of their lines is sent twice)."
        for batch_id, count in undriven.items()
    ]


def paces_table(paces: Mapping[str, Mapping[str, Any]]) -> Table:
    """Each route's learned limit and pace (kept for the next run for a day)."""
    from runner.run.pace_state import Learned  # only when paces are shown

    table = Table(title="Learned route limits")
    for col in ("route", "limit", "pace", "why", "learned at"):
        table.add_column(col)
    for route, data in sorted(paces.items()):
        learned = Learned.from_json(dict(data))
        table.add_row(
            route,
            learned.limit_text,
            f"{learned.rpm:,.0f}/min",
            str(learned.reason),
            str(data.get("learned_at", "")),
        )
    return table


def remote_table(remote: Sequence[RemoteBatch], *, names: Mapping[str, str]) -> Table:
    """Remote batches not applied yet: the provider's status, line counts, time waited."""
    table = Table(title="Remote batches")
    for col in ("remote batch", "batch", "status", "lines", "done", "failed", "waited", "id"):
        table.add_column(col)
    now = utcnow()
    for rb in remote:
        since = rb.submitted_at or rb.created_at
        waited = int((now - since).total_seconds())
        table.add_row(
            rb.id,
            names.get(rb.batch_id, rb.batch_id),
            _remote_status(rb),
            f"{rb.line_count:,}",
            f"{rb.request_counts.get('completed', 0):,}",
            f"{rb.request_counts.get('failed', 0):,}",
            f"{waited // 3600}h{waited % 3600 // 60:02d}m{waited % 60:02d}s",
            rb.remote_id or "-",
        )
    return table


def _remote_status(rb: RemoteBatch) -> str:
    if rb.step is RemoteStep.UNCOLLECTED:
        return f"uncollected ({rb.status})" if rb.status else "uncollected"
    return rb.status or rb.step.value


def workers_table(workers: Sequence[WorkerInfo]) -> Table:
    """The workers that heartbeat recently, with how many jobs each holds."""
    table = Table(title="Live workers")
    for col in ("worker", "host", "pid", "running jobs", "last heartbeat"):
        table.add_column(col)
    for w in workers:
        table.add_row(w.id, w.host, str(w.pid), str(w.running_jobs), w.heartbeat_at.isoformat())
    return table
