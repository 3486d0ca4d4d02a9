"""Worker registry: registration, heartbeats, listing, and expiring workers whose process died."""

from __future__ import annotations

import os
import subprocess

import pytest

from runner.models import JobState
from runner.store import Recovery, Store

from .factories import claim_all, job_row, specs, submit

pytestmark = pytest.mark.anyio

HOST = "render-01"


@pytest.fixture
def dead_pid() -> int:
    """The pid of a process that has exited and been reaped."""
    child = subprocess.Popen(["sleep", "0"])
    child.wait(timeout=10)
    return child.pid


async def test_a_registered_worker_is_listed_with_its_running_jobs(store: Store) -> None:
    batch = (await submit(store, "w", specs(3))).batch
    await store.register_worker("w1", HOST, 4242)
    await store.claim(worker_id="w1", batch_ids=[batch.id], limit=2, lease_seconds=600)

    [info] = await store.list_workers()

    assert (info.id, info.host, info.pid, info.stopped_at, info.running_jobs) == (
        "w1",
        HOST,
        4242,
        None,
        2,
    )
    assert info.started_at == info.heartbeat_at


async def test_worker_heartbeat_moves_its_heartbeat_forward(store: Store) -> None:
    await store.register_worker("w1", HOST, 4242)
    [before] = await store.list_workers()

    await store.worker_heartbeat("w1")

    [after] = await store.list_workers()
    assert after.heartbeat_at > before.heartbeat_at
    assert after.started_at == before.started_at


async def test_workers_silent_for_longer_than_live_within_are_not_listed(store: Store) -> None:
    await store.register_worker("w1", HOST, 4242)

    assert [w.id for w in await store.list_workers(live_within=3600)] == ["w1"]
    assert await store.list_workers(live_within=0) == []


async def test_a_stopped_worker_is_not_listed(store: Store) -> None:
    await store.register_worker("w1", HOST, 4242)
    await store.register_worker("w2", HOST, 4243)

    await store.stop_worker("w1")

    assert [w.id for w in await store.list_workers()] == ["w2"]


async def test_expire_dead_local_workers_frees_only_leases_of_dead_processes_here(
    store: Store, dead_pid: int
) -> None:
    batch = (await submit(store, "crash", specs(4))).batch
    await store.register_worker("dead-here", HOST, dead_pid)
    await store.register_worker("alive-here", HOST, os.getpid())
    await store.register_worker("elsewhere", "render-02", dead_pid)
    dead = await store.claim(
        worker_id="dead-here", batch_ids=[batch.id], limit=2, lease_seconds=600
    )
    for worker in ("alive-here", "elsewhere"):
        await store.claim(worker_id=worker, batch_ids=[batch.id], limit=1, lease_seconds=600)

    assert await store.expire_dead_local_workers(HOST) == 1

    assert await store.recover_expired() == Recovery(requeued=2)
    assert {(await job_row(store, j.id)).state for j in dead} == {JobState.QUEUED}
    assert sorted(w.id for w in await store.list_workers()) == ["alive-here", "elsewhere"]
    assert await store.count_states([batch.id]) == {JobState.QUEUED: 2, JobState.RUNNING: 2}
    assert [j.id for j in await claim_all(store, batch.id, "w-new")] == [j.id for j in dead]
    assert await store.expire_dead_local_workers(HOST) == 0
