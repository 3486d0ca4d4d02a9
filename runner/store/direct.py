"""The ledger's hot statements on SQLite: compiled once by SQLAlchemy, run on the driver's cursor.

A run writes a start row before every request and a finish after it. Through
``Connection.execute`` each of those statements costs SQLAlchemy's per-call work (cache lookup,
execution context, parameter processing, result setup): about 0.1 ms of CPU, five to ten
times what SQLite itself spends, and the writer thread holds the GIL for all of it, so the
event loop (every request in flight) waits too. Here a statement is compiled once per
dialect and set of keys; each call converts the parameters with the columns' own bind
processors (the same conversions SQLAlchemy applies) and hands them to the DB-API cursor.

PostgreSQL, and any statement whose compiled form needs a value the rows do not carry (a
column default), go through ``Connection.execute`` as before. Driver errors are raised as
SQLAlchemy's exceptions, as ``execute`` would raise them.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql import Executable
from sqlalchemy.sql.dml import UpdateBase


@dataclass(frozen=True, slots=True)
class _Plan:
    sql: str
    #: The row's values of the positional parameters, in order (one C call for them all).
    pick: Callable[[Mapping[str, Any]], Sequence[Any]]
    #: The parameters that need converting (most do not): their position and bind processor.
    conversions: tuple[tuple[int, Callable[[Any], Any]], ...]

    def parameters(self, row: Mapping[str, Any]) -> Sequence[Any]:
        values = self.pick(row)
        if not self.conversions:
            return values
        converted = list(values)
        for at, convert in self.conversions:
            converted[at] = convert(converted[at])
        return converted


def _picker(keys: Sequence[str]) -> Callable[[Mapping[str, Any]], Sequence[Any]]:
    if not keys:
        return lambda row: ()
    if len(keys) == 1:  # an itemgetter of one key returns the value, not a tuple of it
        (key,) = keys
        return lambda row: (row[key],)
    return operator.itemgetter(*keys)


#: (statement, row keys, driver) → its plan, or ``None`` where ``execute`` must do it.
_PLANS: dict[tuple[int, tuple[str, ...], str], _Plan | None] = {}


def _plan(statement: Executable, keys: tuple[str, ...], dialect: Dialect) -> _Plan | None:
    cache_key = (id(statement), keys, dialect.driver)
    if cache_key in _PLANS:
        return _PLANS[cache_key]
    compiled = statement.compile(dialect=dialect, column_keys=list(keys))  # type: ignore[attr-defined]
    names = compiled.positiontup or []
    plan = None
    if compiled.positional and set(names) <= set(keys):
        # The dialect's own type (SQLite's DATETIME text format, its JSON serialiser), as
        # SQLAlchemy's execution uses: the generic type's processor would leave datetimes
        # to the driver's adapter, which writes another text.
        processors = [
            compiled.binds[n].type.dialect_impl(dialect).bind_processor(dialect) for n in names
        ]
        conversions = tuple((at, p) for at, p in enumerate(processors) if p is not None)
        plan = _Plan(sql=compiled.string, pick=_picker(names), conversions=conversions)
    # Statements are module-level constants, so their ids stay theirs for the process.
    _PLANS[cache_key] = plan
    return plan


def execute_many(
    conn: Connection, statement: UpdateBase, rows: Sequence[Mapping[str, Any]]
) -> None:
    """``conn.execute(statement, rows)`` (every row with the same keys), cheaper on SQLite.

    ``statement`` must live as long as the process (a module-level constant).
    """
    if not rows:
        return
    plan = None
    if conn.dialect.name == "sqlite":
        plan = _plan(statement, tuple(rows[0]), conn.dialect)
    if plan is None:
        conn.execute(statement, list(rows))
        return
    _run(conn, plan.sql, [plan.parameters(row) for row in rows], many=True, fetch=False)


def fetch_each(
    conn: Connection, statement: Executable, rows: Sequence[Mapping[str, Any]]
) -> list[tuple[Any, ...]] | None:
    """On SQLite, the rows ``statement`` selects for each parameter set in ``rows``, as the
    driver returns them (no result conversion: for columns stored as they are read); else
    ``None`` (one query with all the keys costs less than a round trip each there).
    """
    if conn.dialect.name != "sqlite":
        return None
    if not rows:
        return []
    plan = _plan(statement, tuple(rows[0]), conn.dialect)
    if plan is None:
        return None
    dbapi = conn.dialect.loaded_dbapi
    cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    found: list[tuple[Any, ...]] = []
    parameters: Sequence[Any] = ()
    try:  # one cursor for every query (a cursor each cost as much as the query)
        for row in rows:
            parameters = plan.parameters(row)
            cursor.execute(plan.sql, parameters)
            found.extend(cursor.fetchall())
    except dbapi.Error as exc:
        raise DBAPIError.instance(
            plan.sql, parameters, exc, dbapi.Error, dialect=conn.dialect, ismulti=False
        ) from exc
    finally:
        cursor.close()
    return found


def execute_driver(conn: Connection, sql: str) -> None:
    """Run ``sql`` (no parameters, no result) on the driver's cursor of ``conn``."""
    _run(conn, sql, (), many=False, fetch=False)


def _run(
    conn: Connection, sql: str, parameters: Any, *, many: bool, fetch: bool
) -> list[tuple[Any, ...]]:
    dbapi = conn.dialect.loaded_dbapi
    cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        if many:
            cursor.executemany(sql, parameters)
        else:
            cursor.execute(sql, parameters)
        return list(cursor.fetchall()) if fetch else []
    except dbapi.Error as exc:
        raise DBAPIError.instance(
            sql, parameters, exc, dbapi.Error, dialect=conn.dialect, ismulti=many
        ) from exc
    finally:
        cursor.close()
