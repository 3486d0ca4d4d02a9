"""The seams of imagerun: what the engine, exports and billing need of the job store.

Each role is a small :class:`~typing.Protocol`, documented here once, that
:class:`runner.store.Store` plays; consumers ask for the roles they use (an export for
:class:`Exports` alone, the engine for the sets in :mod:`runner.run.stores`). Every verb commits
before it returns unless its documentation says otherwise, and raises
:class:`runner.errors.StoreError` (or a subclass) when the database fails it.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Collection, Iterable, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import anyio
from anyio.abc import TaskStatus

if TYPE_CHECKING:  # records only: this module imports nothing of imagerun at run time
    from runner.files.adopt import JobFiles
    from runner.models import Job, JobSpec, JobState, Outcome
    from runner.store.charges import BalanceSnapshot, BilledAttempt, ChargeObservation, ChargeUpdate
    from runner.store.costs import CostRow, MismatchRow, RemoteCostRow
    from runner.store.exports import ExportJob, ExportOutput
    from runner.store.records import (
        AttemptResult,
        AttemptStart,
        BatchInfo,
        BatchStatus,
        EnqueueResult,
        OutputRecord,
        Recovery,
        RemoteBatch,
        RemoteLine,
    )
    from runner.store.remote import RemoteChange
    from runner.store.repricing import RepriceInput
    from runner.store.workers import WorkerInfo


@runtime_checkable
class Queue(Protocol):
    """Batches and their jobs' places in the queue."""

    async def submit(
        self,
        *,
        name: str,
        route: str,
        manifest: str,
        manifest_sha256: str,
        route_snapshot: Mapping[str, Any],
        budget_usd: float | None,
        specs: Iterable[JobSpec],
        exact: bool = False,
    ) -> EnqueueResult:
        """Create (or reuse) the batch ``name`` and enqueue ``specs`` atomically, skipping
        job keys already known (in any batch): re-submitting adds nothing, creates nothing.
        With ``exact``, the batch must end up holding exactly ``specs`` (new, or every one of
        them already its own); otherwise :class:`runner.errors.UsageError` and nothing is
        enqueued. A comparison's batches are submitted so."""

    async def batch_keys(self, batch_id: str) -> set[str]:
        """The job keys ``batch_id`` holds."""

    async def find_batch(self, ref: str) -> BatchInfo:
        """A batch by id or by name (raises :class:`runner.errors.NotFound`)."""

    async def list_batches(self) -> list[BatchInfo]:
        """Every batch, oldest first."""

    async def next_due(self, batch_ids: list[str]) -> datetime | None:
        """When the earliest waiting job becomes runnable (``None`` if none is waiting)."""

    async def count_states(
        self, batch_ids: list[str], states: Iterable[JobState] | None = None
    ) -> dict[JobState, int]:
        """Jobs of these batches by state (only ``states`` if given: counting walks one index
        entry per job counted, so narrow ``states`` to what is small)."""

    async def any_live(self, batch_ids: list[str]) -> bool:
        """Whether any job of these batches is queued, waiting or running."""

    async def requeue(self, batch_id: str, states: Iterable[JobState]) -> int:
        """Put the batch's jobs in ``states`` back in the queue; returns how many."""

    async def cancel(self, batch_id: str) -> int:
        """Cancel every job of the batch that is not running or finished; returns how many."""


@runtime_checkable
class Leases(Protocol):
    """A worker's hold on the jobs it claimed, and how it lets go of one it never sent."""

    async def claim(
        self,
        *,
        worker_id: str,
        batch_ids: list[str],
        limit: int,
        lease_seconds: float,
        cap: int | None = None,
    ) -> list[Job]:
        """Lease up to ``limit`` runnable jobs (queued, or waiting and due) to ``worker_id``;
        with ``cap``, at most ``cap`` of the route's jobs are leased by all workers together."""

    async def heartbeat(self, worker_id: str, job_ids: list[int], lease_seconds: float) -> int:
        """Extend the leases ``worker_id`` holds on ``job_ids``; returns how many it still holds."""

    async def release_unstarted(self, worker_id: str, job_ids: Sequence[int]) -> int:
        """Return claimed jobs that never started an attempt to the queue; returns how many
        (a job with an attempt still ``sending`` stays leased: recovery judges it)."""

    async def fail_unsent(self, job_id: int, outcome: str, message: str) -> None:
        """Fail a job before any request left (e.g. its source image cannot be read)."""


