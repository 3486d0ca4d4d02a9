"""``routes``: what can be called, and which keys are set. Needs no database."""

from __future__ import annotations

import os

import click
from rich.table import Table

from runner.cli.command import async_command, settings
from runner.cli.output import console, emit_json
from runner.routes import Catalog


@async_command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--all", "show_all", is_flag=True, help="Include the sandbox-* mirrors.")
async def routes(ctx: click.Context, as_json: bool, show_all: bool) -> None:
    """List routes: provider, shape, endpoint, model, parameters, billing, key variable."""
    catalog = settings(ctx).catalog
    if as_json:
        emit_json([r.public_dict() for _, r in sorted(catalog.routes.items())])
    else:
        console.print(routes_table(catalog, show_all))


def routes_table(catalog: Catalog, show_sandbox: bool) -> Table:
    """One row per route (the ``sandbox`` provider's only with ``show_sandbox``)."""
    table = Table(title="Routes", show_lines=False)
    for col in ("route", "provider", "shape", "model", "params", "billing", "key variable"):
        table.add_column(col, overflow="fold")
    for name in sorted(catalog.routes):
        route = catalog.routes[name]
        if route.provider == "sandbox" and not show_sandbox:
            continue
        params = sorted(route.params - {"images"})
        if route.accepts_edits:
            params.insert(0, "edits")
        sizes = catalog.size_rule(route)
        params = [f"size({sizes})" if p == "size" else p for p in params]
        billing = (
            f"${route.usd_per_call:.3f}/call"
            if route.billing == "call"
            else f"tokens×{route.price_factor:g}"
        )
        key = route.api_key_env + (" ✓" if route.api_key() else " (unset)")
        if route.api_key_default and route.api_key_env not in os.environ:
            key = f"{route.api_key_env} (sandbox default)"
        shape = f"{route.shape.value} {', '.join(route.endpoints)}"
        table.add_row(name, route.provider, shape, route.model, " ".join(params), billing, key)
    return table
