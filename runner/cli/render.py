"""Rendering records for people (Rich) and for programs (``--json``)."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.table import Table

from runner.app import ManifestEstimate
from runner.errors import Problem
from runner.models import JobState
from runner.routes import Catalog
from runner.store import BatchStatus, EnqueueResult, WorkerInfo

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
        err.print(str(problem), markup=False, highlight=False)
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
    cols = ["batch", "route", "jobs", "queued", "running", "waiting", "succeeded", "failed"]
    cols += ["unknown", "cancelled", "outputs", "spent", "failures"]
    for col in cols:
        table.add_column(col, overflow="fold")
    for st in statuses:
        c = st.counts
        failures = ", ".join(f"{k}×{v}" for k, v in sorted(st.failures.items()))
        table.add_row(
            f"{st.batch.name}\n{st.batch.id}",
            st.batch.route,
            str(st.total),
            *(str(c.get(s, 0)) for s in _STATE_COLS),
            str(st.outputs),
            money(st.spent_usd)
            + (f"\n+ {money(st.unknown_charges_usd)} unknown" if st.unknown_charges_usd else ""),
            failures or "-",
        )
    return table


_STATE_COLS = (
    JobState.QUEUED,
    JobState.RUNNING,
    JobState.WAITING,
    JobState.SUCCEEDED,
    JobState.FAILED,
    JobState.UNKNOWN,
    JobState.CANCELLED,
)


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