@runtime_checkable
class Ledger(Protocol):
    """The attempt rows: one written before a request leaves, finished with its job's move.
    Each finishing verb closes the attempt *and* moves its job in one transaction, so the
    ledger and the queue never disagree about what happened."""

    async def start_attempt(self, start: AttemptStart) -> None:
        """Record that a request is about to leave; returns once the row is committed (raises
        :class:`~runner.store.LeaseLost` if the job is no longer ours: then nothing is sent)."""

    async def complete(self, result: AttemptResult, files: Sequence[OutputRecord]) -> None:
        """The attempt succeeded and its outputs are on disk: record them, finish the job."""

    async def retry_later(self, result: AttemptResult, at: datetime) -> None:
        """The attempt failed in a retryable way: the job waits until ``at``."""

    async def fail(self, result: AttemptResult, files: Sequence[OutputRecord] = ()) -> None:
        """The attempt failed for good: the job is ``failed``; any ``files`` it delivered are
        recorded all the same (an image the route refuses as not what was asked is kept)."""

    async def release(self, result: AttemptResult | None, job_id: int, state: JobState) -> None:
        """Give the job back in ``state`` without a verdict (route stopped, run interrupted)."""

    async def flush(self) -> None:
        """Wait until every finishing write made so far is committed (raises
        :class:`~runner.errors.StoreError` if a write nobody waited for failed)."""


