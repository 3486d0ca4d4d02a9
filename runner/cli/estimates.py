"""How ``imagerun estimate`` reads: a table of the first jobs and the totals, or JSON.

Where the route has a Batch API counterpart, a second table sets the synchronous and the
batch cost side by side, per model and in total.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rich.table import Table

from runner.cli.output import console, err, money

if TYPE_CHECKING:
    from runner.pricing.manifest_estimate import BatchComparison, ManifestEstimate, Totals


def estimate_json(result: ManifestEstimate) -> dict[str, Any]:
    """``imagerun estimate --json``: totals, price date and sources, and every kept job."""
    return {
        "route": result.route,
        "jobs": result.count,
        "total": {"low": result.low, "typical": result.typical, "high": result.high},
        "prices_as_of": result.as_of,
        "sources": result.sources,
        "notes": result.notes,
        "batch_comparison": _comparison_json(result.comparison),
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


def _totals_json(totals: Totals) -> dict[str, Any]:
    return {"low": totals.low, "typical": totals.typical, "high": totals.high}


def _comparison_json(comparison: BatchComparison | None) -> dict[str, Any] | None:
    if comparison is None:
        return None
    return {
        "synchronous_route": comparison.synchronous_route,
        "batch_route": comparison.batch_route,
        "batch_discount": comparison.batch_discount,
        "synchronous": _totals_json(comparison.synchronous),
        "batch": _totals_json(comparison.batch),
        "saved_typical": round(comparison.synchronous.typical - comparison.batch.typical, 6),
        "per_model": [
            {
                "model": m.model,
                "jobs": m.synchronous.jobs,
                "synchronous": _totals_json(m.synchronous),
                "batch": _totals_json(m.batch),
            }
            for m in comparison.per_model
        ],
    }


def print_estimate(result: ManifestEstimate, shown: int = 50) -> None:
    """The first ``shown`` jobs, the totals, the price date and source, and notes."""
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
    if result.comparison is not None:
        _print_comparison(result.comparison)
    console.print(f"Prices as of {result.as_of}; source: {'; '.join(result.sources)}", markup=False)
    for note in result.notes:
        err.print(f"note: {note}", markup=False)


def _span(totals: Totals) -> str:
    return f"{money(totals.typical)} ({money(totals.low)}-{money(totals.high)})"


def _print_comparison(c: BatchComparison) -> None:
    """Per model: jobs, synchronous and batch cost (typical, with the range), and the saving."""
    table = Table(title=f"Synchronous ({c.synchronous_route}) vs Batch API ({c.batch_route})")
    for col in ("model", "jobs", c.synchronous_route, c.batch_route, "saved (typical)"):
        table.add_column(col, overflow="fold")
    rows = [(m.model, m.synchronous, m.batch) for m in c.per_model]
    if len(rows) > 1:
        rows.append(("all models", c.synchronous, c.batch))
    for model, sync, batch in rows:
        table.add_row(
            model, str(sync.jobs), _span(sync), _span(batch), money(sync.typical - batch.typical)
        )
    console.print(table)
    console.print(
        f"Through the Batch API (route {c.batch_route}, prices × {c.batch_discount:g}): typical "
        f"{money(c.batch.typical)} instead of {money(c.synchronous.typical)}; the lines are "
        "answered within the batch's completion window (24 h on OpenAI), not at once.",
        markup=False,
    )
