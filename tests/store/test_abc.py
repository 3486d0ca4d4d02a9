"""The concrete store plays every role of :mod:`runner.abc`, with the signatures documented there.

mypy checks the same statically (``runner.store._plays_every_role``); this test also catches a
verb whose parameters drifted from its protocol's (a renamed keyword, a lost default).
"""

from __future__ import annotations

import importlib
import inspect
from pkgutil import iter_modules
from typing import Any

import pytest

from runner import abc
from runner.store import Store
from runner.store.groupcommit import LedgerWriter

#: The seams package's modules (roles are grouped by who depends on them).
SEAMS = [
    abc,
    *(importlib.import_module(f"{abc.__name__}.{m.name}") for m in iter_modules(abc.__path__)),
]
ROLES = [getattr(abc, name) for name in abc.__all__]
#: Every role but the group-committing ledger, which the store hands out (``group_ledger``).
STORE_ROLES = [role for role in ROLES if role is not abc.GroupLedger]


def _members(protocol: type) -> list[str]:
    names: set[str] = set()
    for klass in protocol.__mro__:
        if klass.__module__.startswith(f"{abc.__name__}."):
            names.update(n for n in vars(klass) if not n.startswith("_"))
    return sorted(names)


def _params(fn: Any) -> list[tuple[str, Any, bool]]:
    """Each parameter's name, kind and whether it has a default (``self`` left out)."""
    sig = inspect.signature(fn)
    return [
        (p.name, p.kind, p.default is not p.empty)
        for p in sig.parameters.values()
        if p.name != "self"
    ]


def _assert_conforms(impl: type, protocol: type) -> None:
    for name in _members(protocol):
        declared = inspect.getattr_static(protocol, name)
        if isinstance(declared, property):
            continue  # a read-only attribute: checked by isinstance below
        assert hasattr(impl, name), f"{impl.__name__} lacks {protocol.__name__}.{name}"
        wanted = _params(declared)
        got = _params(getattr(impl, name))
        # The implementation may take more, but only as optional keywords after the protocol's.
        assert got[: len(wanted)] == wanted, f"{impl.__name__}.{name}: {got} != {wanted}"
        assert all(has_default for _, _, has_default in got[len(wanted) :]), name
        assert inspect.iscoroutinefunction(getattr(impl, name)) == (
            inspect.iscoroutinefunction(declared)
        ), f"{impl.__name__}.{name}: async-ness differs from the protocol"


def test_every_class_of_the_seams_module_is_a_runtime_checkable_protocol() -> None:
    assert len(ROLES) > 10
    for role in ROLES:
        assert getattr(role, "_is_protocol", False), role.__name__
        assert getattr(role, "_is_runtime_protocol", False), role.__name__


@pytest.mark.parametrize("role", STORE_ROLES, ids=lambda role: role.__name__)
def test_the_store_class_has_every_verb_of_each_role(role: type) -> None:
    _assert_conforms(Store, role)


@pytest.mark.anyio
async def test_an_open_store_is_an_instance_of_each_role(sqlite_url: str) -> None:
    store = await Store.open(sqlite_url)
    try:
        assert [r.__name__ for r in STORE_ROLES if not isinstance(store, r)] == []
        assert not isinstance(store, abc.GroupLedger)  # its ledger commits as it goes
    finally:
        await store.close()


@pytest.mark.anyio
async def test_the_group_ledger_of_a_store_is_a_group_ledger(sqlite_url: str) -> None:
    store = await Store.open(sqlite_url)
    ledger = store.group_ledger()
    await store.close()
    assert isinstance(ledger, abc.GroupLedger)
    assert isinstance(ledger, LedgerWriter)
    _assert_conforms(LedgerWriter, abc.GroupLedger)


def test_the_seams_module_imports_nothing_of_imagerun_at_run_time() -> None:
    """Any layer may import ``runner.abc`` without a cycle: its records are typing-only."""
    top_level = [
        line
        for module in SEAMS
        for line in inspect.getsource(module).splitlines()
        if line.startswith(("from runner", "import runner"))
        and not line.startswith(f"from {abc.__name__}.")
    ]
    assert top_level == []


def test_every_role_of_the_seams_is_exported_from_the_package() -> None:
    defined = {
        name
        for module in SEAMS[1:]
        for name, role in vars(module).items()
        if isinstance(role, type) and role.__module__ == module.__name__
    }
    assert defined == set(abc.__all__)
