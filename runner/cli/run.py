"""``imagerun run``: work the queue, with live progress and a summary at the end."""

from __future__ import annotations

import click

from runner import app
from runner.cli.command import async_command, settings
from runner.cli.output import say
from runner.cli.progress import with_progress
from runner.cli.run_summary import print_run_summary
from runner.run.worker import RunOptions


@async_command()
@click.argument("batches", nargs=-1)
@click.option("--concurrency", "-c", type=click.IntRange(1, 1024))
@click.option("--rpm", type=click.IntRange(1), help="Requests per minute per route.")
@click.option("--budget", type=float, help="Spending cap in USD for this run.")
@click.option(
    "--grace",
    type=float,
    default=30.0,
    show_default=True,
    help="Seconds in-flight requests get to finish after Ctrl-C.",
)
@click.option(
    "--lease",
    type=click.FloatRange(1.0),
    default=120.0,
    show_default=True,
    help="Seconds a claimed job stays leased without a heartbeat: how long other "
    "workers wait before taking back the jobs of a machine that died. Keep it above the "
    "database outage a run rides out (60 s), or a live run's requests are judged lost.",
)
@click.option(
    "--memory-mb",
    type=click.IntRange(16),
    default=256,
    show_default=True,
    help="Memory large responses may hold at once (big images queue for it).",
)
@click.option(
    "--fallback",
    metavar="ROUTE",
    help="Send the retryable failures of remote batch lines (openai-batch) to this "
    "synchronous route instead of a later remote batch.",
)
async def run(
    ctx: click.Context,
    batches: tuple[str, ...],
    concurrency: int | None,
    rpm: int | None,
    budget: float | None,
    grace: float,
    lease: float,
    memory_mb: int,
    fallback: str | None,
) -> int:
    """Work until the named (default: all) batches have no runnable job."""
    cfg = settings(ctx)
    options = RunOptions(
        concurrency=concurrency,
        rpm=rpm,
        budget_usd=budget,
        grace_seconds=grace,
        lease_seconds=lease,
        memory_mb=memory_mb,
        fallback=fallback,
    )
    result = await with_progress(lambda on_start: app.run(cfg, batches, options, on_start=on_start))
    if result.nothing_to_do:
        names = ", ".join(b.name for b in result.batches) or "(none)"
        say(f"Nothing to run: batches {names} have no runnable job.")
        return 0
    report = result.report
    assert report is not None
    print_run_summary(cfg, report, result.batches)
    return 0 if report.clean else 1
