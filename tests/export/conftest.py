"""Fixtures for the export tests: a store with the export queries and a finished sample batch."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from .builders import ExportStore, Sample, build_sample


@pytest.fixture
async def export_store(sqlite_url: str) -> AsyncIterator[ExportStore]:
    """A migrated store on a real SQLite file."""
    store = await ExportStore.open(sqlite_url)
    assert isinstance(store, ExportStore)  # open() is typed as returning a plain Store
    try:
        yield store
    finally:
        await store.close()


@pytest.fixture
async def sample(export_store: ExportStore, tmp_path: Path) -> Sample:
    """The finished ``pets`` batch (see :mod:`tests.export.builders`) with its image files."""
    data_dir = tmp_path / "data"
    batch = await build_sample(export_store, data_dir)
    db_path = Path(make_url(export_store.url).database or "")
    return Sample(store=export_store, batch=batch, data_dir=data_dir, db_path=db_path)


@pytest.fixture
def out(tmp_path: Path) -> Path:
    """The export directory (beside, not around, the database and the data directory)."""
    return tmp_path / "out"
