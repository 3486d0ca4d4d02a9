"""Batches the sandbox knows: their lifecycle state, counts, and the tasks that run them.

A :class:`BatchRecord` is changed only by the server's event loop (its runner task and the
cancel endpoint); :meth:`BatchRegistry.clear` may be called from another thread (a test's
reset) and hands the task cancellations to that loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import anyio

from runner.sandbox.tokens import ImageUsage


class BatchStatus(StrEnum):
    """Where a batch is in its life."""

    VALIDATING = "validating"
    FAILED = "failed"
    IN_PROGRESS = "in_progress"
    FINALIZING = "finalizing"
    COMPLETED = "completed"
    EXPIRED = "expired"
    CANCELLING = "cancelling"
    CANCELLED = "cancelled"


#: States a batch never leaves.
FINAL_STATES: frozenset[BatchStatus] = frozenset(
    {BatchStatus.FAILED, BatchStatus.COMPLETED, BatchStatus.EXPIRED, BatchStatus.CANCELLED}
)


@dataclass(slots=True, kw_only=True)
class BatchUsageTotals:
    """Token usage summed over a batch's successful lines."""

    input_tokens: int = 0
    output_tokens: int = 0

    def add(self, usage: ImageUsage) -> None:
        """Count one successful line's usage."""
        self.input_tokens += usage.input_tokens
        self.output_tokens += usage.image_out

    def to_json(self) -> dict[str, Any]:
        """The batch object's ``usage``."""
        return {
            "input_tokens": self.input_tokens,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": self.output_tokens,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": self.input_tokens + self.output_tokens,
        }


@dataclass(slots=True, kw_only=True)
class BatchRecord:
    """One batch, mutable while it runs (timestamps are Unix seconds)."""

    id: str
    seq: int
    run_id: str
    key: str
    origin: str
    endpoint: str
    input_file_id: str
    completion_window: str
    metadata: Mapping[str, str] | None
    created_at: int
    expires_at: int
    output_ttl_s: int | None
    #: The sandbox clock's reading when the completion window runs out.
    deadline: float
    status: BatchStatus = BatchStatus.VALIDATING
    model: str | None = None
    errors: list[dict[str, Any]] | None = None
    output_file_id: str | None = None
    error_file_id: str | None = None
    in_progress_at: int | None = None
    finalizing_at: int | None = None
    completed_at: int | None = None
    failed_at: int | None = None
    expired_at: int | None = None
    cancelling_at: int | None = None
    cancelled_at: int | None = None
    total: int = 0
    completed: int = 0
    failed: int = 0
    usage: BatchUsageTotals = field(default_factory=BatchUsageTotals)
    #: Set when a cancel arrives: the runner stops starting lines.
    cancel: anyio.Event = field(default_factory=anyio.Event)

    def to_json(self) -> dict[str, Any]:
        """The OpenAI batch object."""
        return {
            "id": self.id,
            "object": "batch",
            "endpoint": self.endpoint,
            "model": self.model,
            "errors": {"object": "list", "data": self.errors} if self.errors else None,
            "input_file_id": self.input_file_id,
            "completion_window": self.completion_window,
            "status": self.status.value,
            "output_file_id": self.output_file_id,
            "error_file_id": self.error_file_id,
            "created_at": self.created_at,
            "in_progress_at": self.in_progress_at,
            "expires_at": self.expires_at,
            "finalizing_at": self.finalizing_at,
            "completed_at": self.completed_at,
            "failed_at": self.failed_at,
            "expired_at": self.expired_at,
            "cancelling_at": self.cancelling_at,
            "cancelled_at": self.cancelled_at,
            "request_counts": {
                "total": self.total,
                "completed": self.completed,
                "failed": self.failed,
            },
            "usage": self.usage.to_json(),
            "metadata": dict(self.metadata) if self.metadata is not None else None,
        }


class BatchRegistry:
    """Every batch of the current run, and the task running each."""

    def __init__(self) -> None:
        self._batches: dict[str, BatchRecord] = {}
        self._tasks: dict[str, tuple[asyncio.Task[None], asyncio.AbstractEventLoop]] = {}
        self._seq = 0

    def next_seq(self) -> int:
        """Creation order for the next batch."""
        self._seq += 1
        return self._seq

    def add(self, batch: BatchRecord, task: asyncio.Task[None]) -> None:
        """Keep ``batch`` and the task running it (on the current loop)."""
        self._batches[batch.id] = batch
        self._tasks[batch.id] = (task, asyncio.get_running_loop())
        task.add_done_callback(lambda _: self._tasks.pop(batch.id, None))

    def get(self, batch_id: str) -> BatchRecord | None:
        """The batch, or ``None``."""
        return self._batches.get(batch_id)

    def page(self, *, after: str | None, limit: int) -> tuple[list[BatchRecord], bool]:
        """Up to ``limit`` batches, newest first, after the one with id ``after``."""
        chosen = sorted(self._batches.values(), key=lambda b: b.seq, reverse=True)
        if after is not None:
            ids = [b.id for b in chosen]
            chosen = chosen[ids.index(after) + 1 :] if after in ids else []
        return chosen[:limit], len(chosen) > limit

    def running(self) -> int:
        """How many batches are still being worked on."""
        return len(self._tasks)

    def stop(self) -> None:
        """Stop every batch's task (from any thread); the batches stay as they were."""
        for task, loop in list(self._tasks.values()):
            if not loop.is_closed():
                loop.call_soon_threadsafe(task.cancel)
        self._tasks.clear()

    def clear(self) -> None:
        """Forget every batch and stop the tasks (from any thread)."""
        self.stop()
        self._batches.clear()
