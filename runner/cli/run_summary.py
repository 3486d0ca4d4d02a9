"""The end-of-run summary: what happened, what it cost, what to do next."""

from __future__ import annotations

from collections.abc import Sequence

from rich.table import Table

from runner.cli.output import console, err, money
from runner.config import Settings
from runner.models import JobState
from runner.run.worker import RunReport
from runner.store import BatchInfo


def print_run_summary(cfg: Settings, report: RunReport, batches: Sequence[BatchInfo]) -> None:
    stats = report.stats
    rec = report.recovered
    if rec.requeued or rec.unknown or rec.resent:
        err.print(
            f"Recovered from an earlier run: {rec.requeued} requeued, {rec.unknown} held as "
            f"unknown, {rec.resent} resent by route policy.",
            markup=False,
        )
    if report.files.adopted_jobs or report.files.removed_files:
        err.print(
            f"Images a killed run wrote but never recorded: {report.files.adopted_jobs} job(s) "
            f"finished with them (not resent), {report.files.removed_files} stray file(s) removed.",
            markup=False,
        )
    table = Table(title="Run summary")
    for col in ("state", "jobs"):
        table.add_column(col)
    for state in JobState:
        if report.counts.get(state):
            table.add_row(state.value, str(report.counts[state]))
    console.print(table)
    outcomes = ", ".join(f"{k}×{v}" for k, v in sorted(stats.outcomes.items()))
    console.print(
        f"{stats.attempts} request(s) this run ({outcomes or 'none'}); "
        f"expected spend {money(stats.spent_usd)}.",
        markup=False,
    )
    for route, reason in report.stopped_routes.items():
        err.print(f"route {route} stopped: {reason}; its jobs stay queued.", markup=False)
    if stats.budget_stop:
        err.print(f"stopped claiming: {stats.budget_stop}", markup=False)
    if report.interrupted:
        err.print("run interrupted: `imagerun run` continues where it stopped.", markup=False)
    if report.in_remote_batches:
        err.print(
            f"{report.in_remote_batches} job(s) wait in remote batches at the provider: "
            "`imagerun run` applies them once they end (`imagerun status` shows them).",
            markup=False,
        )
    for why in stats.uncollected.values():
        err.print(f"uncollected: {why}.", markup=False)
    if report.counts.get(JobState.UNKNOWN):
        err.print(
            f"{report.counts[JobState.UNKNOWN]} job(s) unknown: see `imagerun status` before "
            "resending (they may already be charged).",
            markup=False,
        )
    console.print(f"Outputs: {cfg.data_dir}", markup=False)
