"""What the engine needs of the job store: the sets of :mod:`runner.abc` roles its parts ask
for together (each role is documented there)."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from runner.abc import (
    BudgetGrants,
    ChargePolicy,
    Dialect,
    FileAdoption,
    GroupCommit,
    LeaseRecovery,
    Leases,
    Queue,
    RemoteBatches,
    Reports,
    RoutePace,
    RouteState,
    Workers,
)


@runtime_checkable
class JobStore(Leases, BudgetGrants, Protocol):
    """What running one job needs besides its :class:`~runner.abc.Ledger`."""


@runtime_checkable
class RunStore(
    Queue,
    JobStore,
    Workers,
    LeaseRecovery,
    FileAdoption,
    RouteState,
    RoutePace,
    ChargePolicy,
    Reports,
    GroupCommit,
    RemoteBatches,
    Dialect,
    Protocol,
):
    """What a run needs: claiming, recording, recovering and sharing with other workers."""
