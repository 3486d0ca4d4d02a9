"""The seams of imagerun: what the engine, exports and billing need of the job store.

Each role is a small :class:`~typing.Protocol`, documented once in this package, that
:class:`runner.store.Store` plays; consumers import the roles they use from here (an export
:class:`Exports` alone, the engine the sets in :mod:`runner.run.stores`). The roles are grouped
by who depends on them:

- ``jobs``: the run loop's (:class:`Queue`, :class:`Leases`, :class:`Ledger` and the
  group-committing :class:`GroupLedger`, :class:`Workers`, :class:`LeaseRecovery`,
  :class:`FileAdoption`, :class:`RemoteBatches`);
- ``sharing``: what workers share through the database (:class:`RouteState`,
  :class:`RoutePace`, :class:`BudgetGrants`, :class:`Dialect`);
- ``reads``: recorded work and money (:class:`ChargePolicy`, :class:`Charges`, :class:`Costs`,
  :class:`Exports`, :class:`Reports`).

Every verb commits before it returns unless its documentation says otherwise, and raises
:class:`runner.errors.StoreError` (or a subclass) when the database fails it. The seams import
nothing of imagerun at run time: the records they name are for type checking only.
"""

from runner.abc.jobs import (
    FileAdoption,
    GroupCommit,
    GroupLedger,
    LeaseRecovery,
    Leases,
    Ledger,
    Queue,
    RemoteBatches,
    Workers,
)
from runner.abc.reads import ChargePolicy, Charges, Costs, Exports, Reports
from runner.abc.sharing import BudgetGrants, Dialect, RoutePace, RouteState

__all__ = [
    "BudgetGrants",
    "ChargePolicy",
    "Charges",
    "Costs",
    "Dialect",
    "Exports",
    "FileAdoption",
    "GroupCommit",
    "GroupLedger",
    "LeaseRecovery",
    "Leases",
    "Ledger",
    "Queue",
    "RemoteBatches",
    "Reports",
    "RoutePace",
    "RouteState",
    "Workers",
]
