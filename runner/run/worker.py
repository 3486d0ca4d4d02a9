"""The worker: claims jobs of the chosen batches and runs them, route by route.

Layout of one run (one task group for the service loops, one for the work; the feeders, the
consumers and the stop watcher are :class:`runner.run.feed.LaneFeed`'s)::

    run()
    ├── heartbeat loop     extend leases, recover dead workers' jobs
    ├── signal loop        first SIGINT/SIGTERM: stop claiming; grace; then cancel in-flight
    ├── stop watcher       on the stop: jobs claimed but not started go back to the queue
    └── work group
        ├── feeder per route      claim → memory stream (bounded by the route's concurrency)
        ├── consumers per route   concurrency × JobRunner.run_job
        └── remote driver per ``batch``-shape route   (runner.remote: remote batches)
"""

from __future__ import annotations

import functools
import os
import secrets
import signal
import socket
import ssl
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import AsyncExitStack, suppress
from dataclasses import dataclass
from pathlib import Path

import anyio
import httpx
from anyio.abc import TaskGroup, TaskStatus

from runner.errors import ConfigError, StoreUnavailable
from runner.files.adopt import AdoptionReport, adopt_orphans
from runner.files.atomic import sweep_temporaries
from runner.models import Job, JobState, Shape
from runner.pricing import PriceBook
from runner.routes import Catalog, Route
from runner.run.attempt import JobRunner
from runner.run.feed import LaneFeed
from runner.run.lane import Lane
from runner.run.lanes import open_gate, open_lane, require_api_key, retry_policy
from runner.run.memory import ByteBudget
from runner.run.observed import observed_route
from runner.run.spending import Spending
from runner.run.stats import RunStats
from runner.run.stores import RunStore
from runner.store import BatchInfo, Recovery


@dataclass(frozen=True, slots=True, kw_only=True)
class RunOptions:
    """How a run goes: limits over the routes' own, the budget, leases, the stop's grace.

    Attributes:
        concurrency: requests in flight per route (default: the route's ``concurrency``).
        rpm: requests per minute per route (default: the route's ``rpm``).
        budget_usd: the most this run may spend across its batches, or ``None``.
        lease_seconds: how long a claimed job stays ours without a heartbeat.
        grace_seconds: how long in-flight requests may finish after the first stop signal.
        handle_signals: whether SIGINT/SIGTERM stop the run (off where the caller handles them).
    """

    concurrency: int | None = None
    rpm: int | None = None
    budget_usd: float | None = None
    lease_seconds: float = 120.0
    grace_seconds: float = 30.0
    #: Memory that large response bodies may hold at once (see ``runner.run.memory``).
    memory_mb: int = 256
    #: Multiplies backoff waits; tests set 0 to retry at once.
    retry_scale: float = 1.0
    #: A synchronous route the retryable failures of remote batch lines are sent to, instead
    #: of going into a later remote batch (``imagerun run --fallback``).
    fallback: str | None = None
    handle_signals: bool = True


@dataclass(frozen=True, slots=True, kw_only=True)
class RunReport:
    """What a run did and where it left its batches.

    Attributes:
        stats: the run's statistics.
        recovered: what recovery did with jobs whose lease ran out.
        files: what adopting images left on disk by an earlier process did.
        counts: jobs per state across the run's batches at the end.
        stopped_routes: route name → why it stopped (bad key, no quota, model out of reach).
        interrupted: a signal stopped the run before its work was done.
    """

    stats: RunStats
    recovered: Recovery
    files: AdoptionReport
    counts: dict[JobState, int]
    stopped_routes: dict[str, str]
    interrupted: bool
    #: Jobs left in remote batches that have not ended (a later run applies them).
    in_remote_batches: int = 0

    @property
    def clean(self) -> bool:
        """Everything ran and nothing failed, is unknown, or is left behind."""
        bad = (JobState.FAILED, JobState.UNKNOWN, JobState.QUEUED, JobState.WAITING)
        return not self.interrupted and not any(self.counts.get(s) for s in bad)


