"""One comparison from plan to page: check, fit, submit a batch per route, run, gather, write.

The façade's ``submit``, ``run`` and ``open_store`` are passed in (``runner.app.compare``
does), so a comparison goes through exactly what ``imagerun submit`` and ``imagerun run``
do, and this package stays below the façade.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import anyio

from runner.compare.estimates import batch_name, estimate_route
from runner.compare.plan import ComparisonPlan, FitChoice, fit_manifest, plan_comparison
from runner.compare.report import ComparisonReport, write_comparison
from runner.compare.results import Cell, RouteSummary, collect_cells, summarise
from runner.config import Settings
from runner.errors import UsageError
from runner.export.edits import EditScorer, route_thresholds
from runner.models import JobState
from runner.store import BatchInfo, EnqueueResult, Store

if TYPE_CHECKING:
    from runner.run.worker import RunOptions

#: Fitted manifests live here, under the comparison's folder.
MANIFESTS = "manifests"
#: Job states a run of the comparison will still send.
WAITING = (JobState.QUEUED, JobState.WAITING)


@dataclass(frozen=True, slots=True, kw_only=True)
class ComparisonOptions:
    """How to compare.

    Attributes:
        name: the comparison's name; each route's batch is ``<name>-<route>``, and every
            job key folds it in, so the comparison's jobs are its own: a new name buys every
            line afresh on every route, the same name again adds and sends nothing.
        out_dir: where the page, the JSON and the fitted manifests go.
        choices: by route, what to do with the fields it cannot take.
        run: run the batches (``None``: leave them queued for ``imagerun run``).
        on_plan: called with the plan before anything is sent (with each route's estimate
            once every route fits).
    """

    name: str
    out_dir: Path
    choices: Mapping[str, FitChoice] = field(default_factory=dict)
    run: RunOptions | None = None
    on_plan: Callable[[ComparisonPlan], None] | None = None


class Submit(Protocol):
    async def __call__(
        self,
        settings: Settings,
        manifest: Path,
        route_name: str,
        *,
        name: str | None = None,
        key_seed: str | None = None,
        exact: bool = False,
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
    """Check ``manifest`` against every route; when it fits them all (as chosen), price it on
    each, submit it once per route as this comparison's own jobs, run the batches (unless
    ``how.run`` is ``None``) and write the page and the JSON from what the store holds.

    Returns:
        The report, or the plan alone (nothing sent) when a route cannot take the manifest.

    Raises:
        UsageError: fewer than two distinct routes, or a route's batch holding jobs that are
            not this comparison's (nothing is sent then).
    """
    if len(set(routes)) < 2:
        raise UsageError("a comparison needs at least two different routes")
    found = [settings.catalog.get(name) for name in dict.fromkeys(routes)]
    plan = await anyio.to_thread.run_sync(
        plan_comparison, manifest, found, settings.catalog, how.choices
    )
    if not plan.ready:
        if how.on_plan is not None:
            how.on_plan(plan)
        return plan
    fitted = await anyio.to_thread.run_sync(fit_all, plan, settings, how.out_dir)
    async with open_store(settings) as store:
        plan = await _priced(plan, settings, how.name, fitted, store)
    if how.on_plan is not None:
        how.on_plan(plan)
    batches = await _submit_all(settings, plan, fitted, how.name, submit)
    if how.run is not None:
        await run(settings, [b.id for b in batches], how.run)
    async with open_store(settings) as store:
        summaries, cells = await _gather(store, settings, batches, plan.jobs)
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


async def _submit_all(
    settings: Settings,
    plan: ComparisonPlan,
    fitted: dict[str, Path],
    name: str,
    submit: Submit,
) -> list[BatchInfo]:
    """Submit the manifest (as fitted to each route) once per route, as ``name``'s own jobs."""
    results: list[EnqueueResult] = []
    for fit in plan.fits:
        path = fitted.get(fit.route, plan.manifest)
        # Exact: a batch that would end up holding anything but this comparison's lines makes
        # the submission roll back (the estimates checked every route before the first).
        results.append(
            await submit(
                settings,
                path,
                fit.route,
                name=batch_name(name, fit.route),
                key_seed=name,
                exact=True,
            )
        )
    return [r.batch for r in results]


async def _priced(
    plan: ComparisonPlan,
    settings: Settings,
    name: str,
    fitted: Mapping[str, Path],
    store: Store,
) -> ComparisonPlan:
    """``plan`` with each route's estimate and the lines its batch already holds."""
    by_name = {b.name: b for b in await store.list_batches()}
    estimates = []
    for fit in plan.fits:
        route = settings.catalog.get(fit.route)
        held = by_name.get(batch_name(name, route.name))
        waiting = await store.count_states([held.id], WAITING) if held else {}
        keys = await store.batch_keys(held.id) if held else set()
        priced = partial(
            estimate_route,
            comparison=name,
            manifest=fitted.get(route.name, plan.manifest),
            route=route,
            catalog=settings.catalog,
            book=settings.book,
            held=held,
            held_keys=frozenset(keys),
            waiting=sum(waiting.values()),
        )
        estimates.append(await anyio.to_thread.run_sync(priced))
    return replace(plan, estimates=estimates)


async def _gather(
    store: Store, settings: Settings, batches: list[BatchInfo], lines: int
) -> tuple[list[RouteSummary], list[Cell]]:
    summaries: list[RouteSummary] = []
    cells: list[Cell] = []
    statuses = await store.batch_status(batches)
    for batch, status in zip(batches, statuses, strict=True):
        route = settings.catalog.routes.get(batch.route)
        with EditScorer(route_thresholds(route), settings.data_dir) as scorer:
            found = await collect_cells(store, batch.id, batch.route, scorer)
        cells += found
        summaries.append(summarise(batch.route, status, found, lines=lines))
    return summaries, cells
