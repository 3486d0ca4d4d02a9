"""The Alembic chain: one head, a clean round trip, and a schema equal to ``tables.metadata``.

Alembic is synchronous and starts its own event loop (``migrations/env.py``), so the tests run
it in a worker thread, as the store does.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import anyio.to_thread
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Column, Integer, MetaData, String, inspect
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from runner.models import JobState
from runner.store import Store, migrate
from runner.store.tables import SCHEMA_REVISION, metadata

from .factories import specs, submit

pytestmark = pytest.mark.anyio

VERSION_TABLE = "alembic_version"


@pytest.fixture
async def engine(db_url: str) -> AsyncIterator[AsyncEngine]:
    """A plain engine for looking at the schema (no store, no migrations)."""
    plain = create_async_engine(db_url, poolclass=NullPool)
    try:
        yield plain
    finally:
        await plain.dispose()


async def upgrade(url: str, revision: str = "head") -> None:
    await anyio.to_thread.run_sync(migrate.upgrade, url, revision)


async def downgrade(url: str, revision: str) -> None:
    await anyio.to_thread.run_sync(migrate.downgrade, url, revision)


async def table_names(engine: AsyncEngine) -> set[str]:
    async with engine.connect() as conn:
        return set(await conn.run_sync(lambda c: inspect(c).get_table_names()))


async def current_revision(engine: AsyncEngine) -> str | None:
    async with engine.connect() as conn:
        return await conn.run_sync(lambda c: MigrationContext.configure(c).get_current_revision())


async def schema_diff(engine: AsyncEngine, target: MetaData) -> list[Any]:
    def compare(conn: Connection) -> list[Any]:
        context = MigrationContext.configure(
            conn, opts={"compare_type": True, "compare_server_default": True}
        )
        return list(compare_metadata(context, target))

    async with engine.connect() as conn:
        return await conn.run_sync(compare)


def test_the_chain_has_exactly_one_head_and_no_gaps() -> None:
    script = ScriptDirectory.from_config(migrate.alembic_config(""))

    heads = script.get_heads()
    chain = list(script.walk_revisions("base", "heads"))

    assert heads == [migrate.head_revision()]
    # What Store.open compares with, to skip Alembic when the schema is current.
    assert heads == [SCHEMA_REVISION]
    assert len(script.get_bases()) == 1
    assert {r.revision for r in chain} == {r.revision for r in script.walk_revisions()}
    assert all(not isinstance(r.down_revision, tuple | list) for r in chain), "no merge points"


async def test_upgrade_downgrade_upgrade_round_trip(db_url: str, engine: AsyncEngine) -> None:
    tables = set(metadata.tables)

    await upgrade(db_url)
    assert await table_names(engine) == tables | {VERSION_TABLE}
    assert await current_revision(engine) == migrate.head_revision()

    await downgrade(db_url, "base")
    assert await table_names(engine) - {VERSION_TABLE} == set()
    assert await current_revision(engine) is None

    await upgrade(db_url)
    assert await table_names(engine) == tables | {VERSION_TABLE}
    store = await Store.open(db_url)  # already at head: opening migrates nothing
    try:
        batch = (await submit(store, "after-round-trip", specs(3))).batch
        assert await store.count_states([batch.id]) == {JobState.QUEUED: 3}
    finally:
        await store.close()


async def test_migrated_schema_matches_the_table_definitions(
    db_url: str, engine: AsyncEngine
) -> None:
    """Autogenerate finds nothing to change: tables, columns, types, indexes, constraints.

    ``UTCDateTime`` needs no special ``compare_type`` hook: Alembic compares the DDL the dialect
    renders for each type, and a ``TypeDecorator`` renders as its ``impl``
    (``DateTime(timezone=True)``), exactly what the migration creates.
    """
    await upgrade(db_url)

    assert await schema_diff(engine, metadata) == []


async def test_partial_indexes_have_their_condition(db_url: str, engine: AsyncEngine) -> None:
    """Autogenerate does not compare index conditions: the database's own word is checked.

    A partial index the migration created without its condition would still serve the
    status queries (the counts stay exact) but would hold every row, and so read them all.
    """
    await upgrade(db_url)
    partial = {
        (table.name, index.name): index.info["where"]
        for table in metadata.sorted_tables
        for index in table.indexes
        if "where" in index.info
    }

    def conditions(conn: Connection) -> dict[tuple[str, str | None], str | None]:
        found = {}
        for table, name in partial:
            for index in inspect(conn).get_indexes(table):
                if index["name"] == name:
                    options = index.get("dialect_options", {})
                    found[table, name] = options.get(f"{conn.dialect.name}_where")
        return found

    async with engine.connect() as conn:
        found = await conn.run_sync(conditions)

    assert set(found) == set(partial)
    for key, where in partial.items():
        # Each dialect renders the condition its own way; the columns it names are there.
        column = where.strip("(").split()[0]
        assert found[key] is not None, key
        assert column in str(found[key]), (key, found[key])


async def test_schema_comparison_does_catch_drift(db_url: str, engine: AsyncEngine) -> None:
    """The check above is not vacuous: a wider column and a new one both show up."""
    await upgrade(db_url)
    drifted = MetaData(naming_convention=metadata.naming_convention)
    for table in metadata.sorted_tables:
        table.to_metadata(drifted)
    drifted.tables["jobs"].c.state.type = String(32)
    drifted.tables["workers"].append_column(Column("slots", Integer, nullable=True))

    kinds = {
        (change[0][0] if isinstance(change, list) else change[0])
        for change in await schema_diff(engine, drifted)
    }

    assert kinds == {"modify_type", "add_column"}
