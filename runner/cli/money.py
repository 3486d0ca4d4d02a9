"""Money commands: ``costs``, ``probe-billing`` and ``reconcile``."""

from __future__ import annotations

import sys
from pathlib import Path

import click
from rich.table import Table

from runner import app
from runner.billing import (
    AccountEndpoints,
    CostReport,
    ProbeOptions,
    ProbeReport,
    ReconcileReport,
    cost_report,
    parse_marker,
    plan_probes,
    probe_billing,
    probes_worst_case,
    reconcile,
)
from runner.billing.endpoints import QUOTA_PER_USD
from runner.cli.commands import RunAsync, settings
from runner.cli.render import console, emit_json, err, money
from runner.config import Settings
from runner.errors import UsageError
from runner.models import ChargeStatus
from runner.routes import Route


def _endpoint_options(fn: click.decorators.FC) -> click.decorators.FC:
    for option in reversed(
        (
            click.option("--balance-url", help="Balance endpoint (default ROOT/api/usage/token)."),
            click.option("--log-url", help="Call-log endpoint (default ROOT/api/log/token)."),
            click.option(
                "--quota-per-usd",
                type=float,
                default=QUOTA_PER_USD,
                show_default=True,
                help="Quota units per US dollar in the provider's replies.",
            ),
        )
    ):
        fn = option(fn)
    return fn


def _endpoints(
    route: Route, balance_url: str | None, log_url: str | None, quota: float
) -> AccountEndpoints:
    return AccountEndpoints.for_route(
        route, balance_url=balance_url, log_url=log_url, quota_per_usd=quota
    )


def register(main: click.Group, run_async: RunAsync) -> None:
    """Attach ``costs``, ``probe-billing`` and ``reconcile`` to ``main``."""
    _register_costs(main, run_async)
    _register_probe(main, run_async)
    _register_reconcile(main, run_async)


def _register_costs(main: click.Group, run_async: RunAsync) -> None:
    @main.command()
    @click.argument("batch", required=False)
    @click.option("--json", "as_json", is_flag=True)
    @click.option("--reprice", is_flag=True, help="Recompute expected costs with today's prices.")
    @click.pass_context
    def costs(ctx: click.Context, batch: str | None, as_json: bool, reprice: bool) -> None:
        """Spend by route, outcome and charge status; failure charges expected vs observed."""

        async def go() -> None:
            cfg = settings(ctx)
            async with app.open_store(cfg) as store:
                found = await app.resolve_batches(store, [batch] if batch else [])
                report = await cost_report(
                    store,
                    cfg.catalog,
                    cfg.book,
                    found,
                    all_batches=batch is None,
                    do_reprice=reprice,
                )
            if as_json:
                emit_json(report.to_json())
            else:
                print_costs(report)

        run_async(ctx, go)


def _register_probe(main: click.Group, run_async: RunAsync) -> None:
    @main.command("probe-billing")
    @click.option("--route", "-r", "route_name", required=True)
    @click.option("--yes", "-y", is_flag=True, help="Do not ask before spending.")
    @click.option(
        "--no-moderation",
        is_flag=True,
        help="Skip the moderation probe (blocked requests can count against an account).",
    )
    @click.option("--moderation-prompt", help="A prompt the provider will block.")
    @click.option(
        "--provoke",
        "markers",
        multiple=True,
        help="CLASS=MARKER: a prompt marker your test server turns into CLASS (repeatable).",
    )
    @click.option("--timeout-after", type=float, default=3.0, show_default=True)
    @click.option(
        "--settle",
        type=float,
        default=60.0,
        show_default=True,
        help="Seconds to wait for a charge to appear before calling it 'not charged'.",
    )
    @click.option(
        "--timeout-settle",
        type=float,
        help="Wait after the timeout probe (default: the route's timeout; the upstream "
        "generation goes on and is charged when it ends).",
    )
    @click.option("--poll", type=float, default=1.0, show_default=True)
    @_endpoint_options
    @click.option("--json", "as_json", is_flag=True)
    @click.pass_context
    def probe_billing_cmd(
        ctx: click.Context,
        route_name: str,
        yes: bool,
        no_moderation: bool,
        moderation_prompt: str | None,
        markers: tuple[str, ...],
        timeout_after: float,
        settle: float,
        timeout_settle: float | None,
        poll: float,
        balance_url: str | None,
        log_url: str | None,
        quota_per_usd: float,
        as_json: bool,
    ) -> None:
        """A small, serial, confirmed billing test: which failures does ROUTE charge?"""

        async def go() -> int:
            cfg = settings(ctx)
            route = cfg.catalog.get(route_name)
            options = ProbeOptions(
                moderation=not no_moderation,
                markers=dict(parse_marker(m) for m in markers),
                timeout_after=timeout_after,
                settle=settle,
                timeout_settle=timeout_settle,
                poll=poll,
                **({"moderation_prompt": moderation_prompt} if moderation_prompt else {}),
            )
            if not _confirmed(cfg, route, options, yes=yes):
                err.print("Nothing sent.", markup=False)
                return 1
            async with app.open_store(cfg) as store:
                report = await probe_billing(
                    store,
                    catalog=cfg.catalog,
                    book=cfg.book,
                    data_dir=cfg.data_dir,
                    environ=cfg.environ,
                    route_name=route.name,
                    options=options,
                    endpoints=_endpoints(route, balance_url, log_url, quota_per_usd),
                )
            if as_json:
                emit_json(report.to_json())
            else:
                print_probe(report)
            return 0

        ctx.exit(run_async(ctx, go))


