"""A non-editable install ships the migrations and can migrate a database with them.

The wheel maps the top-level ``migrations/`` to ``runner/_migrations`` (pyproject
``force-include``); ``runner.store.migrate.migrations_dir`` looks there first.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import zipfile
from contextlib import closing
from pathlib import Path

import pytest

from runner.store.migrate import migrations_dir

REPO = Path(__file__).resolve().parents[2]
PACKAGED = ("runner/_migrations/env.py", "runner/_migrations/versions/0001_initial_schema.py")


def test_migrations_dir_holds_env_and_versions() -> None:
    found = migrations_dir()

    assert (found / "env.py").is_file()
    assert (found / "versions" / "0001_initial_schema.py").is_file()


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    builders = pytest.importorskip(
        "hatchling.builders.wheel", reason="hatchling is not installed: cannot build the wheel"
    )
    out = tmp_path_factory.mktemp("wheel")
    [built] = builders.WheelBuilder(str(REPO)).build(directory=str(out), versions=["standard"])
    return Path(built)


def test_the_wheel_ships_the_migrations(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())

    assert set(PACKAGED) <= names
    assert not any(n.startswith("migrations/") for n in names), "shipped inside the package"


def test_an_installed_wheel_migrates_with_its_packaged_chain(wheel: Path, tmp_path: Path) -> None:
    """Unpacked (as pip installs it) and imported ahead of the checkout, it builds the schema."""
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(site)
    database = tmp_path / "installed.db"
    script = (
        "import sys\n"
        "from runner.store.migrate import migrations_dir, upgrade\n"
        "print(migrations_dir())\n"
        "upgrade(sys.argv[1])\n"
    )
    env = {**os.environ, "PYTHONPATH": str(site)}

    done = subprocess.run(
        [sys.executable, "-c", script, f"sqlite+aiosqlite:///{database}"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert done.returncode == 0, done.stderr
    assert Path(done.stdout.strip()) == site / "runner" / "_migrations"
    with closing(sqlite3.connect(database)) as conn:
        query = "SELECT name FROM sqlite_master WHERE type = 'table'"
        tables = {name for (name,) in conn.execute(query)}
    assert {"batches", "jobs", "attempts", "outputs", "alembic_version"} <= tables
