"""What was spent and what a route charges for: ``costs``, ``probe-billing`` and ``reconcile``."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from runner import app
from runner.billing import AccountEndpoints, ProbeOptions, parse_marker
from runner.billing.endpoints import QUOTA_PER_USD
from runner.cli.billing_reports import print_costs, print_probe, print_reconcile
from runner.cli.command import async_command, settings
from runner.cli.output import console, emit_json, err, money, warn
from runner.config import Settings
from runner.errors import UsageError


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
    cfg: Settings, route_name: str, balance_url: str | None, log_url: str | None, quota: float
) -> AccountEndpoints:
    return AccountEndpoints.for_route(
        cfg.catalog.get(route_name), balance_url=balance_url, log_url=log_url, quota_per_usd=quota
    )


@async_command()
@click.argument("batch", required=False)
@click.option("--json", "as_json", is_flag=True)
@click.option("--reprice", is_flag=True, help="Recompute expected costs with today's prices.")
async def costs(ctx: click.Context, batch: str | None, as_json: bool, reprice: bool) -> None:
    """Spend by route, outcome and charge status; failure charges expected vs observed."""
    report = await app.costs(settings(ctx), batch, reprice=reprice)
    if as_json:
        emit_json(report.to_json())
    else:
        print_costs(report)


@async_command("probe-billing")
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
async def probe_billing(
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
) -> int:
    """A small, serial, confirmed billing test: which failures does ROUTE charge?"""
    cfg = settings(ctx)
    endpoints = _endpoints(cfg, route_name, balance_url, log_url, quota_per_usd)
    options = ProbeOptions(
        moderation=not no_moderation,
        markers=dict(parse_marker(m) for m in markers),
        timeout_after=timeout_after,
        settle=settle,
        timeout_settle=timeout_settle,
        poll=poll,
        **({"moderation_prompt": moderation_prompt} if moderation_prompt else {}),
    )
    plan = app.probe_plan(cfg, route_name, options)
    if not _confirmed(plan, moderation=options.moderation, yes=yes):
        warn("Nothing sent.")
        return 1
    report = await app.probe_billing(cfg, route_name, options, endpoints)
    if as_json:
        emit_json(report.to_json())
    else:
        print_probe(report)
    return 0


@async_command()
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
async def reconcile(
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
    cfg = settings(ctx)
    report = await app.reconcile(
        cfg,
        route_name,
        endpoints=_endpoints(cfg, route_name, balance_url, log_url, quota_per_usd),
        log_file=log_file,
        batch_ref=batch,
        settle=settle,
    )
    if as_json:
        emit_json(report.to_json())
    else:
        print_reconcile(report)


def _confirmed(plan: app.ProbePlan, *, moderation: bool, yes: bool) -> bool:
    """Show the plan and its worst case; ask (on a terminal) unless ``yes``."""
    route, worst = plan.route, plan.worst_case_usd
    target = err if yes else console
    target.print(
        f"probe-billing on route {route.name} ({route.base_url}): {len(plan.probes)} request(s), "
        f"one at a time; at most {money(worst)}:",
        markup=False,
    )
    for probe in plan.probes:
        target.print(f"  {probe.provoke.value:<20} {probe.how}", markup=False)
    if moderation:
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
