"""The reads of recorded work and money: charges, costs, exports and status (billing, exports,
``imagerun status`` and budgets use them)."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:  # records only: the seams import nothing of imagerun at run time
    from runner.models import Outcome
    from runner.store.charges import BalanceSnapshot, BilledAttempt, ChargeObservation, ChargeUpdate
    from runner.store.costs import CostRow, MismatchRow, RemoteCostRow
    from runner.store.exports import ExportJob, ExportOutput
    from runner.store.records import BatchInfo, BatchStatus
    from runner.store.repricing import RepriceInput


@runtime_checkable
class ChargePolicy(Protocol):
    """What was observed about a route's charges for failures."""

    async def observed_policy(self, route: str) -> dict[Outcome, ChargeObservation]:
        """The newest observation of each outcome class on ``route``."""


@runtime_checkable
class Charges(Protocol):
    """What attempts were really charged: the provider's records set against the ledger."""

    async def billed_attempts(
        self,
        *,
        routes: Sequence[str] | None = None,
        batch_ids: Sequence[str] | None = None,
        ids: Sequence[str] | None = None,
    ) -> list[BilledAttempt]:
        """Finished attempts in scope, oldest first (``sending`` ones are still in the air)."""

    async def record_charges(self, updates: Sequence[ChargeUpdate]) -> int:
        """Set each attempt's charge status, evidence and observed amount; returns how many."""

    async def record_observations(self, observations: Sequence[ChargeObservation]) -> None:
        """Keep what was observed about failure charges on a route (newest wins)."""

    async def record_balance(self, snapshot: BalanceSnapshot) -> None:
        """Keep one reading of an account's balance."""

    async def balance_snapshots(self, account: str) -> list[BalanceSnapshot]:
        """Readings of ``account``, oldest first."""


@runtime_checkable
class Costs(Protocol):
    """Spend as recorded, and its repricing with a newer price book."""

    async def cost_rows(self, batch_ids: Sequence[str] | None = None) -> list[CostRow]:
        """Spend grouped by route, outcome, charge status and evidence."""

    async def mismatch_rows(self, batch_ids: Sequence[str] | None = None) -> list[MismatchRow]:
        """Per route: images kept though not what was asked, their attempts and its cost."""

    async def remote_cost_rows(self, batch_ids: Sequence[str] | None = None) -> list[RemoteCostRow]:
        """Per remote batch (oldest first): its finished lines, how many are ok, their cost."""

    async def observations(self, routes: Sequence[str] | None = None) -> list[ChargeObservation]:
        """Every charge observation (of ``routes``), oldest first."""

    async def repricing_inputs(self, batch_ids: Sequence[str] | None = None) -> list[RepriceInput]:
        """Stored usage, outcome and job fields of every finished attempt in scope."""

    async def set_expected(self, prices: Sequence[tuple[str, float]]) -> int:
        """Store recomputed expected costs (attempt id, USD); returns how many."""


@runtime_checkable
class Exports(Protocol):
    """Streaming reads of a batch's outputs and failures, one page of jobs at a time."""

    async def count_export(self, batch_id: str, *, include_failed: bool = False) -> int:
        """How many rows :meth:`iter_outputs` (plus :meth:`iter_failed`) will yield."""

    def iter_outputs(self, batch_id: str) -> AsyncGenerator[list[ExportOutput], None]:
        """The batch's outputs in job-id then ``k`` order."""

    def iter_failed(self, batch_id: str) -> AsyncGenerator[list[ExportJob], None]:
        """The batch's ``failed`` and ``unknown`` jobs in id order, with their last attempt."""


@runtime_checkable
class Reports(Protocol):
    """Status and spend as ``imagerun status`` and budgets see them."""

    async def batch_status(self, batch_list: Sequence[BatchInfo]) -> list[BatchStatus]:
        """Counts by state, outputs, attempts, spend and failure classes for each batch."""

    async def exposure_usd(self, batch_ids: Sequence[str]) -> float:
        """Spend that counts against a budget: charged, possibly charged (at expected cost, or
        worst case), and in flight (at worst case) until the provider says otherwise."""
