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

from runner.store.direct import execute_many
from runner.store.tables import UTCDateTime, metadata, outputs

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
