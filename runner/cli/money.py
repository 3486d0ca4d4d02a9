"""Money commands: ``costs``, ``probe-billing`` and ``reconcile`` (rendering: ``money_render``)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from runner import app
from runner.billing import (
    AccountEndpoints,
    ProbeOptions,
    cost_report,
    parse_marker,
    plan_probes,
    probe_billing,
    probes_worst_case,
    reconcile,
)
from runner.billing.endpoints import QUOTA_PER_USD
from runner.cli.commands import RunAsync, settings
from runner.cli.money_render import print_costs, print_probe, print_reconcile
from runner.cli.render import console, emit_json, err, money
from runner.config import Settings
from runner.errors import UsageError
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
            endpoints = _endpoints(route, balance_url, log_url, quota_per_usd)
            return await _probe(cfg, route, options, endpoints, yes=yes, as_json=as_json)

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


async def _probe(
    cfg: Settings,
    route: Route,
    options: ProbeOptions,
    endpoints: AccountEndpoints,
    *,
    yes: bool,
    as_json: bool,
) -> int:
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
            endpoints=endpoints,
        )
    if as_json:
        emit_json(report.to_json())
    else:
        print_probe(report)
    return 0


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
