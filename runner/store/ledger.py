"""Ledger verbs: an attempt row is written before its request leaves and finished after.

Each finishing verb closes the attempt *and* moves its job in one transaction, so the ledger
and the queue never disagree about what happened.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import (
    Connection,
    Update,
    bindparam,
    exists,
    func,
    insert,
    literal,
    or_,
    select,
    update,
)

from runner.errors import StoreError
from runner.models import AttemptState, ChargeEvidence, ChargeStatus, JobState, Outcome, utcnow
from runner.store.database import Database
from runner.store.direct import execute_many, fetch_each
from runner.store.outage import retried
from runner.store.records import AttemptResult, AttemptStart, OutputRecord
from runner.store.tables import attempts, jobs, outputs

W = TypeVar("W")


class LeaseLost(StoreError):
    """The job is no longer leased to this worker (it was recovered elsewhere); do not send."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Finish:
    """How one attempt ended and where its job goes next (one row of a finishing write)."""

    job_id: int
    state: JobState
    result: AttemptResult | None = None
    next_at: datetime | None = None
    files: Sequence[OutputRecord] = ()

    @property
    def finished(self) -> bool:
        return self.state in (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED)


class FinishVerbs:
    """The verbs that end an attempt, each one :class:`Finish` row; a subclass writes it."""

    async def _finish(self, finish: Finish) -> None:
        raise NotImplementedError

    async def complete(self, result: AttemptResult, files: Sequence[OutputRecord]) -> None:
        await self._finish(
            Finish(job_id=result.job_id, state=JobState.SUCCEEDED, result=result, files=files)
        )

    async def retry_later(self, result: AttemptResult, at: datetime) -> None:
        await self._finish(
            Finish(job_id=result.job_id, state=JobState.WAITING, result=result, next_at=at)
        )

    async def fail(self, result: AttemptResult, files: Sequence[OutputRecord] = ()) -> None:
        await self._finish(
            Finish(job_id=result.job_id, state=JobState.FAILED, result=result, files=files)
        )

    async def release(self, result: AttemptResult | None, job_id: int, state: JobState) -> None:
        await self._finish(Finish(job_id=job_id, state=state, result=result))


class LedgerOps(FinishVerbs):
    """The :class:`runner.abc.Ledger` verbs, one transaction each, and the rest of
    :class:`runner.abc.Leases`. Mixed into :class:`runner.store.Store`.

    :class:`runner.store.groupcommit.LedgerWriter` offers the same ledger verbs with many
    callers' writes committed together.
    """

    db: Database

    async def flush(self) -> None:
        return None  # every verb here is committed before it returns

    @retried
    async def start_attempt(self, start: AttemptStart) -> None:
        async with self.db.writing() as conn:
            (lost,) = await conn.run_sync(apply_starts, [start])
        if lost is not None:
            raise lost

    @retried
    async def _finish(self, finish: Finish) -> None:
        async with self.db.writing() as conn:
            await conn.run_sync(apply_finishes, [finish])

    @retried
    async def fail_unsent(self, job_id: int, outcome: str, message: str) -> None:
        now = utcnow()
        async with self.db.writing() as conn:
            await conn.execute(
                update(jobs)
                .where(jobs.c.id == job_id)
                .values(
                    state=JobState.FAILED.value,
                    lease_owner=None,
                    lease_expires=None,
                    last_outcome=outcome,
                    last_error=message,
                    updated_at=now,
                    finished_at=now,
                )
            )

    @retried
    async def release_unstarted(self, worker_id: str, job_ids: Sequence[int]) -> int:
        if not job_ids:
            return 0
        async with self.db.writing() as conn:
            result = await conn.execute(
                update(jobs)
                .where(
                    jobs.c.id.in_(list(job_ids)),
                    jobs.c.lease_owner == worker_id,
                    jobs.c.state == JobState.RUNNING.value,
                    # A job with a request possibly out is left for recovery to judge.
                    ~exists().where(
                        attempts.c.job_id == jobs.c.id,
                        attempts.c.state == AttemptState.SENDING.value,
                    ),
                )
                .values(
                    state=JobState.QUEUED.value,
                    lease_owner=None,
                    lease_expires=None,
                    updated_at=utcnow(),
                )
            )
            return int(result.rowcount)


