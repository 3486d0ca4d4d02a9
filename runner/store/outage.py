"""When the database goes away: which failures are transient, and how long they are waited out.

A PostgreSQL restart or network blip, or a SQLite file another process holds locked past the
busy timeout, fails a statement without anything having been done. Such failures are
translated at the boundary into :class:`runner.errors.StoreUnavailable` and the verb is run
again with capped, jittered exponential backoff (stamina) until :attr:`OutagePolicy.timeout`
has passed; then the error reaches the caller. Every other database error is left as it is.
"""

from __future__ import annotations

import functools
import logging
import os
import time
from collections.abc import AsyncIterable, Awaitable, Callable, Coroutine, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, Protocol, TypeVar

from sqlalchemy.exc import DBAPIError

from runner.errors import StoreError, StoreUnavailable, Translating

if TYPE_CHECKING:
    from stamina import Attempt
    from stamina.instrumentation import RetryDetails

P = ParamSpec("P")
T = TypeVar("T")

#: Environment variable: seconds a database outage is waited out before the run stops.
OUTAGE_ENV = "IMAGERUN_DB_OUTAGE_S"
#: SQLSTATE classes and codes that mean "not now": connection exceptions, the server shutting
#: down or starting up, too many connections, and a transaction the server chose to abort
#: (serialisation failure, deadlock) that succeeds when run again.
_TRANSIENT_SQLSTATES = ("08", "57P01", "57P02", "57P03", "53300", "40001", "40P01")
#: SQLite's words for a file another connection holds (after its busy timeout ran out).
_SQLITE_BUSY = ("database is locked", "database table is locked", "database is busy")


_log = logging.getLogger("runner.store")
#: Seconds between two notes that the database is away (every waiting verb reports its wait).
_NOTE_EVERY = 10.0
_last_note = -_NOTE_EVERY
_hooked = False


def _note_wait(details: RetryDetails) -> None:
    """Say once in a while that the run is waiting for the database (not once per verb)."""
    global _last_note
    if not isinstance(details.caused_by, StoreUnavailable):
        return
    now = time.monotonic()
    if now - _last_note >= _NOTE_EVERY:
        _last_note = now
        _log.warning("waiting for the database: %s", details.caused_by)


def _hook_once() -> None:
    """Our note instead of stamina's log line per retry (its logger is quietened)."""
    global _hooked
    if not _hooked:
        import stamina.instrumentation

        _hooked = True
        logging.getLogger("stamina").setLevel(logging.ERROR)
        hooks = stamina.instrumentation.get_on_retry_hooks()
        stamina.instrumentation.set_on_retry_hooks([*hooks, _note_wait])


def _causes(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        orig = getattr(current, "orig", None)
        current = orig if isinstance(orig, BaseException) else current.__cause__


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` says the database is away for now (trying again later may succeed)."""
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    for cause in _causes(exc):
        if isinstance(cause, OSError | TimeoutError):  # refused, reset, unreachable
            return True
        state = getattr(cause, "sqlstate", None) or getattr(cause, "pgcode", None)
        if isinstance(state, str) and state.startswith(_TRANSIENT_SQLSTATES):
            return True
        module = type(cause).__module__
        if module.startswith("asyncpg") and "connection" in str(cause).lower():
            return True  # asyncpg's InterfaceError: "the underlying connection is closed"
        if module.startswith("sqlite3") and any(w in str(cause) for w in _SQLITE_BUSY):
            return True
    return False


def translated(where: str) -> _Translated:
    """Raise a transient failure inside the block as :class:`StoreUnavailable`, cause chained."""
    return _Translated(where)


class _Translated(Translating):
    """:func:`translated`'s block (around every commit and claim)."""

    __slots__ = ("_where",)

    def __init__(self, where: str) -> None:
        self._where = where

    def translate(self, exc: BaseException) -> StoreUnavailable | None:
        if isinstance(exc, Exception) and not isinstance(exc, StoreError) and is_transient(exc):
            return StoreUnavailable(f"the database {self._where} is unreachable: {_said(exc)}")
        return None


def _said(exc: BaseException) -> str:
    """The driver's own words, without the SQL statement SQLAlchemy appends."""
    said = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    first = (str(said).strip().splitlines() or [""])[0]
    return f"{type(said).__name__}: {first}" if first else type(said).__name__


@dataclass(frozen=True, slots=True, kw_only=True)
class OutagePolicy:
    """How a verb waits out a database outage (stamina's knobs, by the same names).

    ``timeout`` bounds the whole wait: a restart or blip shorter than it is invisible to the
    run (requests in flight finish; their results wait in memory until they commit).
    """

    timeout: float = 60.0
    wait_initial: float = 0.05
    wait_max: float = 2.0
    wait_jitter: float = 0.25

    @classmethod
    def from_environ(cls) -> OutagePolicy:
        """The default policy, with ``timeout`` from ``IMAGERUN_DB_OUTAGE_S`` when set."""
        raw = os.environ.get(OUTAGE_ENV, "").strip()
        return cls(timeout=float(raw)) if raw else cls()

    def attempts(self, *, timeout: float | None = None) -> AsyncIterable[Attempt]:
        """Attempts (``async for``, then ``with attempt:``) retried on :class:`StoreUnavailable`."""
        import stamina  # with tenacity, only once the database has failed a verb

        _hook_once()
        return stamina.retry_context(
            on=StoreUnavailable,
            attempts=None,
            timeout=self.timeout if timeout is None else timeout,
            wait_initial=self.wait_initial,
            wait_max=self.wait_max,
            wait_jitter=self.wait_jitter,
        )


class _Retrying(Protocol):
    async def retrying(
        self, fn: Callable[P, Awaitable[T]], *args: P.args, **kwargs: P.kwargs
    ) -> T: ...


class _HasDatabase(Protocol):
    @property
    def db(self) -> _Retrying: ...


S = TypeVar("S", bound=_HasDatabase)


def retried(
    verb: Callable[Concatenate[S, P], Awaitable[T]],
) -> Callable[Concatenate[S, P], Coroutine[Any, Any, T]]:
    """Run the store verb again while the database is unavailable (see :class:`OutagePolicy`).

    Only for verbs that are one transaction and safe to run again: a failure before COMMIT
    left nothing behind, and one during COMMIT (rare) must do no harm when repeated.
    """

    @functools.wraps(verb)
    async def wrapper(self: S, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return await self.db.retrying(verb, self, *args, **kwargs)

    return wrapper