class Runner:
    """Runs the runnable jobs of ``batches`` until none is left (or it is told to stop)."""

    def __init__(
        self,
        *,
        store: RunStore,
        catalog: Catalog,
        book: PriceBook,
        batches: Sequence[BatchInfo],
        data_dir: Path,
        options: RunOptions,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.store = store
        self.catalog = catalog
        self.batches = list(batches)
        self.data_dir = data_dir
        self.options = options
        self.environ = os.environ if environ is None else environ
        self.worker_id = f"w-{socket.gethostname()[:40]}-{os.getpid()}-{secrets.token_hex(3)}"
        self.stats = RunStats()
        self._stopping = anyio.Event()
        self._interrupted = False
        #: The database outage that outlasted its limit and is stopping the run, if any.
        self._outage: StoreUnavailable | None = None
        self._work_scope = anyio.CancelScope()
        #: Where retryable failures of remote batch lines go (``--fallback``), if anywhere.
        self._fallback: Lane | None = None
        self._ledger = store.group_ledger()
        self._jobs = JobRunner(
            store=store,
            ledger=self._ledger,
            book=book,
            data_dir=data_dir,
            worker_id=self.worker_id,
            stats=self.stats,
            spending=Spending(
                store=store, worker_id=self.worker_id, hold_s=2 * options.lease_seconds
            ),
            memory=ByteBudget(options.memory_mb * 1024 * 1024),
        )
        self._feed = LaneFeed(
            store=store,
            jobs=self._jobs,
            ledger=self._ledger,
            worker_id=self.worker_id,
            lease_seconds=options.lease_seconds,
            stats=self.stats,
            stopping=self._stopping,
            store_lost=self._store_lost,
        )

    def request_stop(self) -> None:
        """Stop claiming; in-flight requests get the grace period to finish."""
        self.stats.stopping = True
        self._stopping.set()

    async def run(self) -> RunReport:
        """Recover, adopt orphaned images, then run every lane until nothing is left."""
        self.stats.started = anyio.current_time()
        recovered = await self._recover()
        await anyio.to_thread.run_sync(sweep_temporaries, self.data_dir)
        files = await adopt_orphans(
            self.store, self.data_dir, self.batches, self.catalog, self._jobs.book
        )
        await self._setup_budgets()
        await self.store.register_worker(self.worker_id, socket.gethostname(), os.getpid())
        try:
            async with AsyncExitStack() as stack:
                lanes = [await self._lane(stack, route, ids) for route, ids in self._routes()]
                self._fallback = await self._fallback_lane(stack, lanes)
                # Only finished jobs are counted: with a million queued, counting every state
                # would hold up the first request by a tenth of a second.
                finished = [s for s in JobState if s.terminal]
                done = await self.store.count_states([b.id for b in self.batches], finished)
                self.stats.total = sum(b.job_count for b in self.batches)
                self.stats.done_before = sum(done.values())
                async with anyio.create_task_group() as services:
                    await services.start(self._ledger.run)
                    await services.start(self._heartbeats, lanes)
                    await services.start(self._feed.release_on_stop, lanes)
                    if self.options.handle_signals:
                        await services.start(self._signals, services)
                    await self._work(lanes)
                    await self._ledger.flush()
                    if self._outage is not None:
                        raise self._outage
                    services.cancel_scope.cancel()
        except BaseException:
            # What stopped the run is what is reported: if the database cannot be told now,
            # the worker's row is left to expire with its heartbeat.
            with anyio.CancelScope(shield=True), suppress(StoreUnavailable):
                await self.store.stop_worker(self.worker_id)
            raise
        with anyio.CancelScope(shield=True):
            await self.store.stop_worker(self.worker_id)
        counts = await self.store.count_states([b.id for b in self.batches])
        remote = 0
        if counts.get(JobState.RUNNING):
            remote = await self.store.remote_job_count([b.id for b in self.batches])
        return RunReport(
            in_remote_batches=remote,
            stats=self.stats,
            recovered=recovered,
            files=files,
            counts=counts,
            stopped_routes=dict(self.stats.stopped_routes),
            interrupted=self._interrupted,
        )

    async def _recover(self) -> Recovery:
        await self.store.expire_dead_local_workers(socket.gethostname())
        return await self.store.recover_expired(resend_routes=self.catalog.resend_routes())

    async def _setup_budgets(self) -> None:
        await self._jobs.spending.open(self.store, self.batches, cap_usd=self.options.budget_usd)

    @functools.cached_property
    def _tls(self) -> ssl.SSLContext:
        """One TLS context for every client of the run: each costs 20-40 ms to build."""
        return httpx.create_ssl_context()

    def _routes(self) -> list[tuple[Route, list[str]]]:
        by_route: dict[str, list[str]] = {}
        for batch in self.batches:
            by_route.setdefault(batch.route, []).append(batch.id)
        return [(self.catalog.get(name), ids) for name, ids in by_route.items()]

    async def _lane(self, stack: AsyncExitStack, route: Route, batch_ids: list[str]) -> Lane:
        route = await observed_route(self.store, route)  # probe/call-log findings win
        key = require_api_key(route, self.environ)
        concurrency = self.options.concurrency or route.concurrency
        lane = await open_lane(
            stack,
            route,
            api_key=key,
            batch_ids=batch_ids,
            concurrency=concurrency,
            gate=await open_gate(self.store, route, self.options.rpm),
            policy=retry_policy(route, scale=self.options.retry_scale),
            tls=self._tls,
        )
        self.stats.gates[route.name] = lane.gate
        return lane

    async def _fallback_lane(self, stack: AsyncExitStack, lanes: list[Lane]) -> Lane | None:
        """The lane of ``--fallback`` (for the batches of ``batch``-shape lanes), if asked."""
        if self.options.fallback is None:
            return None
        route = self.catalog.get(self.options.fallback)
        if route.shape is Shape.BATCH:
            raise ConfigError(f"--fallback {route.name}: a fallback route must be synchronous")
        ids = [b for lane in lanes if lane.route.shape is Shape.BATCH for b in lane.batch_ids]
        return await self._lane(stack, route, ids)

    async def _work(self, lanes: list[Lane]) -> None:
        async with anyio.create_task_group() as work:
            self._work_scope = work.cancel_scope
            for lane in lanes:
                if lane.route.shape is Shape.BATCH:
                    work.start_soon(self._stop_on_outage, self._drive_remote, lane)
                    continue
                self._feed.buffered[lane.route.name] = set()
                send, receive = anyio.create_memory_object_stream[Job](lane.concurrency)
                work.start_soon(self._stop_on_outage, self._feed.feed, lane, send)
                for _ in range(lane.concurrency):
                    work.start_soon(self._feed.consume, lane, receive.clone())
                receive.close()

    async def _drive_remote(self, lane: Lane) -> None:
        """A ``batch``-shape route's jobs go as lines of remote batches (``runner.remote``)."""
        from runner.remote.driver import remote_driver

        driver = remote_driver(
            store=self.store,
            jobs=self._jobs,
            lane=lane,
            data_dir=self.data_dir,
            stats=self.stats,
            stopping=self._stopping,
            lease_seconds=self.options.lease_seconds,
            may_claim=lambda: self._feed.may_claim(lane),
            fallback=self._fallback,
        )
        await driver.run()

    def _store_lost(self, exc: StoreUnavailable) -> None:
        """The database stayed away past its outage limit: stop claiming; in-flight requests
        finish (their images are kept), then the run ends with ``exc``."""
        self._outage = self._outage or exc
        self.request_stop()

    async def _stop_on_outage(self, fn: Callable[..., Awaitable[None]], *args: object) -> None:
        """Run a lane's task; an outage past the limit stops the run (see :meth:`_store_lost`).

        The outage may come alone or inside the exception groups of the lane's task groups (a
        remote batch's driver and its lease renewal): here either becomes the stop, and only
        what is not an outage goes on up.
        """
        try:
            await fn(*args)
        except* StoreUnavailable as outages:
            self._store_lost(_first_outage(outages))

    async def _heartbeats(
        self, lanes: list[Lane], *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Keep our leases alive and take back the jobs of workers that died."""
        task_status.started()
        lease = self.options.lease_seconds
        while True:
            await anyio.sleep(lease / 3)
            held = [job_id for lane in lanes for job_id in lane.held]
            try:
                await self.store.heartbeat(self.worker_id, held, lease)
                await self.store.worker_heartbeat(self.worker_id)
                await self._jobs.spending.renew()
                await self._recover()
            except StoreUnavailable as exc:
                self._store_lost(exc)

    async def _signals(
        self, services: TaskGroup, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """First SIGINT/SIGTERM: graceful stop; a second one (or the grace running out): now."""
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            task_status.started()
            async for _ in signals:
                self._interrupted = True
                if not self._stopping.is_set():
                    self.request_stop()
                    services.start_soon(self._cancel_after_grace)
                else:
                    self._work_scope.cancel()

    async def _cancel_after_grace(self) -> None:
        await anyio.sleep(self.options.grace_seconds)
        self._work_scope.cancel()


def _first_outage(group: BaseExceptionGroup[StoreUnavailable]) -> StoreUnavailable:
    """The first outage in ``group`` (``except*`` keeps the task groups' nesting)."""
    first = group.exceptions[0]
    return first if isinstance(first, StoreUnavailable) else _first_outage(first)
