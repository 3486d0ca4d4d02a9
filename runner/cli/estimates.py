"""How ``imagerun estimate`` reads: a table of the first jobs and the totals, or JSON."""

from __future__ import annotations

from typing import Any

from rich.table import Table

from runner.cli.output import console, err, money
from runner.pricing.manifest_estimate import ManifestEstimate


def estimate_json(result: ManifestEstimate) -> dict[str, Any]:
    """``imagerun estimate --json``: totals, price date and sources, and every kept job."""
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
    console.print(f"Prices as of {result.as_of}; source: {'; '.join(result.sources)}", markup=False)
    for note in result.notes:
        err.print(f"note: {note}", markup=False)
