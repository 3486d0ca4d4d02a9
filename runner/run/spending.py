"""Spending: never start an attempt that could push spend past a budget.

A run spends within two kinds of scope, each tracked in this process:

- :class:`RunCap`, from ``imagerun run --budget``: a cap on what the run's batches cost,
  counted from what the database already holds against them.
- :class:`BatchShare`, for a batch with a budget of its own: other processes may be spending
  on the batch too, so this process spends only what the database granted it
  (``runner.store.budgets``), asks for more when an attempt would not fit (one request at a
  time per batch), renews its grants on each heartbeat and forfeits the unspent part of a
  grant that lapsed.

Every attempt reserves its worst case on each of its scopes before it starts
(:meth:`Spending.reserve`), and settles to what it (possibly) cost when it ends
(:meth:`Reservation.settle`), or gives the reservation back when it never started
(:meth:`Reservation.cancel`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field

import anyio

from runner.abc import BudgetGrants, Reports
from runner.models import ChargeStatus
from runner.store import AttemptResult, BatchInfo

#: A batch budget is granted to a worker in shares of at least this many worst-case attempts…
GRANT_ATTEMPTS = 2
#: …or this fraction of the budget, whichever is more (fewer grants, still a fair share).
GRANT_SHARE = 0.02
#: Rounding slack when an attempt's worst case is compared with what is left.
_EPSILON = 1e-9


@dataclass(slots=True, kw_only=True)
class Scope(ABC):
    """What a scope has committed (spent or possibly spent) and holds reserved for attempts."""

    committed_usd: float = 0.0
    reserved_usd: float = 0.0

    @abstractmethod
    def ceiling(self) -> float:
        """What the scope may commit and reserve in all."""

    def room(self) -> float:
        """What is left to reserve."""
        return self.ceiling() - self.committed_usd - self.reserved_usd

    def reserve(self, worst_case_usd: float) -> bool:
        """Reserve room for one attempt; ``False`` when it would not fit."""
        if self.committed_usd + self.reserved_usd + worst_case_usd > self.ceiling() + _EPSILON:
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

    @abstractmethod
    def reached(self, worst_case_usd: float) -> str:
        """Why an attempt of ``worst_case_usd`` may not start (the run's stop reason)."""


@dataclass(slots=True, kw_only=True)
class RunCap(Scope):
    """The cap on a run's spending (``imagerun run --budget``)."""

    cap_usd: float

    def ceiling(self) -> float:
        return self.cap_usd

    def reached(self, worst_case_usd: float) -> str:
        return (
            f"budget reached: ${self.committed_usd + self.reserved_usd:.4f} committed "
            f"of ${self.cap_usd:.2f}; the next job could cost up to ${worst_case_usd:.4f}"
        )


@dataclass(slots=True, kw_only=True)
class BatchShare(Scope):
    """This process's share of a batch's budget: the sum of what the database granted it.

    ``committed_usd`` is this process's own spending on the batch.
    """

    batch_id: str
    #: The batch's whole budget, shared by every process working on it.
    budget_usd: float
    granted_usd: float = 0.0

    def ceiling(self) -> float:
        return self.granted_usd

    def reached(self, worst_case_usd: float) -> str:
        return (
            f"budget reached: batch {self.batch_id}'s ${self.budget_usd:.2f} is spent, in "
            "flight or granted to other live workers; the next job could cost up to "
            f"${worst_case_usd:.4f}"
        )

    def extend(self, grant_usd: float) -> None:
        """Add a grant (which may let the next reservation fit again)."""
        self.granted_usd += grant_usd

    def forfeit(self) -> None:
        """Drop the unspent part of the share (a lapsed grant may have gone to others)."""
        self.granted_usd = self.committed_usd + self.reserved_usd


@dataclass(frozen=True, slots=True, kw_only=True)
class Reservation:
    """One attempt's worst case, held on each of its scopes until it settles or is cancelled."""

    #: What is held on each of ``scopes``.
    worst_case_usd: float
    scopes: tuple[Scope, ...] = ()

    def settle(self, exposure_usd: float) -> None:
        """The attempt ended: count what it (possibly) cost instead of its worst case."""
        for scope in self.scopes:
            scope.settle(self.worst_case_usd, exposure_usd)

    def cancel(self) -> None:
        """The attempt never started: give its worst case back."""
        for scope in self.scopes:
            scope.cancel(self.worst_case_usd)


#: An attempt no budget applies to holds nothing (one instance serves them all).
UNLIMITED = Reservation(worst_case_usd=0.0)


def exposure_of(result: AttemptResult) -> float:
    """What an attempt counts against a budget: anything not known to be free."""
    if result.charge_status is ChargeStatus.NOT_CHARGED:
        return 0.0
    return result.expected_usd or 0.0


@dataclass(slots=True, kw_only=True)
class Spending:
    """The budget scopes of one run process, and the reservations attempts take on them.

    Args:
        store: where batch shares are granted.
        worker_id: the process's worker id (the holder of its grants).
        hold_s: how long a grant is held without renewal (see ``runner.store.budgets``).
        cap: the run's cap, if any.
        shares: this process's share of each batch that has a budget, by batch id.
    """

    store: BudgetGrants
    worker_id: str
    hold_s: float = 120.0
    cap: RunCap | None = None
    shares: dict[str, BatchShare] = field(default_factory=dict)
    #: Why the last reservation was refused (``None`` while every one fitted).
    stopped: str | None = None
    _grant_locks: dict[str, anyio.Lock] = field(default_factory=dict)

    async def open(
        self, reports: Reports, batches: Sequence[BatchInfo], *, cap_usd: float | None
    ) -> None:
        """Set up the scopes of a run over ``batches`` (``cap_usd``: ``run --budget``).

        The run's cap counts from what ``reports`` already holds against the batches.
        """
        if cap_usd is not None:
            spent = await reports.exposure_usd([b.id for b in batches])
            self.cap = RunCap(cap_usd=cap_usd, committed_usd=spent)
        for batch in batches:
            if batch.budget_usd is not None:
                # Shared with any other worker on the batch: spent as the database grants it.
                self.shares[batch.id] = BatchShare(batch_id=batch.id, budget_usd=batch.budget_usd)

    async def reserve(self, batch_id: str, worst_case_usd: float) -> Reservation | None:
        """Reserve an attempt's worst case on the run's cap and its batch's share.

        Returns ``None`` when it does not fit (:attr:`stopped` then says why).
        """
        cap, share = self.cap, self.shares.get(batch_id)
        if cap is not None and not cap.reserve(worst_case_usd):
            self.stopped = cap.reached(worst_case_usd)
            return None
        if share is None:
            if cap is None:
                return UNLIMITED
            return Reservation(worst_case_usd=worst_case_usd, scopes=(cap,))
        if not share.reserve(worst_case_usd) and not await self._grow(share, worst_case_usd):
            if cap is not None:
                cap.cancel(worst_case_usd)
            self.stopped = share.reached(worst_case_usd)
            return None
        scopes: tuple[Scope, ...] = (share,) if cap is None else (cap, share)
        return Reservation(worst_case_usd=worst_case_usd, scopes=scopes)

    async def renew(self) -> None:
        """Renew this process's grants (on each heartbeat); forfeit the shares that lapsed."""
        if not self.shares:
            return
        for batch_id in await self.store.renew_budget_grants(self.worker_id, self.hold_s):
            if (share := self.shares.get(batch_id)) is not None:
                share.forfeit()

    async def _grow(self, scope: BatchShare, worst_case_usd: float) -> bool:
        """Ask the database for more of a batch's shared budget, then reserve again.

        One request at a time per batch: the lanes that ran out meanwhile first look whether
        the last grant made room, instead of each taking a share of their own.
        """
        lock = self._grant_locks.setdefault(scope.batch_id, anyio.Lock())
        async with lock:
            if scope.reserve(worst_case_usd):
                return True
            need = worst_case_usd - scope.room()
            want = max(worst_case_usd * GRANT_ATTEMPTS, scope.budget_usd * GRANT_SHARE, need)
            granted = await self.store.grant_budget(
                scope.batch_id, self.worker_id, want, at_least=need, hold_s=self.hold_s
            )
            if granted > 0:
                scope.extend(granted)
            return scope.reserve(worst_case_usd)
