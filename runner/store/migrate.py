"""Running Alembic: locate the chain (packaged or in the repo), upgrade, downgrade.

Alembic is synchronous and drives its own event loop in ``migrations/env.py``, so callers in
async code go through :func:`upgrade_async`, which runs it in a worker thread.
"""

from __future__ import annotations

import functools
import sys
from importlib import resources
from pathlib import Path

import anyio.to_thread
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory


def migrations_dir() -> Path:
    """Alembic scripts: ``runner/_migrations`` in a wheel, ``migrations/`` in a checkout."""
    packaged = Path(str(resources.files("runner"))) / "_migrations"
    if (packaged / "env.py").is_file():
        return packaged
    repo = Path(__file__).resolve().parents[2] / "migrations"
    if (repo / "env.py").is_file():
        return repo
    raise FileNotFoundError("imagerun's migrations are missing from this installation")


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(migrations_dir()))
    # Passed as an attribute, not an option: ConfigParser would mangle '%' in passwords.
    cfg.attributes["url"] = url
    return cfg


@functools.cache
def head_revision() -> str:
    heads = ScriptDirectory.from_config(alembic_config("")).get_heads()
    return heads[0]


def upgrade(url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(url), revision)


def downgrade(url: str, revision: str) -> None:
    command.downgrade(alembic_config(url), revision)


async def upgrade_async(url: str, revision: str = "head") -> None:
    """Upgrade outside the running event loop (Alembic starts its own in the thread)."""
    await anyio.to_thread.run_sync(upgrade, url, revision)


def _main(argv: list[str]) -> None:  # pragma: no cover - developer tool
    import os

    url = os.environ.get("IMAGERUN_DB", "sqlite+aiosqlite:///imagerun.db")
    cfg = alembic_config(url)
    if argv[:1] == ["revision"]:
        message = argv[argv.index("-m") + 1] if "-m" in argv else "change"
        command.upgrade(cfg, "head")
        command.revision(cfg, message=message, autogenerate=True)
    else:
        command.upgrade(cfg, "head")


if __name__ == "__main__":  # pragma: no cover
    _main(sys.argv[1:])
