"""Budget caps: never start an attempt that could push spend past the limit."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class Budget:
    """A spending cap over a scope (a run, or one batch), tracked in this process.

    ``committed`` starts at what the database already counts against the scope (charged, or
    possibly charged, attempts); every attempt reserves its worst case before it starts and
    settles to its expected cost when it ends.
    """

    limit_usd: float
    committed_usd: float = 0.0
    reserved_usd: float = 0.0
    exhausted: bool = False

    def reserve(self, worst_case_usd: float) -> bool:
        """Reserve room for one attempt; ``False`` (and ``exhausted``) when it would not fit."""
        if self.committed_usd + self.reserved_usd + worst_case_usd > self.limit_usd + 1e-9:
            self.exhausted = True
            return False
        self.reserved_usd += worst_case_usd
        return True

    def settle(self, worst_case_usd: float, cost_usd: float) -> None:
        """Release a reservation and commit what the attempt (possibly) cost."""
        self.reserved_usd = max(0.0, self.reserved_usd - worst_case_usd)
        self.committed_usd += cost_usd

    def cancel(self, worst_case_usd: float) -> None:
        """Release a reservation for an attempt that never started."""
        self.reserved_usd = max(0.0, self.reserved_usd - worst_case_usd)
