"""Reading the ledger of any database (PostgreSQL or SQLite) and the checks the scale tests share.

``tests.resume.invariants`` reads SQLite files with ``sqlite3``; here the same :class:`Ledger`
is read through SQLAlchemy, so one reader serves both databases. The checks know that outputs
are spread over several data directories (one per worker, as on separate machines).
"""

from __future__ import annotations

import hashlib
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import anyio
from PIL import Image
from sqlalchemy import Table, func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from runner.sandbox import RequestRecord
from runner.store.engine import create_engine
from runner.store.tables import attempts, jobs, outputs, workers
from tests.resume.invariants import RETRYABLE, Ledger

T = TypeVar("T")


def _query(url: str, read: Callable[[AsyncConnection], Awaitable[T]]) -> T:
    """Run ``read`` on a connection to ``url`` (from a test that is not async)."""

    async def run() -> T:
        engine = create_engine(url)
        try:
            async with engine.connect() as conn:
                return await read(conn)
        finally:
            await engine.dispose()

    return anyio.run(run)


def read_ledger(url: str) -> Ledger:
    """Jobs, attempts and outputs as plain dicts, from the database at ``url``."""

    async def read(conn: AsyncConnection) -> Ledger:
        async def rows(table: Table) -> list[dict[str, Any]]:
            return [dict(r._mapping) for r in await conn.execute(select(table))]

        return Ledger(
            jobs=await rows(jobs), attempts=await rows(attempts), outputs=await rows(outputs)
        )

    return _query(url, read)


def worker_ids(url: str) -> dict[int, str]:
    """Registered worker ids by pid."""

    async def read(conn: AsyncConnection) -> dict[int, str]:
        return {r.pid: r.id for r in await conn.execute(select(workers))}

    return _query(url, read)


def requests_by_worker(ledger: Ledger) -> Counter[str]:
    """How many attempts each worker made."""
    return Counter(a["worker_id"] for a in ledger.attempts)


def assert_each_job_once(ledger: Ledger, requests: Sequence[RequestRecord]) -> None:
    """Every job succeeded with exactly one request, and the sandbox log = the ledger, 1:1."""
    seen = [r.client_request_id for r in requests]
    assert len(seen) == len(set(seen)), "the provider saw one of our request ids twice"
    ours = {a["id"] for a in ledger.attempts}
    assert set(seen) == ours, (
        f"log and ledger differ: {len(set(seen) - ours)} requests unrecorded, "
        f"{len(ours - set(seen))} attempts never seen"
    )
    states = Counter(j["state"] for j in ledger.jobs)
    assert states == {"succeeded": len(ledger.jobs)}, states
    per_job = Counter(a["job_id"] for a in ledger.attempts)
    assert set(per_job.values()) == {1}, "a job was sent more than once"
    assert Counter(a["outcome"] for a in ledger.attempts) == {"ok": len(ledger.jobs)}
    assert {r.status for r in requests} == {200}


def assert_no_unexplained_resend(ledger: Ledger, requests: Sequence[RequestRecord]) -> None:
    """A job reached the provider twice only after a retryable outcome the ledger records."""
    seen = {r.client_request_id for r in requests}
    for job_id, tried in ledger.attempts_by_job().items():
        arrived = [a for a in tried if a["id"] in seen]
        for earlier in arrived[:-1]:
            assert earlier["outcome"] in RETRYABLE, (
                f"job {job_id} was sent again after {earlier['outcome']}"
            )


def check_outputs(ledger: Ledger, data_dirs: Iterable[Path]) -> dict[str, Path]:
    """Every recorded output is a verified file in exactly one worker's data directory.

    Returns the files on disk that no output records, by relative path (the caller decides
    which may exist: a worker killed between writing an image and recording it leaves one).
    """
    found: dict[str, list[Path]] = defaultdict(list)
    for root in data_dirs:
        for path in root.rglob("*") if root.is_dir() else ():
            if path.is_file():
                found[path.relative_to(root).as_posix()].append(root)
    doubled = {p: roots for p, roots in found.items() if len(roots) > 1}
    assert not doubled, f"the same output path in several data directories: {doubled}"
    for out in ledger.outputs:
        roots = found.get(out["path"])
        assert roots, f"recorded output {out['path']} is on no worker's disk"
        data = (roots[0] / out["path"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == out["sha256"], out["path"]
        with Image.open(roots[0] / out["path"]) as image:
            image.load()
            assert (image.width, image.height) == (out["width"], out["height"])
    succeeded = {j["id"] for j in ledger.jobs if j["state"] == "succeeded"}
    assert succeeded <= {o["job_id"] for o in ledger.outputs}, "a succeeded job has no output"
    recorded = {o["path"] for o in ledger.outputs}
    return {p: roots[0] / p for p, roots in found.items() if p not in recorded}


@dataclass(frozen=True, slots=True)
class Holdings:
    """What one worker has done and holds, read from the database."""

    attempts: int
    #: Jobs leased to it (claimed, running).
    leased: frozenset[int]
    #: Leased jobs with an attempt ``sending``: their request may have reached the provider.
    in_flight: frozenset[int]


def holdings(url: str, worker_id_prefix: str) -> Holdings:
    """The :class:`Holdings` of the worker whose id starts with ``worker_id_prefix``."""
    mine_job = jobs.c.lease_owner.startswith(worker_id_prefix)
    mine_attempt = attempts.c.worker_id.startswith(worker_id_prefix)

    async def read(conn: AsyncConnection) -> Holdings:
        made = await conn.scalar(select(func.count()).where(mine_attempt))
        leased = set(
            await conn.scalars(select(jobs.c.id).where(mine_job, jobs.c.state == "running"))
        )
        sending = set(
            await conn.scalars(
                select(attempts.c.job_id).where(mine_attempt, attempts.c.state == "sending")
            )
        )
        return Holdings(
            attempts=int(made or 0),
            leased=frozenset(leased),
            in_flight=frozenset(sending & leased),
        )

    return _query(url, read)
