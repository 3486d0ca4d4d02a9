"""A driver that stalls past its remote batch's lease makes no provider call once another
driver has taken the remote batch over.

The database goes away for driver A right after it recorded its input file as uploaded: its
lease keeper cannot renew, its lease passes, and driver B takes the remote batch over, looks
for it on the provider (there is none) and creates it. When A's database answers again, A
goes on towards creating it too: every line would run, and be paid, twice. Its creation is
fenced on the lease, which is B's now: A stops without calling the provider.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anyio
import pytest

from runner import app
from runner.models import JobState, RemoteStep, utcnow
from runner.remote import driver as driver_module
from runner.run.worker import RunOptions
from runner.sandbox import SandboxConfig
from runner.store import RemoteChange

from .conftest import ROUTE, MakeWorld
from .invariants import sandbox_batches
from .test_driver import checked, prompts, remote_rows

pytestmark = pytest.mark.anyio

#: Both drivers' lease on the remote batch (seconds).
LEASE = 3.0


class AwayAfterUpload:
    """Driver A's store: once A recorded its upload, A's reads of remote batches wait for
    ``reads_back`` and its changes to them for ``writes_back`` (its database is away)."""

    def __init__(self, store: Any) -> None:
        self._store = store
        self.away = anyio.Event()
        self.reads_back = anyio.Event()
        self.writes_back = anyio.Event()
        #: Reads of remote batches answered since the database came back for reads.
        self.reads_answered = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    async def remote_batches(self, *args: Any, **kwargs: Any) -> Any:
        if self.away.is_set():
            await self.reads_back.wait()
            self.reads_answered += 1
        return await self._store.remote_batches(*args, **kwargs)

    async def advance_remote_batch(self, rb_id: str, change: RemoteChange, **kwargs: Any) -> Any:
        if self.away.is_set():
            await self.writes_back.wait()
        kept = await self._store.advance_remote_batch(rb_id, change, **kwargs)
        if change.step is RemoteStep.UPLOADED:
            self.away.set()
        return kept


async def _until(condition: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    with anyio.fail_after(timeout):
        while not condition():
            await anyio.sleep(0.02)
    assert condition(), what


async def test_a_driver_taken_over_while_its_database_was_away_creates_no_second_batch(
    world: MakeWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    w = world(SandboxConfig(batch_window=20.0))
    batch = await w.submit(prompts(3), ROUTE)
    sandbox = w.handle.sandbox
    stores: list[AwayAfterUpload] = []
    original = driver_module.remote_driver

    def first_driver_loses_its_database(**kwargs: Any) -> Any:
        if not stores:
            stores.append(AwayAfterUpload(kwargs["store"]))
            kwargs["store"] = stores[0]
        return original(**kwargs)

    monkeypatch.setattr(driver_module, "remote_driver", first_driver_loses_its_database)
    options = RunOptions(
        retry_scale=0.0, handle_signals=False, grace_seconds=0.0, lease_seconds=LEASE
    )
    results: list[app.RunResult] = []

    async def run() -> None:
        results.append(await app.run(w.settings(), [], options))

    async with anyio.create_task_group() as group:
        group.start_soon(run)
        await _until(lambda: bool(stores) and stores[0].away.is_set(), "A never uploaded")
        away = stores[0]
        with anyio.fail_after(60):
            while True:
                (rb,) = await remote_rows(w, batch)
                assert rb.lease_expires is not None
                if rb.lease_expires < utcnow():
                    break
                await anyio.sleep(0.1)
        assert (rb.step, rb.remote_id) == (RemoteStep.UPLOADED, None)

        group.start_soon(run)  # driver B, whose database is there
        await _until(lambda: len(sandbox_batches(sandbox)) == 1, "B never created the batch")

        away.reads_back.set()  # A learns it is not cancelled, and goes on to create it
        await _until(lambda: away.reads_answered > 0, "A never read again")
        with anyio.move_on_after(3.0):
            while len(sandbox_batches(sandbox)) == 1:
                await anyio.sleep(0.02)
        away.writes_back.set()
        # Both runs end once B has applied the remote batch.

    assert len(results) == 2
    assert len(sandbox_batches(sandbox)) == 1, "A created a second remote batch"
    (rb,) = await checked(w, batch)
    assert rb.step is RemoteStep.DONE
    assert (await w.rows(batch)).states() == {JobState.SUCCEEDED.value: 3}
