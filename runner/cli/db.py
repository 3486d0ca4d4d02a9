"""``imagerun db``: database maintenance."""

from __future__ import annotations

import click

from runner import app
from runner.cli.command import async_command, settings
from runner.cli.output import say


@click.group()
def db() -> None:
    """Database maintenance."""


@async_command()
async def upgrade(ctx: click.Context) -> None:
    """Apply migrations (every command does this automatically)."""
    say(f"{await app.upgrade(settings(ctx))}: schema is current.")


db.add_command(upgrade)
