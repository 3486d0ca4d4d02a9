"""The ``imagerun`` command. Thin: parse, load settings, call one async function, render."""

from __future__ import annotations

import sys
import traceback
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import anyio
import click

from runner.cli import commands, extra, money
from runner.cli.render import err
from runner.errors import ImagerunError, ValidationFailed

T = TypeVar("T")

#: Exit code for a bug in imagerun itself (design.md §4 reserves 0, 1 and 2).
INTERNAL_ERROR = 3


def run_async(ctx: click.Context, fn: Callable[[], Awaitable[T]]) -> T:
    """Run ``fn`` in an event loop, translating our errors into messages and exit codes."""
    verbose = ctx.find_root().obj.get("verbose", False)
    try:
        try:
            return anyio.run(fn)
        except BaseExceptionGroup as group:
            # Task groups wrap what a task raised; show the user the error itself.
            leaves = _leaves(group)
            raise (leaves[0] if len(leaves) == 1 else group) from None
    except ValidationFailed as exc:
        from runner.cli.render import problems

        problems(exc.problems, exc.truncated)
        err.print(f"{exc}: nothing was enqueued.", markup=False)
        ctx.exit(exc.exit_code)
    except ImagerunError as exc:
        if verbose:
            traceback.print_exc()
        err.print(f"error: {exc}", markup=False, highlight=False, soft_wrap=True)
        ctx.exit(exc.exit_code)
    except KeyboardInterrupt:
        err.print("interrupted", markup=False)
        ctx.exit(130)
    except Exception as exc:
        if verbose:
            traceback.print_exc()
        else:
            err.print(
                f"internal error: {type(exc).__name__}: {exc} (run with -v for the traceback)",
                markup=False,
                highlight=False,
            )
        ctx.exit(INTERNAL_ERROR)
    raise AssertionError("unreachable")


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    found: list[BaseException] = []
    for exc in group.exceptions:
        found.extend(_leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc])
    return found


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
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


commands.register(main, run_async)
extra.register(main, run_async)
money.register(main, run_async)


def _entry() -> Any:  # pragma: no cover - console script shim
    return main(prog_name="imagerun")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(_entry())
