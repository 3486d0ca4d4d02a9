"""Manifests and batches: ``check``, ``estimate``, ``submit``, ``status``, ``retry`` and
``cancel``."""

from __future__ import annotations

from pathlib import Path

import click

from runner import app
from runner.cli.batch_status import print_status, status_json
from runner.cli.command import async_command, settings
from runner.cli.estimates import estimate_json, print_estimate
from runner.cli.output import console, emit_json, say
from runner.errors import ValidationFailed
from runner.store import EnqueueResult


@async_command()
@click.argument("manifest", type=click.Path(path_type=Path))
@click.option("--route", "-r", required=True, help="Route to validate against.")
@click.option("--json", "as_json", is_flag=True)
async def check(ctx: click.Context, manifest: Path, route: str, as_json: bool) -> None:
    """Validate a manifest; exit 1 with every problem listed."""
    report = await app.check(settings(ctx), manifest, route)
    if as_json:
        emit_json(
            {
                "jobs": report.jobs,
                "edits": report.edits,
                "problems": [str(p) for p in report.problems],
                "truncated": report.truncated,
            }
        )
    if report.problems:
        raise ValidationFailed(report.problems, truncated=report.truncated)
    if not as_json:
        say(f"{manifest}: {report.jobs} job(s) ({report.edits} edit(s)) valid for route {route}")


@async_command()
@click.argument("manifest", type=click.Path(path_type=Path))
@click.option("--route", "-r", required=True)
@click.option("--json", "as_json", is_flag=True)
async def estimate(ctx: click.Context, manifest: Path, route: str, as_json: bool) -> None:
    """Cost estimate per job and in total, with the price source and date."""
    result = await app.estimate(settings(ctx), manifest, route)
    if as_json:
        emit_json(estimate_json(result))
    else:
        print_estimate(result)


@async_command()
@click.argument("manifest", type=click.Path(path_type=Path))
@click.option("--route", "-r", required=True)
@click.option("--name", "-n", help="Batch name (default: the manifest's file name).")
@click.option("--budget", type=float, help="Spending cap in USD for this batch.")
async def submit(
    ctx: click.Context, manifest: Path, route: str, name: str | None, budget: float | None
) -> None:
    """Validate, then enqueue atomically (re-submitting adds nothing). Prints the batch id."""
    result = await app.submit(settings(ctx), manifest, route, name=name, budget_usd=budget)
    print_enqueued(result)


@async_command()
@click.argument("batch", required=False)
@click.option("--json", "as_json", is_flag=True)
async def status(ctx: click.Context, batch: str | None, as_json: bool) -> None:
    """Counts by state, spend, failures by class, outputs; live workers."""
    report = await app.status(settings(ctx), [batch] if batch else [])
    if as_json:
        emit_json(status_json(report))
    else:
        print_status(report)


@async_command()
@click.argument("batch")
@click.option("--failed", is_flag=True, help="Requeue failed jobs.")
@click.option(
    "--unknown",
    is_flag=True,
    help="Resend jobs whose outcome is unknown (they may already be charged).",
)
async def retry(ctx: click.Context, batch: str, failed: bool, unknown: bool) -> None:
    """Requeue failed and/or unknown jobs of a batch."""
    if not (failed or unknown):
        raise click.UsageError("say which jobs: --failed, --unknown, or both")
    n = await app.retry(settings(ctx), batch, failed=failed, unknown=unknown)
    console.print(f"{n} job(s) requeued; `imagerun run {batch}` runs them.")


@async_command()
@click.argument("batch")
async def cancel(ctx: click.Context, batch: str) -> None:
    """Cancel every job of the batch that has not started, and its remote batches."""
    result = await app.cancel(settings(ctx), batch)
    console.print(f"{result.jobs} job(s) cancelled.")
    if result.remote_batches:
        console.print(
            f"{result.remote_batches} remote batch(es) cancelled: lines that finished anyway "
            "are kept and paid when `imagerun run` applies them; the rest are cancelled."
        )


def print_enqueued(result: EnqueueResult) -> None:
    """What ``submit`` added (or why nothing), then the batch id alone on the last line."""
    batch = result.batch
    if result.added == 0:
        held = ", ".join(f"{n} ({i})" for i, n in result.existing_batches.items())
        say(
            f"Nothing added: all {result.existing} job(s) are already queued"
            + (f" in batch {held}" if held else "")
        )
        return
    note = f"; {result.existing} already queued, skipped" if result.existing else ""
    verb = "Created" if result.batch_created else "Added to"
    say(
        f"{verb} batch {batch.name} ({batch.id}) on route {batch.route}: "
        f"{result.added} job(s) enqueued{note}"
    )
    print(batch.id)