def apply_starts(conn: Connection, starts: Sequence[AttemptStart]) -> list[LeaseLost | None]:
    """Write ``sending`` rows for every start whose job is still leased to its worker.

    Returns, per start, ``None`` when written or the :class:`LeaseLost` to raise.
    """
    if len(starts) == 1 and conn.dialect.name == "postgresql":
        return [_start_alone(conn, starts[0])]
    current = _leases(conn, [s.job_id for s in starts])
    verdicts: list[LeaseLost | None] = []
    bumps, inserts = [], []
    for start in starts:
        attempts_so_far, owner, state = current.get(start.job_id, (0, None, None))
        if owner != start.worker_id or state != JobState.RUNNING:
            verdicts.append(
                LeaseLost(f"job {start.job_id} is no longer leased to {start.worker_id}")
            )
            continue
        verdicts.append(None)
        number = attempts_so_far + 1
        bumps.append({"b_id": start.job_id, "b_n": number, "b_at": start.started_at})
        inserts.append(
            {
                **_shallow(start),
                "number": number,
                "state": AttemptState.SENDING.value,
                "charge_status": ChargeStatus.UNKNOWN.value,
                "charge_evidence": ChargeEvidence.POLICY.value,
            }
        )
    if bumps:
        execute_many(conn, _BUMP, bumps)
        execute_many(conn, _INSERT_ATTEMPT, inserts)
    return verdicts


def _start_alone(conn: Connection, start: AttemptStart) -> LeaseLost | None:
    """One start as one statement (PostgreSQL): the lease checked, the job's attempts counted
    and the row inserted in a single round trip instead of three. A paced route's starts come
    one at a time, and each waits for this before its request leaves."""
    binds = {f"s_{name}": value for name, value in _shallow(start).items()}
    if conn.execute(_START_ALONE, binds).first() is None:
        return LeaseLost(f"job {start.job_id} is no longer leased to {start.worker_id}")
    return None


def _leases(conn: Connection, ids: list[int]) -> dict[int, tuple[int, str | None, str]]:
    """Per job id: its attempts so far, its lease owner and its state."""
    rows = fetch_each(conn, _LEASE_OF, [{"b_id": i} for i in ids])
    if rows is None:  # PostgreSQL: locked, so that no recovery takes a lease back meanwhile
        rows = [tuple(r) for r in conn.execute(_LEASES_LOCKED, {"ids": ids})]
    return {r[0]: (r[1], r[2], r[3]) for r in rows}


def unapplied(
    conn: Connection, items: Sequence[W], *, key: Callable[[W], AttemptStart | Finish]
) -> list[W]:
    """The items whose write is not in the database yet.

    For a group committed again after a failure that may have come once its COMMIT had taken
    effect (the connection lost while committing): a start whose row exists, or a finish whose
    attempt is closed with our outcome, was written then.
    """
    writes = [key(item) for item in items]
    ids = {w.id for w in writes if isinstance(w, AttemptStart)}
    ids |= {w.result.id for w in writes if isinstance(w, Finish) and w.result is not None}
    if not ids:
        return list(items)
    rows = conn.execute(
        select(attempts.c.id, attempts.c.state, attempts.c.outcome).where(
            attempts.c.id.in_(sorted(ids))
        )
    ).all()
    # An attempt recovery closed as lost meanwhile is still ours to finish.
    done = {r.id for r in rows if r.state == AttemptState.DONE and r.outcome != Outcome.LOST}
    present = {r.id for r in rows}
    kept = []
    for item, w in zip(items, writes, strict=True):
        if isinstance(w, AttemptStart):
            written = w.id in present
        else:
            written = w.result is not None and w.result.id in done
        if not written:
            kept.append(item)
    return kept


_BUMP = (
    update(jobs)
    .where(jobs.c.id == bindparam("b_id"))
    .values(
        attempts=bindparam("b_n"),
        first_attempt_at=func.coalesce(jobs.c.first_attempt_at, bindparam("b_at")),
        updated_at=bindparam("b_at"),
    )
)

_LEASE_COLUMNS = (jobs.c.id, jobs.c.attempts, jobs.c.lease_owner, jobs.c.state)
_LEASE_OF = select(*_LEASE_COLUMNS).where(jobs.c.id == bindparam("b_id"))
_LEASES_LOCKED = (
    select(*_LEASE_COLUMNS).where(jobs.c.id.in_(bindparam("ids", expanding=True))).with_for_update()
)
_INSERT_ATTEMPT = insert(attempts)
_START_FIELDS = tuple(f.name for f in fields(AttemptStart))
#: PostgreSQL: the job's attempts bumped if it is still leased to the worker, and the
#: ``sending`` row inserted with the new number; no row comes back when the lease is lost.
_BUMPED = (
    update(jobs)
    .where(
        jobs.c.id == bindparam("s_job_id"),
        jobs.c.lease_owner == bindparam("s_worker_id"),
        jobs.c.state == JobState.RUNNING.value,
    )
    .values(
        attempts=jobs.c.attempts + 1,
        first_attempt_at=func.coalesce(jobs.c.first_attempt_at, bindparam("s_started_at")),
        updated_at=bindparam("s_started_at"),
    )
    .returning(jobs.c.attempts)
    .cte("bumped")
)
_START_ALONE = (
    insert(attempts)
    .from_select(
        [*_START_FIELDS, "number", "state", "charge_status", "charge_evidence"],
        select(
            *(bindparam(f"s_{name}", type_=attempts.c[name].type) for name in _START_FIELDS),
            _BUMPED.c.attempts,
            literal(AttemptState.SENDING.value),
            literal(ChargeStatus.UNKNOWN.value),
            literal(ChargeEvidence.POLICY.value),
        ),
    )
    .returning(attempts.c.id)
)
#: An attempt still ours to finish: ``sending``, or closed as lost by recovery.
_OPEN_OF = select(attempts.c.id).where(
    attempts.c.id == bindparam("b_id"),
    or_(attempts.c.state == bindparam("b_sending"), attempts.c.outcome == bindparam("b_lost")),
)
_INSERT_OUTPUT = insert(outputs)
_FINISH_ATTEMPT = update(attempts).where(attempts.c.id == bindparam("b_id"))
_MOVE_JOB = update(jobs).where(jobs.c.id == bindparam("b_id"))


