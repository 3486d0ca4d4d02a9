"""What every step of a remote batch's lifecycle works with (one per route lane of a run)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import anyio

from runner.abc import LeaseRecovery, Leases, Queue, RemoteBatches, Workers
from runner.errors import AttemptError
from runner.models import Job, Outcome
from runner.remote.client import RemoteClient
from runner.remote.lines import PlannedLine, plan_line
from runner.run.attempt import JobRunner
from runner.run.lane import Lane
from runner.run.spending import Reservation, exposure_of
from runner.run.stats import RunStats
from runner.shapes import LoadedImage
from runner.store import AttemptResult

#: Where a remote batch's input and result files are kept while it lives (under the data dir).
REMOTE_DIR = "remote"


class DriverStore(RemoteBatches, Leases, Queue, Workers, LeaseRecovery, Protocol):
    """What driving remote batches needs of the store."""


@dataclass(frozen=True, slots=True, kw_only=True)
class RemoteContext:
    """The store, the route's lane and client, and the run's job runner and stats."""

    store: DriverStore
    jobs: JobRunner
    lane: Lane
    remote: RemoteClient
    data_dir: Path
    worker_id: str
    stats: RunStats
    #: Set when the run stops: drivers leave their remote batches where they are.
    stopping: anyio.Event
    #: The budget reservation of each job in a remote batch this process opened.
    reservations: dict[int, Reservation] = field(default_factory=dict)

    def settled(self, job_id: int, result: AttemptResult | None) -> None:
        """A line's attempt ended (``None``: it never ran): its reservation settles."""
        reservation = self.reservations.pop(job_id, None)
        if reservation is None:
            return  # opened by an earlier process: its reservation went with it
        if result is None:
            reservation.cancel()
        else:
            reservation.settle(exposure_of(result))

    def path(self, rb_id: str, kind: str) -> Path:
        """The local file of a remote batch's ``kind`` (``input``, ``output``, ``error``)."""
        return self.data_dir / REMOTE_DIR / f"{rb_id}.{kind}.jsonl"

    async def plan(self, job: Job) -> PlannedLine:
        """``job``'s line: its sources loaded, its body built by the ``batch`` shape.

        Raises:
            AttemptError: a source image cannot be read (nothing was sent).
        """
        lane = self.lane
        images: list[LoadedImage] = [
            await lane.loader.load(s, need_bytes=False) for s in job.images
        ]
        mask = await lane.loader.load(job.mask, need_bytes=False) if job.mask else None
        prepared = lane.adapter.build(lane.route, job, images, mask)
        if prepared.json is None:
            raise AttemptError(Outcome.INVALID_REQUEST, "the batch shape builds JSON bodies only")
        return plan_line(prepared, images, mask, max_line_bytes=lane.route.batch_max_line_bytes)
