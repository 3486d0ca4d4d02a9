"""A comparison's result: the plan, each route's batch, cells and summary, and its files.

``OUT/compare.html`` (:mod:`runner.compare.page`), ``OUT/compare.json`` (what ``--json``
prints) and ``OUT/manifests/<route>.jsonl`` for every route whose manifest was fitted.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runner.compare.page import PAGE, THUMBS, Thumbnails, render_page
from runner.compare.plan import ComparisonPlan
from runner.compare.results import Cell, RouteSummary
from runner.files.atomic import write_atomic

DATA = "compare.json"


@dataclass(frozen=True, slots=True, kw_only=True)
class ComparisonReport:
    """What ``imagerun compare`` did and where its page is."""

    name: str
    plan: ComparisonPlan
    #: Fitted manifest by route (routes sent the manifest as written have none).
    fitted: dict[str, Path]
    summaries: list[RouteSummary]
    cells: list[Cell]
    ran: bool
    page: Path
    data: Path

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "plan": self.plan.to_json(),
            "fitted_manifests": {k: str(v) for k, v in self.fitted.items()},
            "ran": self.ran,
            "page": str(self.page),
            "routes": [s.to_json() for s in self.summaries],
            "jobs": _rows(self.summaries, self.cells),
        }


def _rows(summaries: Sequence[RouteSummary], cells: Sequence[Cell]) -> list[dict[str, Any]]:
    by_job: dict[str, dict[str, Any]] = {}
    for cell in sorted(cells, key=lambda c: c.index):
        row = by_job.setdefault(cell.id, {"id": cell.id, "prompt": cell.prompt, "routes": {}})
        row["routes"][cell.route] = {
            k: v for k, v in cell.to_json().items() if k not in ("id", "prompt", "route")
        }
    return list(by_job.values())


def write_comparison(
    *,
    out_dir: Path,
    data_dir: Path,
    name: str,
    plan: ComparisonPlan,
    fitted: dict[str, Path],
    summaries: list[RouteSummary],
    cells: list[Cell],
    ran: bool,
) -> ComparisonReport:
    """Write the page, its thumbnails and the JSON. Blocking; run it in a worker thread."""
    out_dir.mkdir(parents=True, exist_ok=True)
    thumbs = Thumbnails(data_dir, out_dir / THUMBS).make(cells)
    report = ComparisonReport(
        name=name,
        plan=plan,
        fitted=fitted,
        summaries=summaries,
        cells=cells,
        ran=ran,
        page=out_dir / PAGE,
        data=out_dir / DATA,
    )
    page = render_page(name=name, plan=plan, summaries=summaries, cells=cells, thumbs=thumbs)
    write_atomic(report.page, page.encode("utf-8"))
    text = json.dumps(report.to_json(), ensure_ascii=False, indent=1)
    write_atomic(report.data, text.encode("utf-8"))
    return report
