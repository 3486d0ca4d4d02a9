"""One comparison from plan to page: check, fit, submit a batch per route, run, gather, write.

The façade's ``submit``, ``run`` and ``open_store`` are passed in (``runner.app.compare``
does), so a comparison goes through exactly what ``imagerun submit`` and ``imagerun run``
do, and this package stays below the façade.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import anyio

from runner.compare.plan import ComparisonPlan, FitChoice, fit_manifest, plan_comparison
from runner.compare.report import ComparisonReport, write_comparison
from runner.compare.results import Cell, RouteSummary, collect_cells, summarise
from runner.config import Settings
from runner.errors import UsageError
from runner.export.edits import EditScorer, route_thresholds
from runner.store import BatchInfo, EnqueueResult, Store

if TYPE_CHECKING:
    from runner.run.worker import RunOptions

#: Fitted manifests live here, under the comparison's folder.
MANIFESTS = "manifests"


@dataclass(frozen=True, slots=True, kw_only=True)
class ComparisonOptions:
    """How to compare.

    Attributes:
        name: the comparison's name; each route's batch is ``<name>-<route>``.
        out_dir: where the page, the JSON and the fitted manifests go.
        choices: by route, what to do with the fields it cannot take.
        run: run the batches (``None``: leave them queued for ``imagerun run``).
        on_plan: called with the plan before anything is sent.
    """

    name: str
    out_dir: Path
    choices: Mapping[str, FitChoice] = field(default_factory=dict)
    run: RunOptions | None = None
    on_plan: Callable[[ComparisonPlan], None] | None = None


class Submit(Protocol):
    async def __call__(
        self, settings: Settings, manifest: Path, route_name: str, *, name: str | None = None
    ) -> EnqueueResult: ...


class Run(Protocol):
    async def __call__(
        self, settings: Settings, refs: Sequence[str], options: RunOptions
    ) -> Any: ...


class OpenStore(Protocol):
    def __call__(self, settings: Settings) -> AbstractAsyncContextManager[Store]: ...


def fit_all(plan: ComparisonPlan, settings: Settings, out_dir: Path) -> dict[str, Path]:
    """Write the fitted manifest of every route with gaps. Blocking; run it in a thread."""
    fitted = {}
    for fit in plan.fits:
        if fit.gaps:
            target = out_dir / MANIFESTS / f"{fit.route}.jsonl"
            route = settings.catalog.get(fit.route)
            fitted[fit.route] = fit_manifest(plan.manifest, route, settings.catalog, fit, target)
    return fitted


async def compare(
    settings: Settings,
    manifest: Path,
    routes: Sequence[str],
    how: ComparisonOptions,
    submit: Submit,
    run: Run,
    open_store: OpenStore,
) -> ComparisonReport | ComparisonPlan:
    """Check ``manifest`` against every route; when it fits them all (as chosen), submit it
    once per route, run the batches (unless ``how.run`` is ``None``) and write the page and
    the JSON from what the store holds.

    Returns:
        The report, or the plan alone (nothing sent) when a route cannot take the manifest.

    Raises:
        UsageError: fewer than two distinct routes.
    """
    if len(set(routes)) < 2:
        raise UsageError("a comparison needs at least two different routes")
    found = [settings.catalog.get(name) for name in dict.fromkeys(routes)]
    plan = await anyio.to_thread.run_sync(
        plan_comparison, manifest, found, settings.catalog, how.choices
    )
    if how.on_plan is not None:
        how.on_plan(plan)
    if not plan.ready:
        return plan
    fitted = await anyio.to_thread.run_sync(fit_all, plan, settings, how.out_dir)
    batches: list[BatchInfo] = []
    for fit in plan.fits:
        path = fitted.get(fit.route, plan.manifest)
        result = await submit(settings, path, fit.route, name=f"{how.name}-{fit.route}")
        batches.append(result.batch)
    if how.run is not None:
        await run(settings, [b.id for b in batches], how.run)
    async with open_store(settings) as store:
        summaries, cells = await _gather(store, settings, batches)
    return await anyio.to_thread.run_sync(
        lambda: write_comparison(
            out_dir=how.out_dir,
            data_dir=settings.data_dir,
            name=how.name,
            plan=plan,
            fitted=fitted,
            summaries=summaries,
            cells=cells,
            ran=how.run is not None,
        )
    )


async def _gather(
    store: Store, settings: Settings, batches: list[BatchInfo]
) -> tuple[list[RouteSummary], list[Cell]]:
    summaries: list[RouteSummary] = []
    cells: list[Cell] = []
    statuses = await store.batch_status(batches)
    for batch, status in zip(batches, statuses, strict=True):
        route = settings.catalog.routes.get(batch.route)
        with EditScorer(route_thresholds(route), settings.data_dir) as scorer:
            found = await collect_cells(store, batch.id, batch.route, scorer)
        cells += found
        summaries.append(summarise(batch.route, status, found))
    return summaries, cells