@runtime_checkable
class GroupLedger(Ledger, Protocol):
    """A :class:`Ledger` whose writes a background task commits in groups: the finishing
    verbs return once queued; ``start_attempt`` still waits for its commit."""

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Commit queued writes until cancelled, then what is still queued (start it in the
        worker's task group before using the verbs)."""


@runtime_checkable
class GroupCommit(Protocol):
    """Where a run gets its group-committing ledger."""

    def group_ledger(self) -> GroupLedger:
        """A new :class:`GroupLedger` on this store's database."""


@runtime_checkable
class Workers(Protocol):
    """The registry of worker processes: who runs, where, and whether they still live."""

    async def register_worker(self, worker_id: str, host: str, pid: int) -> None:
        """Record a worker as started now on ``host`` as process ``pid``."""

    async def worker_heartbeat(self, worker_id: str) -> None:
        """Record that the worker is alive now."""

    async def stop_worker(self, worker_id: str) -> None:
        """Record that the worker stopped; jobs it still leases are left to recovery at once."""

    async def expire_dead_local_workers(self, host: str) -> int:
        """End the leases of workers on ``host`` whose process is gone, so that their jobs are
        recovered at once instead of a lease later; returns how many were found dead."""

    async def list_workers(self, *, live_within: float = 120.0) -> list[WorkerInfo]:
        """Workers not stopped whose heartbeat is at most ``live_within`` seconds old."""


@runtime_checkable
class LeaseRecovery(Protocol):
    """Taking back the jobs of workers that died or hung."""

    async def recover_expired(self, *, resend_routes: frozenset[str] = frozenset()) -> Recovery:
        """Take back running jobs whose lease ran out: back to the queue if no request left;
        one still ``sending`` may have been charged, so that attempt is closed ``lost`` and the
        job becomes ``unknown`` (unless its route is in ``resend_routes``)."""


@runtime_checkable
class FileAdoption(Protocol):
    """What orphan adoption needs: images a dead worker wrote but never recorded."""

    async def recorded_paths(self, batch_ids: Sequence[str]) -> set[str]:
        """Relative paths of every recorded output of these batches."""

    async def jobs_for_files(self, job_ids: Sequence[int]) -> Mapping[int, JobFiles]:
        """State, recorded outputs and lost attempt of each job that has files on disk."""

    async def adopt(
        self,
        job_id: int,
        attempt_id: str,
        files: Sequence[OutputRecord],
        expected_usd: float,
        *,
        refused: str | None = None,
    ) -> bool:
        """Record a dead worker's verified images for a job held ``unknown`` and finish it:
        the attempt is closed ``ok`` and charged, nothing is resent; whether it did. The job
        succeeds, or fails with ``refused`` as its error when the route refuses the images
        (``on_mismatch = "fail"``); the images are recorded either way."""


@runtime_checkable
class RouteState(Protocol):
    """A route's request schedule and 429 pause, shared by every worker on the database."""

    async def ensure_route_state(self, route: str) -> None:
        """Create the route's shared state if it does not exist yet."""

    async def take_rate_slot(
        self, route: str, interval: float, tolerance: float = 0.0
    ) -> tuple[float, float]:
        """Reserve the route's next slot, ``interval`` s after the last (``tolerance``: how early
        a slot may be used, GCRA's burst tolerance). Returns ``(wait, paused)``: seconds to wait
        before sending; seconds the route stays paused after a 429 (then no slot was taken)."""

    async def pause_route(self, route: str, seconds: float) -> None:
        """Pause the route for everyone (a 429's ``Retry-After``); pauses only ever extend."""


@runtime_checkable
class RoutePace(Protocol):
    """A route's learned pace, kept between runs and shared by every worker on the database."""

    async def load_pace(self, route: str, max_age_s: float) -> dict[str, Any] | None:
        """The pace saved for ``route`` no longer than ``max_age_s`` ago, or ``None``."""

    async def save_pace(self, route: str, pace: dict[str, Any]) -> None:
        """Keep ``pace`` as the route's learned pace (its ``route_state`` row must exist)."""

    async def route_paces(self) -> dict[str, dict[str, Any]]:
        """Every route's saved pace, with ``learned_at`` (ISO 8601), by route name."""

    async def count_passed(self, route: str, passed: int) -> int:
        """Add ``passed`` successful requests to the route's running count (every worker's
        together) and return the count (its ``route_state`` row must exist)."""


@runtime_checkable
class BudgetGrants(Protocol):
    """Shares of a batch budget, granted to workers by the database."""

    async def grant_budget(
        self,
        batch_id: str,
        worker_id: str,
        want_usd: float,
        *,
        at_least: float = 0.0,
        hold_s: float,
    ) -> float:
        """Grant ``worker_id`` up to ``want_usd`` more of ``batch_id``'s budget for ``hold_s``;
        returns it (0 when less than ``at_least`` is left; all of it without a budget)."""

    async def renew_budget_grants(self, worker_id: str, hold_s: float) -> list[str]:
        """Extend ``worker_id``'s grants by ``hold_s``; returns the batches whose grant lapsed
        (cut to what was spent: the worker must drop its unspent share)."""


@runtime_checkable
class ChargePolicy(Protocol):
    """What was observed about a route's charges for failures."""

    async def observed_policy(self, route: str) -> dict[Outcome, ChargeObservation]:
        """The newest observation of each outcome class on ``route``."""


@runtime_checkable
class Charges(Protocol):
    """What attempts were really charged: the provider's records set against the ledger."""

    async def billed_attempts(
        self,
        *,
        routes: Sequence[str] | None = None,
        batch_ids: Sequence[str] | None = None,
        ids: Sequence[str] | None = None,
    ) -> list[BilledAttempt]:
        """Finished attempts in scope, oldest first (``sending`` ones are still in the air)."""

    async def record_charges(self, updates: Sequence[ChargeUpdate]) -> int:
        """Set each attempt's charge status, evidence and observed amount; returns how many."""

    async def record_observations(self, observations: Sequence[ChargeObservation]) -> None:
        """Keep what was observed about failure charges on a route (newest wins)."""

    async def record_balance(self, snapshot: BalanceSnapshot) -> None:
        """Keep one reading of an account's balance."""

    async def balance_snapshots(self, account: str) -> list[BalanceSnapshot]:
        """Readings of ``account``, oldest first."""


@runtime_checkable
class Costs(Protocol):
    """Spend as recorded, and its repricing with a newer price book."""

    async def cost_rows(self, batch_ids: Sequence[str] | None = None) -> list[CostRow]:
        """Spend grouped by route, outcome, charge status and evidence."""

    async def mismatch_rows(self, batch_ids: Sequence[str] | None = None) -> list[MismatchRow]:
        """Per route: images kept though not what was asked, their attempts and its cost."""

    async def remote_cost_rows(self, batch_ids: Sequence[str] | None = None) -> list[RemoteCostRow]:
        """Per remote batch (oldest first): its finished lines, how many are ok, their cost."""

    async def observations(self, routes: Sequence[str] | None = None) -> list[ChargeObservation]:
        """Every charge observation (of ``routes``), oldest first."""

    async def repricing_inputs(self, batch_ids: Sequence[str] | None = None) -> list[RepriceInput]:
        """Stored usage, outcome and job fields of every finished attempt in scope."""

    async def set_expected(self, prices: Sequence[tuple[str, float]]) -> int:
        """Store recomputed expected costs (attempt id, USD); returns how many."""


@runtime_checkable
class Exports(Protocol):
    """Streaming reads of a batch's outputs and failures, one page of jobs at a time."""

    async def count_export(self, batch_id: str, *, include_failed: bool = False) -> int:
        """How many rows :meth:`iter_outputs` (plus :meth:`iter_failed`) will yield."""

    def iter_outputs(self, batch_id: str) -> AsyncGenerator[list[ExportOutput], None]:
        """The batch's outputs in job-id then ``k`` order."""

    def iter_failed(self, batch_id: str) -> AsyncGenerator[list[ExportJob], None]:
        """The batch's ``failed`` and ``unknown`` jobs in id order, with their last attempt."""


@runtime_checkable
class Reports(Protocol):
    """Status and spend as ``imagerun status`` and budgets see them."""

    async def batch_status(self, batch_list: Sequence[BatchInfo]) -> list[BatchStatus]:
        """Counts by state, outputs, attempts, spend and failure classes for each batch."""

    async def exposure_usd(self, batch_ids: Sequence[str]) -> float:
        """Spend that counts against a budget: charged, possibly charged (at expected cost, or
        worst case), and in flight (at worst case) until the provider says otherwise."""


@runtime_checkable
class RemoteBatches(Protocol):
    """Remote batches: a provider's batches holding our jobs, one line (and attempt) each.
    A remote batch's jobs are leased to it, not to a worker, until its lines are applied:
    a worker that dies leaves them to the next run's driver, never to lease recovery."""

    async def open_remote_batch(
        self, batch: RemoteBatch, starts: Sequence[AttemptStart]
    ) -> list[str]:
        """In one transaction: write the ``sending`` row of every start whose job is still
        leased to its worker, the remote batch's row (its ``line_count`` those rows), and
        lease those jobs to the remote batch. Returns the attempt ids written (none: no row)."""

    async def remote_batches(
        self, batch_ids: Sequence[str], *, unfinished_only: bool = False
    ) -> list[RemoteBatch]:
        """The remote batches of these batches (only those not ``done``), oldest first."""

    async def take_remote_batch(
        self, rb_id: str, worker_id: str, *, live_workers: Collection[str]
    ) -> RemoteBatch | None:
        """Make ``worker_id`` the remote batch's driver unless another of ``live_workers``
        drives it (or it is done); returns it as recorded, or ``None``."""

    async def advance_remote_batch(self, rb_id: str, change: RemoteChange) -> None:
        """Record what changed about a remote batch (its step, ids, status, counts)."""

    async def remote_lines(
        self, rb_id: str, attempt_ids: Sequence[str] | None = None
    ) -> list[RemoteLine]:
        """The remote batch's lines not settled yet (of ``attempt_ids`` only, if given)."""

    async def request_remote_cancel(self, batch_id: str) -> list[RemoteBatch]:
        """Mark the batch's unfinished remote batches to be cancelled; returns them."""

    async def remote_job_count(self, batch_ids: Sequence[str]) -> int:
        """How many jobs of these batches are lines of a remote batch not yet applied."""


@runtime_checkable
class Dialect(Protocol):
    """Which database this is: ``sqlite`` or ``postgresql`` (shared gates need a server)."""

    @property
    def dialect(self) -> str: ...
