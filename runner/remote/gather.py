"""Runnable jobs → groups that each fit one remote batch.

A remote batch has one endpoint and one model, at most ``batch_max_lines`` lines and an input
file of at most ``batch_max_bytes``; its metadata names one imagerun batch. Jobs are grouped
by those, in the order they came, and a group is closed when the next line would break
either limit.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass(frozen=True, slots=True, kw_only=True)
class Sized(Generic[T]):
    """One line to be: what it belongs with, and its size in the input file."""

    item: T
    batch_id: str
    endpoint: str
    model: str
    size: int

    @property
    def key(self) -> tuple[str, str, str]:
        return self.batch_id, self.endpoint, self.model


@dataclass(slots=True, kw_only=True)
class Group(Generic[T]):
    """The lines of one remote batch."""

    batch_id: str
    endpoint: str
    model: str
    items: list[T] = field(default_factory=list)
    bytes: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class Gathered(Generic[T]):
    """Groups to send, and the lines too large for any input file."""

    groups: list[Group[T]]
    too_large: list[T]


def gather(items: Iterable[Sized[T]], *, max_lines: int, max_bytes: int) -> Gathered[T]:
    """Split ``items`` into groups of one batch, endpoint and model each, under both limits."""
    open_groups: dict[tuple[str, str, str], Group[T]] = {}
    done: list[Group[T]] = []
    too_large: list[T] = []
    for sized in items:
        if sized.size > max_bytes:
            too_large.append(sized.item)
            continue
        group = open_groups.get(sized.key)
        if group is not None and (
            len(group.items) >= max_lines or group.bytes + sized.size > max_bytes
        ):
            done.append(group)
            group = None
        if group is None:
            group = open_groups[sized.key] = Group(
                batch_id=sized.batch_id, endpoint=sized.endpoint, model=sized.model
            )
        group.items.append(sized.item)
        group.bytes += sized.size
    return Gathered(groups=done + list(open_groups.values()), too_large=too_large)
