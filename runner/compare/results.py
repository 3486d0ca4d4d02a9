"""What each route did with the compared jobs: one cell per job, one summary per route.

Cells come from the store's export queries (the same rows every export reads), edits scored
by :class:`runner.export.edits.EditScorer` with the route's own thresholds. Each route's money
is its own batch's: spend and cost per image are never pooled across routes.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any

import anyio

from runner.abc import Exports
from runner.export.edits import EditScorer, FidelityLedger, changed
from runner.models import JobState
from runner.store.exports import ExportJob, ExportOutput
from runner.store.records import BatchStatus


@dataclass(frozen=True, slots=True, kw_only=True)
class Cell:
    """One job on one route: its first image (if any) and the facts beside it."""

    route: str
    id: str
    index: int
    prompt: str
    state: str
    is_edit: bool
    #: The first output, relative to the data directory (``None``: no image).
    path: str | None = None
    sha256: str | None = None
    width: int | None = None
    height: int | None = None
    images: int = 0
    cost_usd: float | None = None
    #: ``observed`` or ``expected`` (the cost a route reported, or the one we estimated).
    cost_kind: str | None = None
    latency_ms: float | None = None
    attempts: int = 0
    request_id: str | None = None
    fidelity: float | None = None
    flag: str | None = None
    outcome: str | None = None
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__slots__}


def _cost(row: ExportJob) -> tuple[float | None, str | None]:
    if row.job_observed_usd is not None:
        return row.job_observed_usd, "observed"
    if row.job_expected_usd is not None:
        return row.job_expected_usd, "expected"
    return None, None


def _cell(route: str, row: ExportJob, **specific: Any) -> Cell:
    """A cell with what every job has (prompt, state, cost, latency, attempts, request id)."""
    cost, kind = _cost(row)
    return Cell(
        route=route,
        id=row.ext_id,
        index=row.index,
        prompt=row.prompt,
        state=row.state,
        is_edit=bool(row.images),
        cost_usd=cost,
        cost_kind=kind,
        latency_ms=row.latency_ms,
        attempts=row.attempts,
        request_id=row.request_id,
        **specific,
    )


def _output_cell(route: str, row: ExportOutput) -> Cell:
    return _cell(
        route,
        row,
        path=row.path,
        sha256=row.sha256,
        width=row.width,
        height=row.height,
        images=row.outputs_in_job,
        fidelity=row.edit_fidelity,
        flag=row.edit_flag,
    )


def _failed_cell(route: str, row: ExportJob) -> Cell:
    return _cell(route, row, outcome=row.last_outcome, error=row.last_error)


async def collect_cells(
    store: Exports, batch_id: str, route: str, scorer: EditScorer
) -> list[Cell]:
    """Every finished job of a batch as a cell (first output only), in job order."""
    cells: list[Cell] = []
    async with aclosing(store.iter_outputs(batch_id)) as pages:
        async for page in pages:
            # Outputs come in (job, k) order: the first row of each job is its first image.
            firsts = [r for i, r in enumerate(page) if i == 0 or page[i - 1].job_id != r.job_id]
            scored = await anyio.to_thread.run_sync(scorer.score, firsts)
            if isinstance(store, FidelityLedger) and (fresh := changed(firsts, scored)):
                await store.record_fidelity(fresh)
            cells += [_output_cell(route, r) for r in scored]
    async with aclosing(store.iter_failed(batch_id)) as failed:
        async for jobs in failed:
            cells += [_failed_cell(route, r) for r in jobs]
    cells.sort(key=lambda c: c.index)
    return cells


@dataclass(frozen=True, slots=True, kw_only=True)
class RouteSummary:
    """One route's totals: success, latency, money (its own), failures and edit fidelity."""

    route: str
    batch_id: str
    batch: str
    #: Jobs the route's batch holds: one per manifest line, the same on every route.
    jobs: int
    #: Lines of the compared manifest.
    lines: int
    succeeded: int
    failed: int
    unknown: int
    pending: int
    images: int
    success_rate: float | None
    p50_latency_ms: float | None
    p95_latency_ms: float | None
    spent_usd: float
    unknown_charges_usd: float
    cost_per_image_usd: float | None
    #: Failed attempts by outcome class (retried ones included).
    failure_classes: dict[str, int]
    edits_scored: int
    mean_fidelity: float | None
    #: Scored edits by flag.
    flags: dict[str, int]

    def to_json(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__slots__}


def percentile(values: Sequence[float], q: float) -> float | None:
    """The nearest-rank ``q`` percentile (0-100) of ``values``; ``None`` when empty."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def summarise(
    route: str, status: BatchStatus, cells: Sequence[Cell], *, lines: int
) -> RouteSummary:
    """The summary of one route's batch (of a manifest of ``lines`` lines) from its status
    and its cells."""
    counts = status.counts
    succeeded = counts.get(JobState.SUCCEEDED, 0)
    finished = succeeded + counts.get(JobState.FAILED, 0) + counts.get(JobState.UNKNOWN, 0)
    latencies = [c.latency_ms for c in cells if c.path and c.latency_ms is not None]
    scored = [c.fidelity for c in cells if c.fidelity is not None]
    spent = round(status.spent_usd, 6)
    return RouteSummary(
        route=route,
        batch_id=status.batch.id,
        batch=status.batch.name,
        jobs=status.total,
        lines=lines,
        succeeded=succeeded,
        failed=counts.get(JobState.FAILED, 0),
        unknown=counts.get(JobState.UNKNOWN, 0),
        pending=status.total - finished,
        images=status.outputs,
        success_rate=round(succeeded / finished, 4) if finished else None,
        p50_latency_ms=percentile(latencies, 50),
        p95_latency_ms=percentile(latencies, 95),
        spent_usd=spent,
        unknown_charges_usd=round(status.unknown_charges_usd, 6),
        cost_per_image_usd=round(spent / status.outputs, 6) if status.outputs else None,
        failure_classes=dict(sorted(status.attempt_failures.items())),
        edits_scored=len(scored),
        mean_fidelity=round(sum(scored) / len(scored), 4) if scored else None,
        flags=dict(sorted(Counter(c.flag for c in cells if c.flag).items())),
    )
