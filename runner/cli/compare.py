"""``imagerun compare``: the same manifest on several routes, side by side."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import click
from rich.table import Table

from runner import app
from runner.cli.command import async_command, settings
from runner.cli.output import console, emit_json, money, say, warn
from runner.errors import UsageError
from runner.run.worker import RunOptions

if TYPE_CHECKING:
    from runner.compare import ComparisonPlan, ComparisonReport, FitChoice

_FIT_HELP = (
    "What to do with the fields a route cannot take: 'drop' them or 'adapt' them (nearest "
    "accepted size or quality, else dropped); ROUTE=CHOICE for one route. Without it a "
    "route that cannot take the manifest stops the comparison before anything is sent."
)


def parse_fits(values: Sequence[str], routes: Sequence[str]) -> dict[str, FitChoice]:
    """``--fit`` values as a choice per route (a bare choice applies to every route).

    Raises:
        UsageError: an unknown choice, or a route that is not compared.
    """
    from runner.compare import FitChoice

    choices: dict[str, FitChoice] = {}
    for value in values:
        route, _, choice = value.rpartition("=")
        try:
            fit = FitChoice(choice.strip().lower())
        except ValueError:
            raise UsageError(f"--fit {value!r}: choose drop or adapt") from None
        if route and route not in routes:
            raise UsageError(f"--fit {value!r}: {route!r} is not one of the compared routes")
        for name in [route] if route else routes:
            choices[name] = fit
    return choices


@async_command()
@click.argument("manifest", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--route", "-r", "routes", multiple=True, required=True, help="Repeat: 2 or more.")
@click.option("--name", help="Comparison name (default: the manifest's stem).")
@click.option("--out", "-o", type=click.Path(path_type=Path), help="Default ./compare-NAME.")
@click.option("--fit", "fits", multiple=True, metavar="[ROUTE=]drop|adapt", help=_FIT_HELP)
@click.option("--no-run", is_flag=True, help="Submit only; `imagerun run` works the batches.")
@click.option("--json", "as_json", is_flag=True)
async def compare(
    ctx: click.Context,
    manifest: Path,
    routes: tuple[str, ...],
    name: str | None,
    out: Path | None,
    fits: tuple[str, ...],
    no_run: bool,
    as_json: bool,
) -> int:
    """Compare routes: identical jobs on each, a side-by-side page, costs kept apart."""
    from runner.compare import ComparisonOptions, ComparisonPlan

    title = name or manifest.stem
    how = ComparisonOptions(
        name=title,
        out_dir=out or Path(f"compare-{title}"),
        choices=parse_fits(fits, routes),
        run=None if no_run else RunOptions(),
        on_plan=None if as_json else print_plan,
    )
    result = await app.compare(settings(ctx), manifest, routes, how)
    if isinstance(result, ComparisonPlan):
        if as_json:
            emit_json(result.to_json())
        warn("Nothing was sent: choose --fit drop or --fit adapt (per route: ROUTE=CHOICE).")
        return 1
    if as_json:
        emit_json(result.to_json())
    else:
        print_comparison(result)
    return 0


def print_plan(plan: ComparisonPlan) -> None:
    """What each route cannot take, and the choice made, before anything is sent."""
    for fit in plan.fits:
        if not fit.gaps and not fit.blocking:
            say(f"{fit.route}: takes the manifest as written.")
        for gap in fit.gaps:
            choice = fit.choice.value if fit.choice else "no choice made"
            say(
                f"{fit.route}: cannot take {gap.field} ({gap.lines} line(s), first line "
                f"{gap.first_line}: {gap.message}); {choice}."
            )
        for problem in fit.blocking:
            warn(f"{fit.route}: {problem}")
    for est in plan.estimates:
        if not est.held:
            held = "every line bought afresh for this comparison"
        elif not est.to_send:
            held = "all held by this comparison already: nothing to send"
        else:
            held = f"{est.held} held by this comparison already, {est.to_send} to send"
        say(
            f"{est.route}: {est.lines} line(s) into batch {est.batch}, estimated "
            f"{money(est.typical)} (low {money(est.low)}, high {money(est.high)}; prices as of "
            f"{est.as_of or '-'}); {held}."
        )


def print_comparison(report: ComparisonReport) -> None:
    """One column per route: success, latency, money (each route's own), failures, fidelity."""
    table = Table(title=f"Comparison {report.name}")
    table.add_column("")
    for summary in report.summaries:
        table.add_column(summary.route, overflow="fold")
    lines: list[tuple[str, list[str]]] = [
        ("lines held", [f"{s.jobs} of {s.lines}" for s in report.summaries]),
        (
            "success",
            ["-" if s.success_rate is None else f"{s.success_rate:.1%}" for s in report.summaries],
        ),
        (
            "p50 / p95 latency",
            [f"{_s(s.p50_latency_ms)} / {_s(s.p95_latency_ms)}" for s in report.summaries],
        ),
        ("spent", [money(s.spent_usd) for s in report.summaries]),
        ("cost per image", [money(s.cost_per_image_usd) for s in report.summaries]),
        (
            "failed attempts",
            [
                ", ".join(f"{k}×{v}" for k, v in s.failure_classes.items()) or "-"
                for s in report.summaries
            ],
        ),
        (
            "mean fidelity",
            [
                "-" if s.mean_fidelity is None else f"{s.mean_fidelity:.2f}"
                for s in report.summaries
            ],
        ),
        (
            "edit flags",
            [", ".join(f"{k} {v}" for k, v in s.flags.items()) or "-" for s in report.summaries],
        ),
    ]
    for label, values in lines:
        table.add_row(label, *values)
    console.print(table)
    if not report.ran:
        names = " ".join(s.batch for s in report.summaries)
        say(f"Submitted, not run: `imagerun run {names}`, then compare again for the page.")
    say(f"Page: {report.page}")


def _s(ms: float | None) -> str:
    return "-" if ms is None else f"{ms / 1000:.2f} s"
