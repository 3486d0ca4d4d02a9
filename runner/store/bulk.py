"""Bulk enqueue helpers: insert parameters converted once per constant, a roomy SQLite cache.

A million-job ``submit`` spent a third of its time converting the same few values (``{}``,
``[]``, ``null``, one ``now``) for every row, and most of its system time rereading index
pages that did not fit SQLite's default page cache.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from typing import TYPE_CHECKING, Any

import anyio
from sqlalchemy import Column, Dialect, column, table, text

from runner.models import JobSpec, JobState
from runner.store.tables import jobs

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection

#: SQLite page cache while enqueueing (KiB); SQLite's default is 2 MiB.
ENQUEUE_CACHE_KIB = 64 * 1024


@asynccontextmanager
async def roomy_cache(conn: AsyncConnection) -> AsyncIterator[None]:
    """A bigger SQLite page cache for one bulk enqueue (nothing on PostgreSQL).

    The random job keys make the key index of a million jobs far larger than SQLite's default
    2 MiB cache, and each insert then rereads index pages from the OS.
    """
    if conn.dialect.name != "sqlite":
        yield
        return
    default = await conn.scalar(text("PRAGMA cache_size"))
    await conn.exec_driver_sql(f"PRAGMA cache_size=-{ENQUEUE_CACHE_KIB}")
    try:
        yield
    finally:
        with anyio.CancelScope(shield=True):
            await conn.exec_driver_sql(f"PRAGMA cache_size={int(default)}")


#: ``jobs`` without column types, for enqueueing rows whose values :class:`JobRows` has
#: already converted for the database.
jobs_raw = table("jobs", *(column(c.name) for c in jobs.c))


class JobRows:
    """Insert parameters for new jobs, each distinct constant converted once.

    Values go through the columns' own bind processors, so what is stored is unchanged.
    """

    def __init__(self, dialect: Dialect, batch_id: str, now: datetime) -> None:
        self._json = _processor(jobs.c.params, dialect)
        when = _processor(jobs.c.created_at, dialect)(now)
        self._fixed = {
            "batch_id": batch_id,
            "state": JobState.QUEUED.value,
            "attempts": 0,
            "created_at": when,
            "updated_at": when,
        }
        empty: tuple[Any, ...] = ({}, [], None)
        self._empty = {type(v): self._json(v) for v in empty}

    def _encode(self, value: Any) -> Any:
        # Most jobs have no params, sources, mask or metadata: those are converted once.
        return self._empty[type(value)] if not value else self._json(value)

    def row(self, spec: JobSpec) -> dict[str, Any]:
        return {
            **self._fixed,
            "key": spec.key,
            "ext_id": spec.ext_id,
            "line": spec.line,
            "prompt": spec.prompt,
            "params": self._encode(spec.params),
            "images": self._encode([i.to_json() for i in spec.images]),
            "mask": self._encode(spec.mask.to_json() if spec.mask else None),
            "meta": self._encode(spec.metadata),
        }


def _processor(col: Column[Any], dialect: Dialect) -> Callable[[Any], Any]:
    process = col.type.dialect_impl(dialect).bind_processor(dialect)
    return process if process is not None else _same


def _same(value: Any) -> Any:
    return value
