"""How a command runs (``runner.cli.command``): exit codes, error lines, lazy imports."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import anyio
import click
import pytest
from click.testing import CliRunner

from runner.cli import COMMANDS, main
from runner.cli.command import INTERNAL_ERROR, async_command
from runner.errors import ConfigError, StoreUnavailable

from .conftest import Invoke


@click.group()
@click.option("-v", "verbose", is_flag=True)
@click.pass_context
def toy(ctx: click.Context, verbose: bool) -> None:
    ctx.obj = {"verbose": verbose}


@async_command()
@click.argument("what")
async def act(ctx: click.Context, what: str) -> int | None:
    if what == "code":
        return 4
    if what == "ours":
        raise ConfigError("the config says no")
    if what == "usage":
        raise click.UsageError("wrong use")
    if what == "bug":
        raise KeyError("oops")
    if what.startswith("tasks-"):
        await _tasks(what.removeprefix("tasks-").split("+"))
    return None


async def _tasks(errors: list[str]) -> None:
    """Tasks of one group, each raising its error as soon as all have started."""
    raised = {
        "ours": ConfigError("the config says no"),
        "away": StoreUnavailable("the database is away"),
        "bug": KeyError("oops"),
    }
    started = anyio.Event()
    count = 0

    async def task(name: str) -> None:
        nonlocal count
        count += 1
        if count == len(errors):
            started.set()
        await started.wait()
        raise raised[name]

    async with anyio.create_task_group() as group:
        for name in errors:
            group.start_soon(task, name)


toy.add_command(act)


@pytest.mark.parametrize(
    ("what", "code", "stderr"),
    [
        ("fine", 0, ""),
        ("code", 4, ""),
        ("ours", ConfigError.exit_code, "error: the config says no\n"),
        ("usage", 2, "Error: wrong use"),
        ("bug", INTERNAL_ERROR, "internal error: KeyError: 'oops' (run with -v for the traceback)"),
        ("tasks-ours", ConfigError.exit_code, "error: the config says no\n"),
        # Several tasks stopped for our reasons: each reason shown, the first one's exit code.
        ("tasks-ours+away", ConfigError.exit_code, "error: the database is away\n"),
        ("tasks-ours+bug", INTERNAL_ERROR, "internal error: ExceptionGroup"),
    ],
)
def test_async_command_turns_what_the_body_does_into_an_exit_code(
    what: str, code: int, stderr: str
) -> None:
    result = CliRunner().invoke(toy, ["act", what])

    assert result.exit_code == code, result.output
    assert stderr in result.stderr
    assert "Traceback" not in result.stderr


def test_tasks_stopped_for_several_of_our_reasons_show_each_without_a_traceback() -> None:
    result = CliRunner().invoke(toy, ["act", "tasks-ours+away+ours"])

    assert result.exit_code == ConfigError.exit_code
    assert result.stderr.splitlines() == [
        "error: the database is away",
        "error: the config says no",
    ]


def test_verbose_shows_the_traceback_of_a_bug() -> None:
    result = CliRunner().invoke(toy, ["-v", "act", "bug"])

    assert result.exit_code == INTERNAL_ERROR
    assert "Traceback" in result.stderr
    assert "KeyError: 'oops'" in result.stderr


def test_retry_without_saying_which_jobs_is_a_usage_error(cli: Invoke) -> None:
    result = cli("retry", "some-batch")

    assert result.exit_code == 2
    assert "say which jobs: --failed, --unknown, or both" in result.stderr


_STATUS_IMPORTS = """
import sys
from click.testing import CliRunner
from runner.cli import main
result = CliRunner().invoke(main, ["--db", sys.argv[1], "status"])
assert result.exit_code == 0, result.output
# The engine and the wire, billing, the exporters and the manifest checks.
heavy = ("httpx", "aiohttp", "runner.run.worker", "runner.run.lanes", "runner.http",
         "runner.billing", "runner.export", "runner.manifest", "pyarrow")
print(" ".join(sorted(m for m in sys.modules if m == "pyarrow" or m.startswith(heavy))))
"""


def test_status_loads_neither_the_engine_nor_billing_nor_the_exporters_nor_manifests(
    sqlite_url: str, tmp_path: Path
) -> None:
    done = subprocess.run(
        [sys.executable, "-c", _STATUS_IMPORTS, sqlite_url],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
        check=True,
    )

    assert done.stdout.strip() == ""


@pytest.mark.parametrize("width", [60, 100])
def test_help_lists_every_command_with_the_first_line_of_its_docstring(width: int) -> None:
    """The table's help is the commands' own: ``--help`` reads as if click loaded them all."""
    loaded = click.Group(
        "imagerun", help=main.help, params=main.params, context_settings=main.context_settings
    )
    for name in COMMANDS:
        command = main.get_command(click.Context(main), name)
        assert command is not None
        loaded.add_command(command, name)

    ours = CliRunner().invoke(main, ["--help"], terminal_width=width, prog_name="imagerun")
    theirs = CliRunner().invoke(loaded, ["--help"], terminal_width=width, prog_name="imagerun")

    assert ours.exit_code == theirs.exit_code == 0
    assert ours.output == theirs.output
    assert all(f"\n  {name} " in ours.output for name in COMMANDS)


_LOADED = """
import sys
from click.testing import CliRunner
from runner.cli import main
result = CliRunner().invoke(main, sys.argv[1:])
assert result.exit_code == 0, result.output
heavy = ("sqlalchemy", "aiosqlite", "asyncpg", "httpx", "aiohttp", "runner.app", "runner.store",
         "runner.run", "runner.sandbox")
print(" ".join(sorted(m for m in sys.modules if m.startswith(heavy))))
"""


@pytest.mark.parametrize("args", [["--help"], ["routes"], ["routes", "--json"]])
def test_help_and_routes_load_neither_the_database_nor_the_engine(
    args: list[str], tmp_path: Path
) -> None:
    done = subprocess.run(
        [sys.executable, "-c", _LOADED, *args],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
        check=True,
    )

    assert done.stdout.strip() == ""