def _register_reconcile(main: click.Group, run_async: RunAsync) -> None:
    @main.command("reconcile")
    @click.option("--route", "-r", "route_name", required=True)
    @click.option(
        "--log",
        "log_file",
        type=click.Path(path_type=Path, dir_okay=False),
        help="An exported call log (JSON, JSON lines or CSV) instead of the provider's API.",
    )
    @click.option("--batch", "-b", help="Only this batch's attempts.")
    @click.option(
        "--settle",
        type=float,
        help="Seconds after an attempt before a missing row means 'not charged' "
        "(default: the route's timeout).",
    )
    @_endpoint_options
    @click.option("--json", "as_json", is_flag=True)
    @click.pass_context
    def reconcile_cmd(
        ctx: click.Context,
        route_name: str,
        log_file: Path | None,
        batch: str | None,
        settle: float | None,
        balance_url: str | None,
        log_url: str | None,
        quota_per_usd: float,
        as_json: bool,
    ) -> None:
        """Match attempts with the provider's call log; record what was really charged."""

        async def go() -> None:
            cfg = settings(ctx)
            route = cfg.catalog.get(route_name)
            async with app.open_store(cfg) as store:
                found = await store.find_batch(batch) if batch else None
                report = await reconcile(
                    store,
                    cfg.catalog,
                    route.name,
                    environ=cfg.environ,
                    endpoints=_endpoints(route, balance_url, log_url, quota_per_usd),
                    log_file=log_file,
                    batch=found,
                    settle=settle,
                )
            if as_json:
                emit_json(report.to_json())
            else:
                print_reconcile(report)

        run_async(ctx, go)


def _confirmed(cfg: Settings, route: Route, options: ProbeOptions, *, yes: bool) -> bool:
    """Show the plan and its worst case; ask (on a terminal) unless ``--yes``."""
    probes = plan_probes(cfg.catalog, route, options)
    worst = probes_worst_case(cfg.book, route, probes)
    target = err if yes else console
    target.print(
        f"probe-billing on route {route.name} ({route.base_url}): {len(probes)} request(s), "
        f"one at a time; at most {money(worst)}:",
        markup=False,
    )
    for probe in probes:
        target.print(f"  {probe.provoke.value:<20} {probe.how}", markup=False)
    if options.moderation:
        target.print(
            "  note: a blocked request can count against your account's standing on a real "
            "provider (--no-moderation skips it).",
            markup=False,
        )
    if yes:
        return True
    if not sys.stdin.isatty():
        raise UsageError("no terminal to confirm on: pass --yes to spend without asking")
    return click.confirm(f"Spend up to {money(worst)} on these probes?", default=False)


def print_costs(report: CostReport) -> None:
    scope = ", ".join(b.name for b in report.batches) or "(no batches)"
    if report.reprice is not None:
        r = report.reprice
        console.print(
            f"Repriced {r.attempts} attempt(s) with the current price book: expected total "
            f"{money(r.before_usd)} → {money(r.after_usd)} ({r.changed} changed).",
            markup=False,
        )
        for reason in r.skipped:
            err.print(f"not repriced: {reason}", markup=False)
    table = Table(title=f"Spend: {scope}")
    for col in ("route", "outcome", "charge", "evidence", "attempts", "expected", "observed"):
        table.add_column(col, overflow="fold")
    table.add_column("cost")
    for row in report.rows:
        table.add_row(
            row.route,
            row.outcome,
            row.charge_status.value,
            row.evidence.value,
            str(row.attempts),
            money(row.expected_usd),
            money(row.observed_usd) if row.observed else "-",
            money(row.cost_usd)
            + (" (possible)" if row.charge_status is ChargeStatus.UNKNOWN else ""),
        )
    console.print(table)
    console.print(
        f"Charged {money(report.total(ChargeStatus.CHARGED))}; "
        f"{report.count(ChargeStatus.NOT_CHARGED)} attempt(s) not charged; "
        f"{report.count(ChargeStatus.UNKNOWN)} unknown, possibly "
        f"{money(report.total(ChargeStatus.UNKNOWN))} more.",
        markup=False,
    )
    if report.failures:
        console.print(_failures_table(report))
    if report.count(ChargeStatus.UNKNOWN):
        err.print(
            "`imagerun reconcile --route R` settles unknown charges from the provider's call log.",
            markup=False,
        )


