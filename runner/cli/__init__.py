"""The ``imagerun`` command. Thin: parse, load settings, call one ``runner.app`` function, render.

One module per command group: :mod:`~runner.cli.jobs` (routes, check, estimate, submit,
status, retry, cancel), :mod:`~runner.cli.run`, :mod:`~runner.cli.money` (costs,
probe-billing, reconcile), :mod:`~runner.cli.export`, :mod:`~runner.cli.compare`,
:mod:`~runner.cli.sandbox` (sandbox, demo) and :mod:`~runner.cli.db`. A command's module is
imported when the command is looked up, so ``imagerun status`` does not load what
``imagerun run`` needs, and ``imagerun --help`` loads none.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Any, NamedTuple

import click


class _Entry(NamedTuple):
    """Where a command is defined, and its one-line help as ``imagerun --help`` lists it."""

    where: str
    help: str


#: Command name → where its :class:`click.Command` is (``module:attribute``) and the first
#: line of its docstring: ``imagerun --help`` lists every command without importing one.
COMMANDS = {
    "routes": _Entry(
        "runner.cli.routes:routes",
        "List routes: provider, shape, endpoint, model, parameters, billing, key variable.",
    ),
    "check": _Entry(
        "runner.cli.jobs:check", "Validate a manifest; exit 1 with every problem listed."
    ),
    "estimate": _Entry(
        "runner.cli.jobs:estimate",
        "Cost estimate per job and in total, with the price source and date.",
    ),
    "submit": _Entry(
        "runner.cli.jobs:submit",
        "Validate, then enqueue atomically (re-submitting adds nothing). Prints the batch id.",
    ),
    "status": _Entry(
        "runner.cli.jobs:status",
        "Counts by state, spend, failures by class, outputs; live workers.",
    ),
    "retry": _Entry("runner.cli.jobs:retry", "Requeue failed and/or unknown jobs of a batch."),
    "cancel": _Entry(
        "runner.cli.jobs:cancel",
        "Cancel every job of the batch that has not started, and its remote batches.",
    ),
    "run": _Entry(
        "runner.cli.run:run", "Work until the named (default: all) batches have no runnable job."
    ),
    "costs": _Entry(
        "runner.cli.money:costs",
        "Spend by route, outcome and charge status; failure charges expected vs observed.",
    ),
    "probe-billing": _Entry(
        "runner.cli.money:probe_billing",
        "A small, serial, confirmed billing test: which failures does ROUTE charge?",
    ),
    "reconcile": _Entry(
        "runner.cli.money:reconcile",
        "Match attempts with the provider's call log; record what was really charged.",
    ),
    "export": _Entry(
        "runner.cli.export:export", "Export a batch: files, jsonl, csv, parquet, webdataset, html."
    ),
    "compare": _Entry(
        "runner.cli.compare:compare",
        "Compare routes: identical jobs on each, a side-by-side page, costs kept apart.",
    ),
    "sandbox": _Entry(
        "runner.cli.sandbox:sandbox",
        "Run the local provider emulator (official profile /openai/v1, gateway /laozhang/v1).",
    ),
    "demo": _Entry(
        "runner.cli.sandbox:demo",
        "The whole loop offline: sandbox, submit the examples, run, export a gallery.",
    ),
    "db": _Entry("runner.cli.db:db", "Database maintenance."),
}


class _CommandTable(click.Group):
    """A group whose commands are named in :data:`COMMANDS` and imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        entry = COMMANDS.get(cmd_name)
        if entry is None:
            return None
        module, attribute = entry.where.split(":")
        command = getattr(importlib.import_module(module), attribute)
        assert isinstance(command, click.Command)
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The commands and their help from the table (click's own layout, no import)."""
        limit = formatter.width - 6 - max(map(len, COMMANDS))
        rows = [
            (name, click.Command(name, help=COMMANDS[name].help).get_short_help_str(limit))
            for name in self.list_commands(ctx)
        ]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


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
