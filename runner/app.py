"""What each command does, as async functions the CLI calls (and tests call directly).

No terminal code here: functions return records; ``runner.cli`` renders them. The engine,
billing, the exporters and the manifest reader are imported by the functions that use them:
``imagerun status`` starts without loading the HTTP stack, pyarrow or the manifest checks.
"""

from __future__ import annotations

import hashlib
import socket
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio

from runner.abc import Queue
from runner.config import Settings
from runner.errors import Problem, ValidationFailed
from runner.models import JobSpec, JobState
from runner.routes import Route
from runner.store import BatchInfo, BatchStatus, EnqueueResult, RemoteBatch, Store, WorkerInfo

if TYPE_CHECKING:
    from runner.billing import (
        AccountEndpoints,
        CostReport,
        Probe,
        ProbeOptions,
        ProbeReport,
        ReconcileReport,
    )
    from runner.compare import ComparisonOptions, ComparisonPlan, ComparisonReport
    from runner.export import ExportReport
    from runner.manifest import CheckReport
    from runner.pricing.manifest_estimate import ManifestEstimate
    from runner.run.worker import Runner, RunOptions, RunReport


@asynccontextmanager
async def open_store(settings: Settings) -> AsyncIterator[Store]:
    """The database, migrated to the current schema."""
    store = await Store.open(settings.db_url)
    try:
        yield store
    finally:
        await store.close()


@asynccontextmanager
async def _judged_store(settings: Settings) -> AsyncIterator[Store]:
    """The database once the jobs of dead workers are judged, as a run judges them at start.

    A worker whose process is gone from this host, or whose lease ran out, holds its jobs no
    longer: a job it had not sent goes back to the queue; one whose request may have reached
    the provider becomes ``unknown`` (queued again on a route whose ``unknown_policy`` resends).
    ``status``, ``retry`` and ``cancel`` then report and act on what the jobs really are.
    """
    async with open_store(settings) as store:
        await store.expire_dead_local_workers(socket.gethostname())
        await store.recover_expired(resend_routes=settings.catalog.resend_routes())
        yield store


async def check(settings: Settings, manifest: Path, route_name: str) -> CheckReport:
    """Validate ``manifest`` against the route; every problem, with its line and field."""
    from runner.manifest import check_manifest

    route = settings.catalog.get(route_name)
    return await anyio.to_thread.run_sync(check_manifest, manifest, route, settings.catalog)


def _specs(
    manifest: Path, route: Route, settings: Settings, key_seed: str | None = None
) -> Iterator[JobSpec]:
    from runner.manifest import scan_manifest

    for item in scan_manifest(manifest, route, settings.catalog, key_seed=key_seed):
        if isinstance(item, Problem):
            # The file changed between validation and enqueueing: abort, roll back.
            raise ValidationFailed([item])
        yield item


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


async def submit(
    settings: Settings,
    manifest: Path,
    route_name: str,
    *,
    name: str | None = None,
    budget_usd: float | None = None,
    key_seed: str | None = None,
    exact: bool = False,
) -> EnqueueResult:
    """Validate, then enqueue all-or-nothing. Re-submitting adds nothing.

    ``key_seed`` makes the jobs keyed apart from the same lines submitted without it (a
    comparison passes its name); re-submitting with the same seed still adds nothing.
    ``exact``: the batch must end up holding exactly the manifest's jobs (see
    :meth:`runner.abc.Queue.submit`).

    Raises:
        ValidationFailed: the manifest has problems; nothing was enqueued.
    """
    route = settings.catalog.get(route_name)
    report = await check(settings, manifest, route_name)
    if report.problems:
        raise ValidationFailed(report.problems, truncated=report.truncated)
    digest = await anyio.to_thread.run_sync(_sha256, manifest)
    snapshot = route.public_dict()
    snapshot.pop("api_key_set", None)
    async with open_store(settings) as store:
        return await store.submit(
            name=name or manifest.stem,
            route=route.name,
            manifest=str(await anyio.Path(manifest).resolve()),
            manifest_sha256=digest,
            route_snapshot=snapshot,
            budget_usd=budget_usd,
            specs=_specs(manifest, route, settings, key_seed),
            exact=exact,
        )


