"""How the billing reports read: ``costs``, ``probe-billing`` and ``reconcile`` (``--json`` output
is each report's ``to_json``)."""

from __future__ import annotations

from rich.table import Table

from runner.billing import CostReport, ProbeReport, ReconcileReport
from runner.cli.output import console, err, money
from runner.models import ChargeStatus


def print_costs(report: CostReport) -> None:
    """Spend by route, outcome and charge status; per route (a Batch API route beside its
    synchronous price) and per remote batch; totals, then failure charges."""
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
    if report.routes:
        console.print(_routes_table(report))
    if report.remote:
        console.print(_remote_table(report))
    console.print(
        f"Charged {money(report.total(ChargeStatus.CHARGED))}; "
        f"{report.count(ChargeStatus.NOT_CHARGED)} attempt(s) not charged; "
        f"{report.count(ChargeStatus.UNKNOWN)} unknown, possibly "
        f"{money(report.total(ChargeStatus.UNKNOWN))} more.",
        markup=False,
    )
    for m in report.mismatched:
        console.print(
            f"{m.route}: {m.images} image(s) kept though not the size or format asked, from "
            f"{m.attempts} attempt(s) costing {money(m.cost_usd)} (see `asked`/`got` in exports).",
            markup=False,
        )
    if report.failures:
        console.print(_failures_table(report))
    if report.count(ChargeStatus.UNKNOWN):
        err.print(
            "`imagerun reconcile --route R` settles unknown charges from the provider's call log.",
            markup=False,
        )


def _routes_table(report: CostReport) -> Table:
    """Spend per route; a Batch API route's beside what it would have cost synchronously."""
    table = Table(title="Spend by route")
    for col in ("route", "attempts", "charged", "unknown (possible)", "price"):
        table.add_column(col, overflow="fold")
    table.add_column("at the synchronous price")
    for r in report.routes:
        sync = r.synchronous_usd
        table.add_row(
            r.route,
            str(r.attempts),
            money(r.charged_usd),
            money(r.unknown_usd),
            "synchronous" if sync is None else f"batch × {r.batch_discount:g}",
            "-"
            if sync is None
            else f"{money(sync)} (saved {money(sync - r.charged_usd - r.unknown_usd)})",
        )
    return table


def _remote_table(report: CostReport) -> Table:
    """Each remote batch: the provider's id and status, its lines, and their batch-price cost."""
    discounts = {r.route: r.batch_discount for r in report.routes}
    table = Table(title="Remote batches (Batch API lines, at the batch price)")
    for col in ("remote batch", "route", "status", "lines", "ok", "cost"):
        table.add_column(col, overflow="fold")
    table.add_column("at the synchronous price")
    for rb in report.remote:
        discount = discounts.get(rb.route, 1.0) or 1.0
        table.add_row(
            rb.remote_id or f"{rb.id} (not created)",
            rb.route,
            rb.status or "-",
            str(rb.lines),
            str(rb.ok),
            money(rb.cost_usd),
            money(rb.cost_usd / discount) if discount != 1.0 else "-",
        )
    return table


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
    """One row per probe: what was provoked, what came back and what it was charged."""
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
    """What the call log decided, what is still unknown, and how the balance moved."""
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
