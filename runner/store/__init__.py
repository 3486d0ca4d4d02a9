"""The job store: imagerun's queue and ledger in SQLite or PostgreSQL.

The store speaks domain verbs; its tables never leave this package. Each role a consumer needs
is a protocol in :mod:`runner.abc`, documented there; :class:`Store` plays all of them, one
mixin module per role, over one :class:`Database`:

- ``database``: the engine, and on SQLite the writer lock, sync twin and writer thread;
  ``engine``: how each dialect is configured; ``outage``: which failures mean "the database is
  away for now" (:class:`runner.errors.StoreUnavailable`) and how long they are waited out.
- ``queue`` (:class:`~runner.abc.Queue`), ``leases`` (claims, heartbeats and
  :class:`~runner.abc.LeaseRecovery`), ``ledger`` (:class:`~runner.abc.Ledger`, one
  transaction per verb) and ``groupcommit`` (the same verbs committed in groups for a run),
  ``workers``, ``budgets`` (grants), ``routestate`` and ``pace`` (shared by every worker),
  ``remote`` (remote batches),
  ``recovery`` (orphan adoption), ``charges``, ``costs`` (spend reports), ``repricing``,
  ``reports``, ``exports``.

One implementation serves both dialects; the few places they differ (claiming with
``FOR UPDATE SKIP LOCKED``, SQLite's immediate transactions) are marked where they happen.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from runner.errors import StoreError
from runner.store.budgets import BudgetOps
from runner.store.charges import ChargeOps
from runner.store.costs import CostOps
from runner.store.database import Database
from runner.store.exports import ExportOps
from runner.store.groupcommit import LedgerWriter
from runner.store.leases import LeaseOps
from runner.store.ledger import LeaseLost, LedgerOps
from runner.store.pace import PaceOps
from runner.store.queue import QueueOps
from runner.store.records import (
    AttemptResult,
    AttemptStart,
    BatchInfo,
    BatchStatus,
    EnqueueResult,
    OutputRecord,
    RateSlot,
    Recovery,
    RemoteBatch,
    RemoteLine,
)
from runner.store.recovery import RecoveryOps
from runner.store.remote import RemoteChange, RemoteOps
from runner.store.reports import ReportOps
from runner.store.repricing import RepricingOps
from runner.store.routestate import RouteStateOps
from runner.store.tables import SCHEMA_REVISION
from runner.store.workers import WorkerInfo, WorkerOps


class Store(
    QueueOps,
    LeaseOps,
    LedgerOps,
    ReportOps,
    WorkerOps,
    ExportOps,
    RecoveryOps,
    RouteStateOps,
    PaceOps,
    ChargeOps,
    CostOps,
    RepricingOps,
    BudgetOps,
    RemoteOps,
):
    """imagerun's database, as the verbs of every role in :mod:`runner.abc`.

    Open with :meth:`open`; close with :meth:`close`.

    Args:
        db: the database the verbs run on (the store closes it).
    """

    def __init__(self, db: Database) -> None:
        self.db = db
        self.url = db.url
        self.engine = db.engine
        self.dialect = db.dialect

    @classmethod
    async def open(cls, url: str, *, migrate: bool = True) -> Store:
        """Connect, applying migrations first unless ``migrate`` is false."""
        store = cls(Database(url))
        if migrate:
            try:
                if not await store._schema_is_current():
                    from runner.store.migrate import upgrade_async  # Alembic: only when needed

                    await upgrade_async(store.url)
            except SQLAlchemyError as exc:
                await store.close()
                raise StoreError(f"cannot open the database {store.safe_url}: {exc}") from exc
            except OSError as exc:
                await store.close()
                raise StoreError(f"cannot reach the database {store.safe_url}: {exc}") from exc
        return store

    async def _schema_is_current(self) -> bool:
        """Whether the database is already at the head revision (then Alembic is skipped).

        Running Alembic costs a few hundred milliseconds (its own engine and event loop in a
        thread), and importing it a further 0.15 s: either would dominate quick commands such
        as ``imagerun status``.
        """
        try:
            async with self.db.reading() as conn:
                current = await conn.scalar(text("SELECT version_num FROM alembic_version"))
        except SQLAlchemyError:
            return False  # a new database: no version table yet
        return bool(current == SCHEMA_REVISION)

    @property
    def safe_url(self) -> str:
        return self.db.safe_url

    def group_ledger(self) -> LedgerWriter:
        return LedgerWriter(self.db)

    async def close(self) -> None:
        await self.db.close()


if TYPE_CHECKING:  # mypy proves here that the store plays every role of runner.abc
    from typing import Protocol

    from runner import abc

    class _EveryRole(
        abc.Queue,
        abc.Leases,
        abc.Ledger,
        abc.GroupCommit,
        abc.Workers,
        abc.LeaseRecovery,
        abc.FileAdoption,
        abc.RouteState,
        abc.RoutePace,
        abc.BudgetGrants,
        abc.ChargePolicy,
        abc.Charges,
        abc.Costs,
        abc.Exports,
        abc.Reports,
        abc.RemoteBatches,
        abc.Dialect,
        Protocol,
    ):
        pass

    def _plays_every_role(store: Store) -> _EveryRole:
        return store


__all__ = [
    "AttemptResult",
    "AttemptStart",
    "BatchInfo",
    "BatchStatus",
    "Database",
    "EnqueueResult",
    "LeaseLost",
    "OutputRecord",
    "RateSlot",
    "Recovery",
    "RemoteBatch",
    "RemoteChange",
    "RemoteLine",
    "Store",
    "WorkerInfo",
]
