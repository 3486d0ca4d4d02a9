"""``imagerun export``: a batch's images and records in the layouts other tools read."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import click
from rich.table import Table

from runner import app
from runner.cli.command import async_command, settings
from runner.cli.output import console, emit_json, err

if TYPE_CHECKING:
    # Only for annotations: importing the exporters loads pyarrow and Pillow.
    from runner.export import ExportReport

#: The export layouts (``runner.export.FORMATS``; named here so that listing the commands does
#: not import pyarrow and Pillow — a test keeps the two lists equal).
EXPORT_FORMATS = ("files", "jsonl", "csv", "parquet", "webdataset", "html")


@async_command()
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
async def export(
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
    report = await app.export(
        settings(ctx),
        batch,
        out_dir=out,
        formats=formats,
        name_template=name_template,
        include_failed=include_failed,
        embed=embed,
        shard_size=shard_size,
        progress=export_progress(),
    )
    if as_json:
        emit_json(report.to_json())
    else:
        print_export(report)


def export_progress() -> Callable[[int, int], None]:
    """A progress callback: a line every 10 % (exports run to completion quickly)."""
    last = [-1]

    def tick(done: int, total: int) -> None:
        step = int(10 * done / total) if total else 10
        if total >= 1000 and step > last[0]:
            last[0] = step
            err.print(f"export: {done:,}/{total:,}", markup=False)

    return tick


def print_export(report: ExportReport) -> None:
    """One row per layout: what was written, left as it was, skipped or renamed, and where."""
    table = Table(title=f"Export of {report.batch_name}")
    for col in ("format", "written", "unchanged", "skipped", "renamed", "where"):
        table.add_column(col, overflow="fold")
    for fmt in report.formats.values():
        table.add_row(
            fmt.format,
            str(fmt.written),
            str(fmt.unchanged),
            str(fmt.skipped),
            str(fmt.renamed_total),
            "\n".join(str(p) for p in fmt.paths),
        )
    console.print(table)
    for fmt in report.formats.values():
        for renamed in fmt.renamed[:20]:
            err.print(f"{fmt.format}: {renamed.wanted} exists; wrote {renamed.used}", markup=False)
        for skip in fmt.skips[:20]:
            err.print(f"{fmt.format}: skipped {skip.id}: {skip.reason}", markup=False)