def apply_finishes(conn: Connection, finishes: Sequence[Finish]) -> None:
    """Close the attempts, record the outputs and move the jobs of ``finishes`` (executemany).

    Only attempts still open are finished: ``sending``, or closed as lost by recovery (still
    ours to finish with what really happened). A finish for an attempt already closed
    otherwise (a remote batch's line applied a second time) writes nothing: neither its
    attempt, nor its outputs, nor its job's move.
    """
    finishes = _still_open(conn, finishes)
    if not finishes:
        return
    closed = [_attempt_values(f.result) for f in finishes if f.result is not None]
    if closed:
        execute_many(conn, _setting(_FINISH_ATTEMPT, tuple(closed[0])), closed)
    files = [_shallow(record) for f in finishes for record in f.files]
    if files:
        execute_many(conn, _INSERT_OUTPUT, files)
    moves = [_job_values(f) for f in finishes]
    execute_many(conn, _setting(_MOVE_JOB, tuple(moves[0])), moves)


def _still_open(conn: Connection, finishes: Sequence[Finish]) -> Sequence[Finish]:
    ids = [f.result.id for f in finishes if f.result is not None]
    if not ids:
        return finishes
    open_now = {"b_sending": AttemptState.SENDING.value, "b_lost": Outcome.LOST.value}
    rows = fetch_each(conn, _OPEN_OF, [{"b_id": i, **open_now} for i in ids])
    if rows is not None:
        still = {r[0] for r in rows}
    else:
        query = select(attempts.c.id).where(
            attempts.c.id.in_(ids),
            or_(
                attempts.c.state == AttemptState.SENDING.value,
                attempts.c.outcome == Outcome.LOST.value,
            ),
        )
        if conn.dialect.name == "postgresql":
            # Two finishes of one attempt in concurrent transactions: the second waits here
            # for the first to commit, then sees it closed.
            query = query.with_for_update()
        still = set(conn.scalars(query))
    if len(still) == len(ids):
        return finishes
    return [f for f in finishes if f.result is None or f.result.id in still]


@functools.cache
def _setting(statement: Update, keys: tuple[str, ...]) -> Update:
    """``statement`` SET column = :v_column for an executemany (bind names may not equal
    column names); built once per shape, so SQLAlchemy's statement cache hits every time."""
    return statement.values({k.removeprefix("v_"): bindparam(k) for k in keys if k != "b_id"})


def _shallow(record: Any) -> dict[str, Any]:
    """A dataclass's fields as a dict, values not copied (``asdict`` deep-copies every one)."""
    return {name: getattr(record, name) for name in _field_names(type(record))}


_FIELD_NAMES: dict[type, tuple[str, ...]] = {}


def _field_names(cls: type) -> tuple[str, ...]:
    names = _FIELD_NAMES.get(cls)
    if names is None:
        names = _FIELD_NAMES[cls] = tuple(f.name for f in fields(cls))
    return names


#: The fields of a finished attempt's row and their bind names (``id`` is the row's key).
_RESULT_BINDS = tuple(
    (f.name, f"v_{f.name}") for f in fields(AttemptResult) if f.name not in ("id", "job_id")
)
_DONE = AttemptState.DONE.value


def _attempt_values(result: AttemptResult) -> dict[str, Any]:
    values = {"b_id": result.id}
    values.update({bind: getattr(result, name) for name, bind in _RESULT_BINDS})
    values["v_outcome"] = result.outcome.value
    values["v_charge_status"] = result.charge_status.value
    values["v_charge_evidence"] = result.charge_evidence.value
    values["v_state"] = _DONE
    return values


def _job_values(finish: Finish) -> dict[str, Any]:
    result = finish.result
    at = result.finished_at if result is not None else utcnow()
    return {
        "b_id": finish.job_id,
        "v_state": finish.state.value,
        "v_next_at": finish.next_at,
        "v_lease_owner": None,
        "v_lease_expires": None,
        "v_last_outcome": result.outcome.value if result is not None else None,
        "v_last_error": result.error_message if result is not None else None,
        "v_updated_at": at,
        "v_finished_at": at if finish.finished else None,
    }
