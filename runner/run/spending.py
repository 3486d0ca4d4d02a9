"""Budget caps: never start an attempt that could push spend past the limit."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class Budget:
    """A spending cap over a scope (a run, or one batch), tracked in this process.

    For a run, ``limit`` is the cap and ``committed`` starts at what the database already
    counts against the batches (charged, or possibly charged, attempts). For a batch, which
    other processes may be spending too, ``limit`` is what the database granted this process
    (:meth:`extend` adds a grant; see ``runner.store.budgets``) and ``committed`` this
    process's own spending. Either way every attempt reserves its worst case before it starts
    and settles to its expected cost when it ends.
    """

    limit_usd: float
    committed_usd: float = 0.0
    reserved_usd: float = 0.0
    exhausted: bool = False
    #: Set for a batch's budget, which is shared through grants.
    batch_id: str | None = None
    #: The batch's whole budget (for messages; ``limit_usd`` is this process's share).
    cap_usd: float | None = None

    def room(self) -> float:
        """What is left to reserve."""
        return self.limit_usd - self.committed_usd - self.reserved_usd

    def forfeit(self) -> None:
        """Drop the unspent part of the limit (a lapsed grant may have gone to others)."""
        self.limit_usd = self.committed_usd + self.reserved_usd

    def extend(self, grant_usd: float) -> None:
        """Raise the limit by a grant (which may let the next reservation fit again)."""
        self.limit_usd += grant_usd
        self.exhausted = False

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
