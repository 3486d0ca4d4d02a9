"""The ``imagerun`` command. Thin: parse, load settings, call one ``runner.app`` function, render.

One module per command group: :mod:`~runner.cli.jobs` (routes, check, estimate, submit,
status, retry, cancel), :mod:`~runner.cli.run`, :mod:`~runner.cli.money` (costs,
probe-billing, reconcile), :mod:`~runner.cli.export`, :mod:`~runner.cli.compare`,
:mod:`~runner.cli.sandbox` (sandbox, demo) and :mod:`~runner.cli.db`. A command's module is
imported when the command is looked up, so ``imagerun status`` does not load what
``imagerun run`` needs.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Any

import click

#: Command name → ``module:attribute`` of its :class:`click.Command`.
COMMANDS = {
    "routes": "runner.cli.jobs:routes",
    "check": "runner.cli.jobs:check",
    "estimate": "runner.cli.jobs:estimate",
    "submit": "runner.cli.jobs:submit",
    "status": "runner.cli.jobs:status",
    "retry": "runner.cli.jobs:retry",
    "cancel": "runner.cli.jobs:cancel",
    "run": "runner.cli.run:run",
    "costs": "runner.cli.money:costs",
    "probe-billing": "runner.cli.money:probe_billing",
    "reconcile": "runner.cli.money:reconcile",
    "export": "runner.cli.export:export",
    "compare": "runner.cli.compare:compare",
    "sandbox": "runner.cli.sandbox:sandbox",
    "demo": "runner.cli.sandbox:demo",
    "db": "runner.cli.db:db",
}


class _CommandTable(click.Group):
    """A group whose commands are named in :data:`COMMANDS` and imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        where = COMMANDS.get(cmd_name)
        if where is None:
            return None
        module, attribute = where.split(":")
        command = getattr(importlib.import_module(module), attribute)
        assert isinstance(command, click.Command)
        return command


@click.group(cls=_CommandTable, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="Show tracebacks and more detail.")
@click.option(
    "--db", envvar="IMAGERUN_DB", help="Database URL (default sqlite+aiosqlite:///imagerun.db)."
)
@click.option(
    "--data",
    envvar="IMAGERUN_DATA",
    type=click.Path(path_type=Path),
    help="Output directory (default ./imagerun-data).",
)
@click.option(
    "--config",
    envvar="IMAGERUN_CONFIG",
    type=click.Path(path_type=Path),
    help="Config file (default ./imagerun.toml if present).",
)
@click.version_option(package_name="imagerun")
@click.pass_context
def main(
    ctx: click.Context, verbose: bool, db: str | None, data: Path | None, config: Path | None
) -> None:
    """Bulk image generation through OpenAI-compatible APIs: reliable, auditable, resumable."""
    ctx.obj = {"verbose": verbose, "db": db, "data": data, "config": config}


def _entry() -> Any:  # pragma: no cover - console script shim
    return main(prog_name="imagerun")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(_entry())
