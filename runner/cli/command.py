"""How a command runs: ``async_command``, settings from the root options, errors as exit codes.

A command's body is a coroutine run on anyio. Our errors become one line on stderr and their
exit code (``ValidationFailed`` lists every problem first); anything else is a bug in imagerun:
exit 3, with the traceback under ``-v``.
"""

from __future__ import annotations

import functools
import traceback
from collections.abc import Awaitable, Callable
from typing import Concatenate, ParamSpec

import anyio
import click

from runner.cli.output import err, problems
from runner.config import Settings, load_settings
from runner.errors import ImagerunError, ValidationFailed

P = ParamSpec("P")

#: Exit code for a bug in imagerun itself (0, 1 and 2 are success, failure and usage).
INTERNAL_ERROR = 3
#: Exit code after Ctrl-C, as a shell reports a process ended by SIGINT.
INTERRUPTED = 130


def settings(ctx: click.Context) -> Settings:
    """The settings named by the root options (``--db``, ``--data``, ``--config``)."""
    obj = ctx.find_root().obj
    return load_settings(config=obj["config"], db=obj["db"], data=obj["data"])


def async_command(
    name: str | None = None,
) -> Callable[[Callable[Concatenate[click.Context, P], Awaitable[int | None]]], click.Command]:
    """A click command whose body is a coroutine taking the click context first.

    The coroutine runs in a fresh event loop; what it returns (``None`` means 0) is the exit
    code. ``click.option`` decorators go below this one, as below ``click.command``.

    Args:
        name: the command's name (default: the function's, with ``-`` for ``_``).

    Returns:
        A decorator turning the coroutine function into a :class:`click.Command`.
    """

    def decorate(
        fn: Callable[Concatenate[click.Context, P], Awaitable[int | None]],
    ) -> click.Command:
        @functools.wraps(fn)
        def invoke(*args: P.args, **kwargs: P.kwargs) -> None:
            ctx = click.get_current_context()
            code = _run(ctx, functools.partial(fn, ctx, *args, **kwargs))
            if code:
                ctx.exit(code)

        return click.command(name)(invoke)

    return decorate


def _run(ctx: click.Context, fn: Callable[[], Awaitable[int | None]]) -> int | None:
    """Run ``fn`` in an event loop, translating our errors into messages and exit codes."""
    verbose = ctx.find_root().obj.get("verbose", False)
    try:
        try:
            return anyio.run(fn)
        except BaseExceptionGroup as group:
            # Task groups wrap what their tasks raised; show the user the errors themselves.
            raise _unwrapped(group) from None
    except ValidationFailed as exc:
        problems(exc.problems, exc.truncated)
        err.print(f"{exc}: nothing was enqueued.", markup=False)
        return exc.exit_code
    except ImagerunError as exc:
        if verbose:
            traceback.print_exc()
        err.print(f"error: {exc}", markup=False, highlight=False, soft_wrap=True)
        return exc.exit_code
    except KeyboardInterrupt:
        err.print("interrupted", markup=False)
        return INTERRUPTED
    except (click.ClickException, click.exceptions.Exit, click.Abort):
        raise  # usage errors and exits raised in the body: click reports them as usual
    except Exception as exc:
        _internal_error(exc, verbose=verbose)
        return INTERNAL_ERROR


def _internal_error(exc: Exception, *, verbose: bool) -> None:
    if verbose:
        traceback.print_exc()
    else:
        err.print(
            f"internal error: {type(exc).__name__}: {exc} (run with -v for the traceback)",
            markup=False,
            highlight=False,
        )


def _unwrapped(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """What to report for ``group``: its one error; Ctrl-C if one task saw it; the first of
    several of our errors (the others printed first: several workers' lanes may stop at once,
    each for its reason); else the group itself (a bug)."""
    leaves = _leaves(group)
    if len(leaves) == 1:
        return leaves[0]
    if any(isinstance(leaf, KeyboardInterrupt) for leaf in leaves):
        return KeyboardInterrupt()
    if all(isinstance(leaf, ImagerunError) for leaf in leaves):
        shown = {str(leaves[0])}
        for leaf in leaves[1:]:
            if str(leaf) not in shown:
                shown.add(str(leaf))
                err.print(f"error: {leaf}", markup=False, highlight=False, soft_wrap=True)
        return leaves[0]
    return group


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    found: list[BaseException] = []
    for exc in group.exceptions:
        found.extend(_leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc])
    return found
