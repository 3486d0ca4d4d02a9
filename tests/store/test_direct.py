"""Hot ledger statements on SQLite's cursor: stored exactly as SQLAlchemy stores them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, insert, select
from sqlalchemy.dialects import sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.types import TypeDecorator

from runner.store import ledger
from runner.store.direct import execute_many
from runner.store.engine import _configure_sqlite
from runner.store.tables import UTCDateTime, attempts, batches, metadata, outputs
from runner.store.tables import jobs as job_table

#: A module-level statement, as ``execute_many`` requires.
INSERT_OUTPUT = insert(outputs)


def _output(**changes: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "job_id": 1,
        "batch_id": "b1",
        "attempt_id": "ir-1",
        "k": 0,
        "path": "b1/1-0.png",
        "sha256": "0" * 64,
        "width": 64,
        "height": 48,
        "format": "png",
        "bytes": 123,
        "worker_id": None,
        "created_at": datetime(2026, 3, 1, 12, 30, 5, 123456, tzinfo=UTC),
        "asked": "1024x1024",
        "got": None,
        "edit_fidelity": 0.25,
        "edit_flag": None,
    }
    return {**row, **changes}


def test_rows_written_on_the_cursor_read_back_as_sqlalchemy_wrote_them(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'direct.db'}")
    metadata.create_all(engine)
    # Another zone on the way in, and a whole second: stored as UTC text either way.
    moment = datetime(2026, 3, 1, 16, 30, 5, tzinfo=timezone(timedelta(hours=2)))
    with engine.begin() as conn:
        conn.execute(INSERT_OUTPUT, [_output(k=0, created_at=moment)])
        execute_many(conn, INSERT_OUTPUT, [_output(k=1, created_at=moment), _output(k=2)])
    with engine.connect() as conn:
        rows = {r.k: r._asdict() for r in conn.execute(select(outputs))}
        raw = dict(conn.exec_driver_sql("SELECT k, created_at FROM outputs").all())
    engine.dispose()

    by_sqlalchemy, by_cursor = rows[0], rows[1]
    assert {**by_sqlalchemy, "id": None, "k": None} == {**by_cursor, "id": None, "k": None}
    assert raw[0] == raw[1]  # the same text in the file, not only the same value read back
    assert by_cursor["created_at"] == datetime(2026, 3, 1, 14, 30, 5, tzinfo=UTC)
    assert rows[2]["created_at"] == datetime(2026, 3, 1, 12, 30, 5, 123456, tzinfo=UTC)


def test_a_constraint_broken_on_the_cursor_raises_sqlalchemys_error(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'direct.db'}")
    metadata.create_all(engine)
    with pytest.raises(IntegrityError), engine.begin() as conn:
        execute_many(conn, INSERT_OUTPUT, [_output(), _output()])  # the same (job, k) twice
    with engine.connect() as conn:
        assert conn.execute(select(outputs)).all() == []  # the whole write rolled back
    engine.dispose()


@pytest.mark.parametrize(
    "moment",
    [
        datetime(2026, 3, 1, 16, 30, 5, tzinfo=timezone(timedelta(hours=2))),  # whole second
        datetime(2026, 3, 1, 12, 30, 5, 123456, tzinfo=UTC),
        datetime(1, 1, 1, tzinfo=UTC),
        datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
    ],
)
def test_datetimes_are_stored_as_the_text_sqlalchemys_sqlite_datetime_writes(
    moment: datetime,
) -> None:
    """Our one-step SQLite processor writes what the composed one (ours, then the dialect's
    DATETIME formatting) would: the text every reader of the file parses."""
    dialect = sqlite.dialect()
    ours = UTCDateTime().dialect_impl(dialect)
    composed = TypeDecorator.bind_processor(ours, dialect)
    assert ours.bind_processor(dialect)(moment) == composed(moment)
    assert ours.bind_processor(dialect)(None) is None
    with pytest.raises(ValueError, match="naive"):
        ours.bind_processor(dialect)(moment.replace(tzinfo=None))


def test_a_processor_binding_moments_in_turn_writes_each_ones_own_text() -> None:
    """The processor keeps the last value's text: a value bound again, and the one after
    it, each still get their own (the same moment in another zone is the same text)."""
    dialect = sqlite.dialect()
    ours = UTCDateTime().dialect_impl(dialect)
    composed = TypeDecorator.bind_processor(ours, dialect)
    process = ours.bind_processor(dialect)
    first = datetime(2026, 3, 1, 12, 30, 5, 123456, tzinfo=UTC)
    later = first + timedelta(microseconds=1)
    elsewhere = first.astimezone(timezone(timedelta(hours=-5)))
    order = [first, first, later, first, None, elsewhere, later, later]
    assert [process(m) for m in order] == [composed(m) for m in order]
    assert process(elsewhere) == process(first) == "2026-03-01 12:30:05.123456"


def _attempt(n: int, **changes: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "id": f"ir-{n}",
        "job_id": n,
        "batch_id": "b1",
        "number": 1,
        "worker_id": None,
        "route": "openai",
        "provider": "openai",
        "shape": "images",
        "endpoint": "/images/generations",
        "model": "gpt-image-2",
        "billing_unit": "tokens",
        "state": "sending",
        "outcome": None,
        "http_status": None,
        "provider_request_id": None,
        "gateway_request_id": None,
        "error_type": None,
        "error_code": None,
        "error_message": None,
        "retry_after": None,
        "started_at": datetime(2026, 3, 1, 16, 30, 5, tzinfo=timezone(timedelta(hours=2))),
        "finished_at": None,
        "latency_ms": None,
        "usage": None,
        "params": {"prompt": "a teapot, ünïcode, \u2028", "size": "1024x1024", "n": 1},
        "images_returned": None,
        "worst_case_usd": 0,  # an int in a Float column
        "expected_usd": None,
        "charge_status": "unknown",
        "charge_evidence": "none",
        "observed_usd": None,
        "remote_batch_id": None,
    }
    return {**row, **changes}


def _finish(n: int) -> dict[str, Any]:
    values = {
        "state": "done",
        "outcome": "ok",
        "http_status": 200,
        "provider_request_id": f"req_{n}",
        "finished_at": datetime(2026, 3, 1, 14, 30, 7, 250000, tzinfo=UTC),
        "latency_ms": 1234.5,
        "retry_after": None,
        # A none-as-null JSON column: the cursor must bind no limits as SQL NULL, as
        # SQLAlchemy does, not as JSON 'null'.
        "rate_limits": {"requests": {"limit": 500, "reset_s": 0.12}} if n == 1 else None,
        "usage": {"input_tokens": 50, "output_tokens": 4160, "details": [None, "é"]},
        "images_returned": 1,
        "expected_usd": 0.1 + 0.2,
        "charge_status": "charged",
    }
    return {"b_id": f"ir-{n}", **{f"v_{k}": v for k, v in values.items()}}


def _parents(conn: Any, *, jobs: int) -> None:
    """The batch and jobs that attempt rows point at (foreign keys are on, as in the store)."""
    at = datetime(2026, 3, 1, tzinfo=UTC)
    conn.execute(
        insert(batches),
        [
            {
                "id": "b1",
                "name": "b1",
                "route": "openai",
                "manifest": "m.jsonl",
                "manifest_sha256": "0" * 64,
                "route_snapshot": {},
                "created_at": at,
            }
        ],
    )
    conn.execute(
        insert(job_table),
        [
            {
                "id": n,
                "batch_id": "b1",
                "key": f"k{n}",
                "ext_id": f"e{n}",
                "line": n,
                "prompt": "p",
                "params": {},
                "images": [],
                "meta": {},
                "state": "running",
                "created_at": at,
                "updated_at": at,
            }
            for n in range(1, jobs + 1)
        ],
    )


def test_the_ledgers_own_statements_store_what_sqlalchemy_stores(tmp_path: Path) -> None:
    """Start rows and their finishing update (JSON, floats, moments in other zones, NULLs)
    written on the cursor leave the file byte for byte as SQLAlchemy's own execution does."""

    finish_keys = tuple(_finish(0))
    finish = ledger._setting(ledger._FINISH_ATTEMPT, finish_keys)
    starts = [_attempt(n) for n in range(1, 4)]
    dumps = []
    for name, write in (
        ("sqlalchemy", lambda conn, stmt, rows: conn.execute(stmt, rows)),
        ("cursor", execute_many),
    ):
        engine = create_engine(f"sqlite:///{tmp_path / name}.db")
        _configure_sqlite(engine)  # the store's settings, its NULL adapter included
        metadata.create_all(engine)
        with engine.begin() as conn:
            _parents(conn, jobs=3)
        with engine.begin() as conn:
            write(conn, ledger._INSERT_ATTEMPT, starts)
            write(conn, finish, [_finish(1), _finish(3)])
        columns = ", ".join(f"typeof({c.name}), quote({c.name})" for c in attempts.c)
        with engine.connect() as conn:
            dumps.append(conn.exec_driver_sql(f"SELECT {columns} FROM attempts ORDER BY id").all())
        engine.dispose()

    by_sqlalchemy, by_cursor = dumps
    assert by_cursor == by_sqlalchemy
    assert len(by_cursor) == 3
    rows = [dict(zip(attempts.c.keys(), row[1::2], strict=True)) for row in by_cursor]
    assert [r["state"] for r in rows] == ["'done'", "'sending'", "'done'"]
    assert rows[0]["usage"] == (
        """'{"input_tokens": 50, "output_tokens": 4160, "details": [null, "\\u00e9"]}'"""
    )
    assert rows[1]["finished_at"] == "NULL"
    assert rows[0]["rate_limits"] == """'{"requests": {"limit": 500, "reset_s": 0.12}}'"""
    assert rows[2]["rate_limits"] == "NULL"
