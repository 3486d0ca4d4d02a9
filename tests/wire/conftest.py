"""Fixtures for the wire zoo: a zoo server per test, on the case the test names."""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from runner.store import Store

from .cases import CASES
from .harness import IMAGE, ZooWorld, large_png
from .server import running_zoo

MakeWorld = Callable[..., ZooWorld]


@pytest.fixture(scope="session")
def large_source() -> bytes:
    """A source image of megabytes, made once: the server answers before it is all read."""
    return large_png()


@pytest.fixture(scope="session")
def migrated_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated, empty SQLite file, made once; each test runs on a copy of it."""
    path = tmp_path_factory.mktemp("zoo-db") / "imagerun.db"

    async def migrate() -> None:
        store = await Store.open(f"sqlite+aiosqlite:///{path}")
        await store.close()

    anyio.run(migrate)
    return path


@pytest.fixture
def zoo_db(tmp_path: Path, migrated_db: Path) -> str:
    copy = tmp_path / "imagerun.db"
    shutil.copyfile(migrated_db, copy)
    return f"sqlite+aiosqlite:///{copy}"


@pytest.fixture
def zoo_world(tmp_path: Path, zoo_db: str, large_source: bytes) -> Iterator[MakeWorld]:
    """``zoo_world(case, route="openai", db_url=None, **route_settings)``: the zoo serving
    ``case``, on a copy of the migrated SQLite file unless ``db_url`` names another."""
    with contextlib.ExitStack() as stack:

        def make(
            case: str, *, route: str = "openai", db_url: str | None = None, **settings: Any
        ) -> ZooWorld:
            chosen = CASES[case]
            zoo = stack.enter_context(running_zoo(chosen.handler, IMAGE))
            return ZooWorld(
                zoo=zoo,
                case=chosen,
                root=tmp_path,
                db_url=db_url or zoo_db,
                route=route,
                settings_=settings,
                large_source=large_source if chosen.large else b"",
            )

        yield make
