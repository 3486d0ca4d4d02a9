"""Money after the fact: what attempts were really charged, and what a route charges for.

- :func:`cost_report` / :func:`reprice_attempts` — ``imagerun costs``;
- :func:`probe_billing` (plan: :func:`plan_probes`) — ``imagerun probe-billing``;
- :func:`reconcile` — ``imagerun reconcile``;
- :func:`observed_route` — a route with its observed failure-charge policy applied (the
  worker calls it for every lane);
- :class:`AccountEndpoints` — where a route's balance and call log are read.
"""

from runner.billing.endpoints import AccountEndpoints, BillingUnavailable
from runner.billing.findings import ProbeReport, ProbeResult
from runner.billing.plan import Probe, ProbeOptions, parse_marker, plan_probes, probes_worst_case
from runner.billing.probe import probe_billing
from runner.billing.reconcile import BalanceCheck, ReconcileReport, reconcile
from runner.billing.spend_report import (
    CostReport,
    FailureCharge,
    RepriceSummary,
    cost_report,
    reprice_attempts,
)
from runner.run.observed import apply_observed, observed_route

__all__ = [
    "AccountEndpoints",
    "BalanceCheck",
    "BillingUnavailable",
    "CostReport",
    "FailureCharge",
    "Probe",
    "ProbeOptions",
    "ProbeReport",
    "ProbeResult",
    "ReconcileReport",
    "RepriceSummary",
    "apply_observed",
    "cost_report",
    "observed_route",
    "parse_marker",
    "plan_probes",
    "probe_billing",
    "probes_worst_case",
    "reconcile",
    "reprice_attempts",
]