def _failures_table(report: CostReport) -> Table:
    table = Table(title="Failure charges: documented policy vs observed")
    for col in ("route", "outcome", "expected", "observed", "evidence", "agrees", "ledger"):
        table.add_column(col, overflow="fold")
    for f in report.failures:
        obs = f.observed
        seen = "-"
        if obs is not None:
            amount = f" {money(obs.observed_usd)}" if obs.observed_usd else ""
            seen = f"{obs.charge_status.value}{amount} ({obs.observed_at:%Y-%m-%d %H:%M})"
        agrees = {True: "yes", False: "NO", None: "-"}[f.agrees]
        ledger = ", ".join(f"{k} {v}" for k, v in sorted(f.attempts.items())) or "-"
        table.add_row(
            f.route,
            f.outcome,
            f.expected.value if f.expected else "-",
            seen,
            obs.evidence.value if obs else "-",
            agrees,
            ledger,
        )
    return table


def print_probe(report: ProbeReport) -> None:
    table = Table(title=f"Billing probe of {report.route} ({report.batch.name})")
    for col in ("probe", "outcome", "HTTP", "expected", "observed", "charged", "call log"):
        table.add_column(col, overflow="fold")
    table.add_column("balance Δ")
    for r in report.results:
        outcome = r.outcome.value if r.outcome else "not sent"
        if r.outcome is not None and not r.provoked:
            outcome += f" (wanted {r.probe.provoke.value})"
        table.add_row(
            f"{r.probe.provoke.value}: {r.probe.how}",
            outcome,
            str(r.http_status or "-"),
            r.expected.value if r.expected else "-",
            r.observed.value,
            money(r.observed_usd),
            money(r.log_usd),
            money(r.balance_delta_usd),
        )
    console.print(table)
    console.print(
        f"Spent {money(report.spent_usd)} (at most {money(report.worst_case_usd)}); verdicts "
        f"from the {report.mode}. Observed policy recorded for route {report.route}: "
        "future attempts there use it.",
        markup=False,
    )
    for r in report.results:
        if r.expected is not None and r.observed is not r.expected and r.outcome:
            err.print(
                f"{r.outcome.value}: documented {r.expected.value}, observed {r.observed.value}",
                markup=False,
            )
    for note in report.notes:
        err.print(f"note: {note}", markup=False)


def print_reconcile(report: ReconcileReport) -> None:
    scope = f"batch {report.batch.name}" if report.batch else "all batches"
    matched = ", ".join(f"{k} {v}" for k, v in sorted(report.matched.items())) or "none"
    lines = [
        f"Reconciled route {report.route} ({scope}) with {report.source}: "
        f"{report.log_rows} charge row(s), {report.attempts} attempt(s).",
        f"Decided: {matched}; {report.changed} attempt(s) updated.",
        f"Charged {report.charged} attempt(s), {money(report.charged_usd)}; not charged "
        f"{report.not_charged}; still unknown {report.unknown} "
        f"(possibly {money(report.unknown_possible_usd)}).",
        f"Ledger total for the scope: {money(report.ledger_usd)}.",
    ]
    if report.unmatched_rows:
        lines.append(
            f"{report.unmatched_rows} charge row(s) ({money(report.unmatched_usd)}) match no "
            "attempt on this account's routes (other clients of the key?)."
        )
    if report.balance is not None:
        b = report.balance
        lines.append(
            f"Balance moved {money(b.delta_usd)} between {b.since:%Y-%m-%d %H:%M:%S} and "
            f"{b.until:%H:%M:%S}; the ledger says {money(b.ledger_usd)} "
            f"(gap {money(b.gap_usd)}; {money(b.unknown_usd)} still unknown)."
        )
    for line in lines:
        console.print(line, markup=False)
    if report.observations:
        seen = ", ".join(f"{o.outcome.value} {o.charge_status.value}" for o in report.observations)
        console.print(f"Observed failure charges recorded: {seen}.", markup=False)
    for note in report.notes:
        err.print(f"note: {note}", markup=False)
