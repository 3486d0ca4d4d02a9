"""Observed failure-charge policies override a route's documented defaults.

``builtin.toml`` (or ``imagerun.toml``) gives what a provider *says* it charges for each
failure class; ``imagerun probe-billing`` and ``imagerun reconcile`` record what it *did*
(``charge_observations``). The newest observation of a class wins for future attempts.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

from runner.abc import ChargePolicy
from runner.models import Outcome
from runner.routes import Route
from runner.store.charges import ChargeObservation


def apply_observed(route: Route, observed: Mapping[Outcome, ChargeObservation]) -> Route:
    """``route`` with its failure charges replaced by the observed ones (successes aside)."""
    charges = dict(route.failure_charges)
    changed = False
    for outcome, obs in observed.items():
        if outcome is Outcome.OK or charges.get(outcome) is obs.charge_status:
            continue
        charges[outcome] = obs.charge_status
        changed = True
    return replace(route, failure_charges=charges) if changed else route


async def observed_route(store: ChargePolicy, route: Route) -> Route:
    """``route`` as observed: what the worker uses to price and hold attempts."""
    return apply_observed(route, await store.observed_policy(route.name))
