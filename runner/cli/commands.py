"""Subcommands. Each one: parse options, resolve settings, await one ``runner.app`` call, render."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import click

from runner import app
from runner.cli import render
from runner.cli.progress import show_progress
from runner.cli.summary import print_run_summary
from runner.config import Settings, load_settings
from runner.errors import ValidationFailed
from runner.run.worker import Runner, RunOptions

RunAsync = Callable[[click.Context, Callable[[], Awaitable[Any]]], Any]


def settings(ctx: click.Context) -> Settings:
    obj = ctx.find_root().obj
    return load_settings(config=obj["config"], db=obj["db"], data=obj["data"])


def register(main: click.Group, run_async: RunAsync) -> None:
    """Attach every subcommand to ``main``."""

    @main.command()
    @click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
    @click.option("--all", "show_all", is_flag=True, help="Include the sandbox-* mirrors.")
    @click.pass_context
    def routes(ctx: click.Context, as_json: bool, show_all: bool) -> None:
        """List routes: provider, shape, endpoint, model, parameters, billing, key variable."""

        async def go() -> None:
            catalog = settings(ctx).catalog
            if as_json:
                render.emit_json([r.public_dict() for _, r in sorted(catalog.routes.items())])
            else:
                render.console.print(render.routes_table(catalog, show_all or False))

        run_async(ctx, go)

    @main.command()
    @click.argument("manifest", type=click.Path(path_type=Path))
    @click.option("--route", "-r", required=True, help="Route to validate against.")
    @click.option("--json", "as_json", is_flag=True)
    @click.pass_context
    def check(ctx: click.Context, manifest: Path, route: str, as_json: bool) -> None:
        """Validate a manifest; exit 1 with every problem listed."""

        async def go() -> None:
            report = await app.check(settings(ctx), manifest, route)
            if as_json:
                render.emit_json(
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
                render.console.print(
                    f"{manifest}: {report.jobs} job(s) ({report.edits} edit(s)) valid for route "
                    f"{route}",
                    markup=False,
                )

        run_async(ctx, go)

    @main.command()
    @click.argument("manifest", type=click.Path(path_type=Path))
    @click.option("--route", "-r", required=True)
    @click.option("--json", "as_json", is_flag=True)
    @click.pass_context
    def estimate(ctx: click.Context, manifest: Path, route: str, as_json: bool) -> None:
        """Cost estimate per job and in total, with the price source and date."""

        async def go() -> None:
            result = await app.estimate(settings(ctx), manifest, route)
            if as_json:
                render.emit_json(render.estimate_json(result))
            else:
                render.print_estimate(result)

        run_async(ctx, go)

    @main.command()
    @click.argument("manifest", type=click.Path(path_type=Path))
    @click.option("--route", "-r", required=True)
    @click.option("--name", "-n", help="Batch name (default: the manifest's file name).")
    @click.option("--budget", type=float, help="Spending cap in USD for this batch.")
    @click.pass_context
    def submit(
        ctx: click.Context, manifest: Path, route: str, name: str | None, budget: float | None
    ) -> None:
        """Validate, then enqueue atomically (re-submitting adds nothing). Prints the batch id."""

        async def go() -> None:
            result = await app.submit(settings(ctx), manifest, route, name=name, budget_usd=budget)
            render.enqueued(result)

        run_async(ctx, go)

    @main.command()
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
        default=60.0,
        show_default=True,
        help="Seconds a claimed job stays leased without a heartbeat: how long other "
        "workers wait before taking back the jobs of a machine that died.",
    )
    @click.option(
        "--memory-mb",
        type=click.IntRange(16),
        default=256,
        show_default=True,
        help="Memory large responses may hold at once (big images queue for it).",
    )
    @click.pass_context
    def run(
        ctx: click.Context,
        batches: tuple[str, ...],
        concurrency: int | None,
        rpm: int | None,
        budget: float | None,
        grace: float,
        lease: float,
        memory_mb: int,
    ) -> None:
        """Work until the named (default: all) batches have no runnable job."""
        options = RunOptions(
            concurrency=concurrency,
            rpm=rpm,
            budget_usd=budget,
            grace_seconds=grace,
            lease_seconds=lease,
            memory_mb=memory_mb,
        )
        code = run_async(ctx, lambda: _run(settings(ctx), batches, options))
        ctx.exit(code)

    @main.command()
    @click.argument("batch", required=False)
    @click.option("--json", "as_json", is_flag=True)
    @click.pass_context
    def status(ctx: click.Context, batch: str | None, as_json: bool) -> None:
        """Counts by state, spend, failures by class, outputs; live workers."""

        async def go() -> None:
            cfg = settings(ctx)
            async with app.open_store(cfg) as store:
                found = await app.resolve_batches(store, [batch] if batch else [])
                statuses = await store.batch_status(found)
                workers = await store.list_workers()
            if as_json:
                render.emit_json(
                    {
                        "batches": [s.to_json() for s in statuses],
                        "workers": [
                            {"id": w.id, "host": w.host, "pid": w.pid, "running": w.running_jobs}
                            for w in workers
                        ],
                    }
                )
                return
            if not statuses:
                render.console.print("No batches yet: `imagerun submit MANIFEST --route R`.")
                return
            render.console.print(render.status_table(statuses))
            if workers:
                render.console.print(render.workers_table(workers))
            for hint in render.status_hints(statuses):
                render.console.print(hint, markup=False)

        run_async(ctx, go)

    @main.command()
    @click.argument("batch")
    @click.option("--failed", is_flag=True, help="Requeue failed jobs.")
    @click.option(
        "--unknown",
        is_flag=True,
        help="Resend jobs whose outcome is unknown (they may already be charged).",
    )
    @click.pass_context
    def retry(ctx: click.Context, batch: str, failed: bool, unknown: bool) -> None:
        """Requeue failed and/or unknown jobs of a batch."""
        if not (failed or unknown):
            raise click.UsageError("say which jobs: --failed, --unknown, or both")

        async def go() -> None:
            n = await app.retry(settings(ctx), batch, failed=failed, unknown=unknown)
            render.console.print(f"{n} job(s) requeued; `imagerun run {batch}` runs them.")

        run_async(ctx, go)

    @main.command()
    @click.argument("batch")
    @click.pass_context
    def cancel(ctx: click.Context, batch: str) -> None:
        """Cancel every job of the batch that has not started."""

        async def go() -> None:
            n = await app.cancel(settings(ctx), batch)
            render.console.print(f"{n} job(s) cancelled.")

        run_async(ctx, go)

    @main.group()
    def db() -> None:
        """Database maintenance."""

    @db.command()
    @click.pass_context
    def upgrade(ctx: click.Context) -> None:
        """Apply migrations (every command does this automatically)."""

        async def go() -> None:
            cfg = settings(ctx)
            async with app.open_store(cfg) as store:
                render.console.print(f"{store.safe_url}: schema is current.", markup=False)

        run_async(ctx, go)


async def _run(cfg: Settings, batches: tuple[str, ...], options: RunOptions) -> int:
    holder: dict[str, Runner] = {}

    def started(runner: Runner) -> None:
        holder["runner"] = runner

    async with anyio.create_task_group() as tg:
        tg.start_soon(show_progress, lambda: holder["runner"].stats if holder else None)
        result = await app.run(cfg, batches, options, on_start=started)
        tg.cancel_scope.cancel()
    if result.nothing_to_do:
        names = ", ".join(b.name for b in result.batches) or "(none)"
        render.console.print(f"Nothing to run: batches {names} have no runnable job.")
        return 0
    report = result.report
    assert report is not None
    print_run_summary(cfg, report, result.batches)
    return 0 if report.clean else 1