async def resolve_batches(store: Queue, refs: Sequence[str]) -> list[BatchInfo]:
    """The batches named by id or name in ``refs``; every batch when there are none."""
    if not refs:
        return await store.list_batches()
    return [await store.find_batch(ref) for ref in refs]


@dataclass(frozen=True, slots=True, kw_only=True)
class StatusReport:
    """``imagerun status``: the batches asked for and the workers alive now."""

    batches: list[BatchStatus]
    workers: list[WorkerInfo]
    #: Each route's learned pace (``runner.run.pacing.Learned`` as JSON, with ``learned_at``).
    paces: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: The batches' remote batches (``batch``-shape routes), oldest first.
    remote_batches: list[RemoteBatch] = field(default_factory=list)


async def status(settings: Settings, refs: Sequence[str] = ()) -> StatusReport:
    """Counts, spend and failures of the named (default: all) batches; live workers."""
    async with _judged_store(settings) as store:
        statuses = await store.batch_status(await resolve_batches(store, refs))
        return StatusReport(
            batches=statuses,
            workers=await store.list_workers(),
            paces=await store.route_paces(),
            remote_batches=await store.remote_batches([s.batch.id for s in statuses]),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class RunResult:
    """``imagerun run``: the run's report (none when nothing was runnable) and its batches."""

    report: RunReport | None
    batches: list[BatchInfo]
    #: Batches that had nothing runnable: a finished batch re-run does nothing, and says so.
    nothing_to_do: bool


async def run(
    settings: Settings,
    refs: Sequence[str],
    options: RunOptions,
    *,
    on_start: Callable[[Runner], None] | None = None,
) -> RunResult:
    """Work until the named (default: all) batches have no runnable job."""
    from runner.files.adopt import adopt_orphans
    from runner.run.worker import Runner

    async with open_store(settings) as store:
        batches = await resolve_batches(store, refs)
        if not await store.any_live([b.id for b in batches]):
            # Nothing to send, but images a killed run wrote may still settle unknown jobs.
            await adopt_orphans(store, settings.data_dir, batches, settings.catalog, settings.book)
            return RunResult(report=None, batches=batches, nothing_to_do=True)
        runner = Runner(
            store=store,
            catalog=settings.catalog,
            book=settings.book,
            batches=batches,
            data_dir=settings.data_dir,
            options=options,
            environ=settings.environ,
        )
        if on_start is not None:
            on_start(runner)
        report = await runner.run()
        return RunResult(report=report, batches=batches, nothing_to_do=False)


async def retry(settings: Settings, ref: str, *, failed: bool, unknown: bool) -> int:
    """Requeue failed and/or unknown jobs of a batch; returns how many."""
    from runner.files.adopt import adopt_orphans

    states = [s for s, on in ((JobState.FAILED, failed), (JobState.UNKNOWN, unknown)) if on]
    async with _judged_store(settings) as store:
        batch = await store.find_batch(ref)
        # An unknown job whose image a killed worker wrote is a paid success: adopt it first,
        # or requeueing it would buy the image again.
        await adopt_orphans(store, settings.data_dir, [batch], settings.catalog, settings.book)
        return await store.requeue(batch.id, states)


@dataclass(frozen=True, slots=True, kw_only=True)
class CancelResult:
    """``imagerun cancel``: jobs cancelled now, and remote batches asked to stop."""

    jobs: int
    remote_batches: int = 0


async def cancel(settings: Settings, ref: str) -> CancelResult:
    """Cancel every job of a batch that has not started, and its remote batches (their lines
    that finished anyway are kept and paid once applied)."""
    async with _judged_store(settings) as store:
        batch = await store.find_batch(ref)
        jobs = await store.cancel(batch.id)
        remote = 0
        if await store.remote_batches([batch.id], unfinished_only=True):
            from runner.remote.cancel import cancel_remote

            route = settings.catalog.get(batch.route)
            remote = await cancel_remote(store, route, batch.id, settings.environ)
        return CancelResult(jobs=jobs, remote_batches=remote)


async def estimate(
    settings: Settings, manifest: Path, route_name: str, *, keep: int = 1000
) -> ManifestEstimate:
    """Per-job and total cost range of a manifest on a route, with price source and date.

    Totals cover every job; only the first ``keep`` per-job rows are kept for display. On a
    route with a Batch API counterpart, the synchronous and batch costs come side by side.
    """
    from runner.pricing.manifest_estimate import batch_counterpart, estimate_manifest

    route = settings.catalog.get(route_name)
    report = await check(settings, manifest, route_name)
    if report.problems:
        raise ValidationFailed(report.problems, truncated=report.truncated)
    specs = _specs(manifest, route, settings)
    counterpart = batch_counterpart(settings.catalog, route)
    return await anyio.to_thread.run_sync(
        lambda: estimate_manifest(settings.book, route, specs, keep=keep, counterpart=counterpart)
    )


async def export(
    settings: Settings,
    ref: str,
    *,
    out_dir: Path,
    formats: Sequence[str],
    name_template: str = "{id}",
    include_failed: bool = False,
    embed: bool = False,
    shard_size: int = 1000,
    progress: Callable[[int, int], None] | None = None,
) -> ExportReport:
    """Export a batch to ``out_dir`` in each of ``formats`` (:func:`runner.export.export_batch`)."""
    from runner.export import export_batch

    async with open_store(settings) as store:
        return await export_batch(
            store,
            await store.find_batch(ref),
            data_dir=settings.data_dir,
            out_dir=out_dir,
            formats=formats,
            name_template=name_template,
            include_failed=include_failed,
            embed=embed,
            shard_size=shard_size,
            progress=progress,
            catalog=settings.catalog,
        )


async def compare(
    settings: Settings, manifest: Path, routes: Sequence[str], how: ComparisonOptions
) -> ComparisonReport | ComparisonPlan:
    """The same jobs on every route side by side; the plan alone if they do not all fit."""
    from runner.compare.session import compare as run_comparison

    return await run_comparison(settings, manifest, routes, how, submit, run, open_store)


async def costs(settings: Settings, ref: str | None, *, reprice: bool = False) -> CostReport:
    """Spend of a batch (default: every attempt) by route, outcome and charge status."""
    from runner.billing import cost_report

    async with open_store(settings) as store:
        found = await resolve_batches(store, [ref] if ref else [])
        return await cost_report(
            store,
            settings.catalog,
            settings.book,
            found,
            all_batches=ref is None,
            do_reprice=reprice,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class ProbePlan:
    """What ``probe-billing`` would send on a route, and the most it could cost."""

    route: Route
    probes: list[Probe]
    worst_case_usd: float


def probe_plan(settings: Settings, route_name: str, options: ProbeOptions) -> ProbePlan:
    """The probes for ``route_name`` and their worst case, before anything is sent."""
    from runner.billing import plan_probes, probes_worst_case

    route = settings.catalog.get(route_name)
    probes = plan_probes(settings.catalog, route, options)
    return ProbePlan(
        route=route, probes=probes, worst_case_usd=probes_worst_case(settings.book, route, probes)
    )


async def probe_billing(
    settings: Settings, route_name: str, options: ProbeOptions, endpoints: AccountEndpoints
) -> ProbeReport:
    """Send the planned probes one at a time and record what the route charged for each."""
    from runner.billing import probe_billing as run_probes

    async with open_store(settings) as store:
        return await run_probes(
            store,
            catalog=settings.catalog,
            book=settings.book,
            data_dir=settings.data_dir,
            environ=settings.environ,
            route_name=route_name,
            options=options,
            endpoints=endpoints,
        )


async def reconcile(
    settings: Settings,
    route_name: str,
    *,
    endpoints: AccountEndpoints,
    log_file: Path | None = None,
    batch_ref: str | None = None,
    settle: float | None = None,
) -> ReconcileReport:
    """Match a route's attempts (in one batch) with its call log; record what was charged."""
    from runner.billing import reconcile as match_call_log

    async with open_store(settings) as store:
        return await match_call_log(
            store,
            settings.catalog,
            route_name,
            environ=settings.environ,
            endpoints=endpoints,
            log_file=log_file,
            batch=await store.find_batch(batch_ref) if batch_ref else None,
            settle=settle,
        )


async def upgrade(settings: Settings) -> str:
    """Migrate the database to the current schema; returns its URL without the password."""
    async with open_store(settings) as store:
        return store.safe_url
