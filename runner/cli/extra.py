"""Subcommands around the main loop: ``export``, ``sandbox`` and ``demo``."""

from __future__ import annotations

import os
from pathlib import Path

import anyio
import click

from runner import app
from runner.cli import render
from runner.cli.commands import RunAsync, settings
from runner.cli.progress import show_progress
from runner.run.worker import Runner

#: The export layouts (``runner.export.FORMATS``; named here so that starting the CLI does not
#: import pyarrow and Pillow — a test keeps the two lists equal).
EXPORT_FORMATS = ("files", "jsonl", "csv", "parquet", "webdataset", "html")


def register(main: click.Group, run_async: RunAsync) -> None:
    @main.command()
    @click.argument("batch")
    @click.option(
        "--format",
        "-f",
        "formats",
        multiple=True,
        required=True,
        type=click.Choice(EXPORT_FORMATS),
        help="Layout; repeat for several.",
    )
    @click.option("--out", "-o", required=True, type=click.Path(path_type=Path))
    @click.option(
        "--name",
        "name_template",
        default="{id}",
        show_default=True,
        help="File-name template: {id}, {index}, {k}, {metadata.KEY}.",
    )
    @click.option("--include-failed", is_flag=True, help="Index failed/unknown jobs too.")
    @click.option("--embed", is_flag=True, help="Parquet: include the image bytes.")
    @click.option("--shard-size", type=click.IntRange(1), default=1000, show_default=True)
    @click.option("--json", "as_json", is_flag=True)
    @click.pass_context
    def export(
        ctx: click.Context,
        batch: str,
        formats: tuple[str, ...],
        out: Path,
        name_template: str,
        include_failed: bool,
        embed: bool,
        shard_size: int,
        as_json: bool,
    ) -> None:
        """Export a batch: files, jsonl, csv, parquet, webdataset, html."""

        async def go() -> None:
            from runner.export import export_batch

            cfg = settings(ctx)
            async with app.open_store(cfg) as store:
                found = await store.find_batch(batch)
                report = await export_batch(
                    store,
                    found,
                    data_dir=cfg.data_dir,
                    out_dir=out,
                    formats=formats,
                    name_template=name_template,
                    include_failed=include_failed,
                    embed=embed,
                    shard_size=shard_size,
                    progress=render.export_progress(),
                )
            if as_json:
                render.emit_json(report.to_json())
            else:
                render.print_export(report)

        run_async(ctx, go)

    @main.command()
    @click.option("--host", default="127.0.0.1", show_default=True)
    @click.option("--port", "-p", default=8765, show_default=True, type=int)
    @click.option("--latency", default=0.0, show_default=True, help="Mean seconds per image.")
    @click.option("--jitter", default=0.0, show_default=True)
    @click.option("--rpm", type=int, help="Requests/min per key, enforced with 429s.")
    @click.option("--ipm", type=int, help="Images/min per key.")
    @click.option("--faults", help='Fault rates, e.g. "server_error=0.05,reset=0.01".')
    @click.option(
        "--rule",
        "rules",
        multiple=True,
        help='Scripted fault "MARKER:KIND[:TIMES]" for prompts containing MARKER.',
    )
    @click.option(
        "--policy",
        default="new-api",
        show_default=True,
        help="Failure-charge policy: none, new-api, all, or outcome classes.",
    )
    @click.option("--balance", default=100.0, show_default=True, help="Starting USD per key.")
    @click.option("--hang", default=30.0, show_default=True, help="Seconds a hang fault holds.")
    @click.option("--seed", default=0, show_default=True)
    @click.option("--tiny", is_flag=True, help="64x64 images whatever the size (benchmarks).")
    @click.option("--grain", is_flag=True, help="Photo-like, barely compressible images.")
    @click.pass_context
    def sandbox(ctx: click.Context, /, host: str, port: int, **options: object) -> None:
        """Run the local provider emulator (official profile /openai/v1, gateway /laozhang/v1)."""
        from runner.sandbox import config_from_options, serve

        try:
            config = config_from_options(**options)  # type: ignore[arg-type]
        except ValueError as exc:
            raise click.UsageError(str(exc)) from None
        render.err.print(
            f"sandbox: http://{host}:{port}/openai/v1 (official) and "
            f"http://{host}:{port}/laozhang/v1 (gateway); Ctrl-C stops it",
            markup=False,
        )
        serve(config, host, port)

    @main.command()
    @click.option(
        "--dir",
        "workdir",
        type=click.Path(path_type=Path),
        default=Path("imagerun-demo"),
        show_default=True,
        help="Where the demo's database, outputs and gallery go (recreated).",
    )
    @click.pass_context
    def demo(ctx: click.Context, workdir: Path) -> None:
        """The whole loop offline: sandbox, submit the examples, run, export a gallery."""
        from runner.cli.demo import run_demo

        target = workdir.resolve()

        async def go() -> int:
            holder: dict[str, Runner] = {}
            async with anyio.create_task_group() as tg:
                tg.start_soon(show_progress, lambda: holder["r"].stats if holder else None)
                result = await run_demo(
                    target, dict(os.environ), on_start=lambda r: holder.update(r=r)
                )
                tg.cancel_scope.cancel()
            render.print_demo(result)
            return 0 if result.clean else 1

        ctx.exit(run_async(ctx, go))
