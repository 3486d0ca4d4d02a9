"""Rendering records for people (Rich) and for programs (``--json``)."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table

from runner.errors import Problem
from runner.models import JobState
from runner.routes import Catalog
from runner.store import BatchStatus, EnqueueResult, WorkerInfo

if TYPE_CHECKING:
    # Only for annotations: importing them would load the sandbox and pyarrow at start-up.
    from runner.app import ManifestEstimate
    from runner.cli.demo import DemoResult
    from runner.export import ExportReport

# Piped output gets a wide, stable layout instead of Rich's 80-column fallback.
console = Console(width=None if sys.stdout.isatty() else 140)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 140)


def emit_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def money(usd: float | None) -> str:
    if usd is None:
        return "-"
    return f"${usd:,.4f}" if usd < 1 else f"${usd:,.2f}"


def routes_table(catalog: Catalog, show_sandbox: bool) -> Table:
    table = Table(title="Routes", show_lines=False)
    for col in ("route", "provider", "shape", "model", "params", "billing", "key variable"):
        table.add_column(col, overflow="fold")
    for name in sorted(catalog.routes):
        route = catalog.routes[name]
        if route.provider == "sandbox" and not show_sandbox:
            continue
        params = sorted(route.params - {"images"})
        if route.accepts_edits:
            params.insert(0, "edits")
        sizes = catalog.size_rule(route)
        params = [f"size({sizes})" if p == "size" else p for p in params]
        billing = (
            f"${route.usd_per_call:.3f}/call"
            if route.billing == "call"
            else f"tokens×{route.price_multiplier:g}"
        )
        key = route.api_key_env + (" ✓" if route.api_key() else " (unset)")
        if route.api_key_default and route.api_key_env not in os.environ:
            key = f"{route.api_key_env} (sandbox default)"
        shape = f"{route.shape.value} {', '.join(route.endpoints)}"
        table.add_row(name, route.provider, shape, route.model, " ".join(params), billing, key)
    return table


def problems(items: Sequence[Problem], truncated: int) -> None:
    for problem in items:
        # One problem, one line, whatever the width: people grep and editors jump to FILE:LINE.
        err.print(str(problem), markup=False, highlight=False, soft_wrap=True)
    if truncated:
        err.print(f"… and {truncated} more problem(s)", markup=False)


def enqueued(result: EnqueueResult) -> None:
    batch = result.batch
    if result.added == 0:
        held = ", ".join(f"{n} ({i})" for i, n in result.existing_batches.items())
        console.print(
            f"Nothing added: all {result.existing} job(s) are already queued"
            + (f" in batch {held}" if held else ""),
            markup=False,
        )
        return
    note = f"; {result.existing} already queued, skipped" if result.existing else ""
    verb = "Created" if result.batch_created else "Added to"
    console.print(
        f"{verb} batch {batch.name} ({batch.id}) on route {batch.route}: "
        f"{result.added} job(s) enqueued{note}",
        markup=False,
    )
    print(batch.id)


def status_table(statuses: Sequence[BatchStatus]) -> Table:
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
            str(st.outputs),
            str(st.attempts),
            spent,
            failures or "-",
        )
    return table


_PENDING = (JobState.QUEUED, JobState.RUNNING, JobState.WAITING, JobState.CANCELLED)


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
    return hints


def workers_table(workers: Sequence[WorkerInfo]) -> Table:
    table = Table(title="Live workers")
    for col in ("worker", "host", "pid", "running jobs", "last heartbeat"):
        table.add_column(col)
    for w in workers:
        table.add_row(w.id, w.host, str(w.pid), str(w.running_jobs), w.heartbeat_at.isoformat())
    return table


def estimate_json(result: ManifestEstimate) -> dict[str, Any]:
    return {
        "route": result.route,
        "jobs": result.count,
        "total": {"low": result.low, "typical": result.typical, "high": result.high},
        "prices_as_of": result.as_of,
        "sources": result.sources,
        "notes": result.notes,
        "per_job": [
            {
                "id": j.id,
                "line": j.line,
                "low": j.estimate.low,
                "typical": j.estimate.typical,
                "high": j.estimate.high,
                "basis": j.estimate.basis,
            }
            for j in result.jobs
        ],
    }


def print_estimate(result: ManifestEstimate, shown: int = 50) -> None:
    table = Table(title=f"Estimate on route {result.route}")
    for col in ("id", "line", "low", "typical", "high", "basis"):
        table.add_column(col, overflow="fold")
    for job in result.jobs[:shown]:
        e = job.estimate
        table.add_row(job.id, str(job.line), money(e.low), money(e.typical), money(e.high), e.basis)
    console.print(table)
    if result.count > shown:
        console.print(f"… {result.count - shown} more job(s) in the totals below.")
    console.print(
        f"Total for {result.count} job(s): low {money(result.low)}, typical "
        f"{money(result.typical)}, high {money(result.high)}",
        markup=False,
    )
    console.print(f"Prices as of {result.as_of}; source: {'; '.join(result.sources)}", markup=False)
    for note in result.notes:
        err.print(f"note: {note}", markup=False)


def export_progress() -> Callable[[int, int], None]:
    """A progress callback: a line every 10 % (exports run to completion quickly)."""
    last = [-1]

    def tick(done: int, total: int) -> None:
        step = int(10 * done / total) if total else 10
        if total >= 1000 and step > last[0]:
            last[0] = step
            err.print(f"export: {done:,}/{total:,}", markup=False)

    return tick


def print_export(report: ExportReport) -> None:
    table = Table(title=f"Export of {report.batch_name}")
    for col in ("format", "written", "unchanged", "skipped", "renamed", "where"):
        table.add_column(col, overflow="fold")
    for fmt in report.formats.values():
        table.add_row(
            fmt.format,
            str(fmt.written),
            str(fmt.unchanged),
            str(fmt.skipped),
            str(fmt.renamed_total),
            "\n".join(str(p) for p in fmt.paths),
        )
    console.print(table)
    for fmt in report.formats.values():
        for renamed in fmt.renamed[:20]:
            err.print(f"{fmt.format}: {renamed.wanted} exists; wrote {renamed.used}", markup=False)
        for skip in fmt.skips[:20]:
            err.print(f"{fmt.format}: skipped {skip.id}: {skip.reason}", markup=False)


def print_demo(result: DemoResult) -> None:
    console.print(status_table(result.statuses))
    total = sum(s.outputs for s in result.statuses)
    spent = sum(s.spent_usd for s in result.statuses)
    console.print(
        f"{total} images from {len(result.statuses)} batches on 5 sandbox routes; "
        f"{result.requests_seen} requests reached the sandbox; expected spend {money(spent)} "
        "(sandbox money).",
        markup=False,
    )
    console.print(f"Database and outputs: {result.workdir}", markup=False)
    if result.gallery:
        console.print(f"Gallery: {result.gallery}", markup=False)
