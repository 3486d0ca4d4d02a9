"""What ``imagerun probe-billing`` found: one result per probe, and the report."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from runner.billing.plan import Probe
from runner.models import ChargeStatus, Outcome
from runner.store import BatchInfo


@dataclass(frozen=True, slots=True, kw_only=True)
class ProbeResult:
    """What one probe provoked, what the documented policy says, and what was charged."""

    probe: Probe
    attempt_id: str | None
    outcome: Outcome | None
    http_status: int | None
    error: str | None
    expected: ChargeStatus | None
    expected_usd: float | None
    observed: ChargeStatus
    observed_usd: float | None
    log_usd: float | None = None
    balance_delta_usd: float | None = None

    @property
    def provoked(self) -> bool:
        return self.outcome is self.probe.provoke

    def to_json(self) -> dict[str, Any]:
        return {
            "provoke": self.probe.provoke.value,
            "how": self.probe.how,
            "attempt_id": self.attempt_id,
            "outcome": self.outcome.value if self.outcome else None,
            "provoked": self.provoked,
            "http_status": self.http_status,
            "error": self.error,
            "expected": self.expected.value if self.expected else None,
            "expected_usd": self.expected_usd,
            "observed": self.observed.value,
            "observed_usd": self.observed_usd,
            "call_log_usd": self.log_usd,
            "balance_delta_usd": self.balance_delta_usd,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class ProbeReport:
    route: str
    batch: BatchInfo
    worst_case_usd: float
    #: ``call log`` or ``balance``: what the verdicts rest on.
    mode: str
    results: list[ProbeResult]
    notes: list[str] = field(default_factory=list)

    @property
    def spent_usd(self) -> float:
        return round(sum(r.observed_usd or 0.0 for r in self.results), 6)

    def to_json(self) -> dict[str, Any]:
        return {
            "route": self.route,
            "batch": {"id": self.batch.id, "name": self.batch.name},
            "worst_case_usd": self.worst_case_usd,
            "spent_usd": self.spent_usd,
            "mode": self.mode,
            "results": [r.to_json() for r in self.results],
            "notes": self.notes,
        }
