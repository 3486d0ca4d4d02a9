"""The run loop's seams: the queue, leases, the ledger, the worker registry, lease recovery,
orphan adoption and remote batches."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import anyio
from anyio.abc import TaskStatus

if TYPE_CHECKING:  # records only: the seams import nothing of imagerun at run time
    from runner.files.adopt import JobFiles
    from runner.models import Job, JobSpec, JobState
    from runner.store.records import (
        AttemptResult,
        AttemptStart,
        BatchInfo,
        EnqueueResult,
        OutputRecord,
        Recovery,
        RemoteBatch,
        RemoteLine,
    )
    from runner.store.remote import RemoteChange
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
    ledger and the queue never disagree about what happened.
    """

    async def start_attempt(self, start: AttemptStart) -> None:
        """Record that a request is about to leave; returns once the row is committed.

        Raises:
            LeaseLost: the job is no longer leased to us; the request must not be sent.
        """

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
        """Wait until every finishing write made so far is committed.

        Raises:
            StoreError: a write nobody waited for failed.
        """


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
class RemoteBatches(Protocol):
    """Remote batches: a provider's batches holding our jobs, one line (and attempt) each.

    A remote batch's jobs are leased to it, not to a worker, until its lines are applied:
    a worker that dies leaves them to the next run's driver, never to lease recovery.
    """

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
        self, rb_id: str, worker_id: str, *, lease_seconds: float
    ) -> RemoteBatch | None:
        """Make ``worker_id`` the remote batch's driver for ``lease_seconds`` if it is free:
        not ended, and its driver's own lease passed (or that driver stopped, or it is
        ``worker_id`` already). Returns it as recorded, or ``None``."""

    async def advance_remote_batch(
        self, rb_id: str, change: RemoteChange, *, owner: str, lease_seconds: float
    ) -> bool:
        """Record what changed about a remote batch (its step, ids, status, counts) and renew
        ``owner``'s lease on it, only if ``owner`` still drives it; returns whether it did."""

    async def remote_lines(
        self, rb_id: str, attempt_ids: Sequence[str] | None = None
    ) -> list[RemoteLine]:
        """The remote batch's lines not settled yet (of ``attempt_ids`` only, if given)."""

    async def request_remote_cancel(self, batch_id: str) -> list[RemoteBatch]:
        """Mark the batch's unfinished remote batches to be cancelled; returns them."""

    async def remote_job_count(self, batch_ids: Sequence[str]) -> int:
        """How many jobs of these batches are lines of a remote batch not yet applied."""
