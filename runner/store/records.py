"""Records passed in and out of the store (the store's tables stay private)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

# Defined with the files it describes; the store's verbs take and return it.
from runner.files.outputs import OutputRecord as OutputRecord
from runner.models import ChargeEvidence, ChargeStatus, Job, JobState, Outcome, RemoteStep


@dataclass(frozen=True, slots=True)
class RateSlot:
    """A request slot taken on a route's shared schedule (or not: see ``paused``)."""

    #: Seconds from ``clock`` until the slot is due.
    wait: float
    #: Seconds the route stays paused after a 429; when positive no slot was taken.
    paused: float
    #: The database's clock when it answered (seconds since the epoch): where the wait counts
    #: from, which the answer reaches this process some time after.
    clock: float
    #: When the statement was sent and its answer read, on this process's clock
    #: (``anyio.current_time()``): the round trip ``clock`` was read in.
    asked: float
    answered: float


@dataclass(frozen=True, slots=True, kw_only=True)
class BatchInfo:
    id: str
    name: str
    route: str
    manifest: str
    job_count: int
    budget_usd: float | None
    created_at: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class EnqueueResult:
    batch: BatchInfo
    added: int
    #: Jobs of the manifest that were already queued (here or in another batch).
    existing: int
    #: Batches the already-present jobs belong to (id → name).
    existing_batches: dict[str, str] = field(default_factory=dict)
    batch_created: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class AttemptStart:
    """Everything known before a request leaves; written as a ``sending`` row first."""

    id: str
    job_id: int
    batch_id: str
    worker_id: str
    route: str
    provider: str
    shape: str
    endpoint: str
    model: str
    billing_unit: str
    params: dict[str, Any]
    worst_case_usd: float
    started_at: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class AttemptResult:
    """How an attempt ended."""

    id: str
    job_id: int
    outcome: Outcome
    finished_at: datetime
    latency_ms: float
    http_status: int | None = None
    provider_request_id: str | None = None
    gateway_request_id: str | None = None
    error_type: str | None = None
    error_code: str | None = None
    error_message: str | None = None
    retry_after: float | None = None
    #: The answer's ``x-ratelimit-*`` headers, parsed (see ``RateLimits.to_json``).
    rate_limits: dict[str, dict[str, float]] | None = None
    usage: dict[str, int] | None = None
    images_returned: int | None = None
    expected_usd: float | None = None
    charge_status: ChargeStatus = ChargeStatus.UNKNOWN
    charge_evidence: ChargeEvidence = ChargeEvidence.POLICY


@dataclass(frozen=True, slots=True, kw_only=True)
class Recovery:
    """What :meth:`recover_expired` did with jobs whose lease ran out."""

    requeued: int = 0
    unknown: int = 0
    resent: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class BatchStatus:
    batch: BatchInfo
    counts: dict[JobState, int]
    outputs: int
    attempts: int
    spent_usd: float
    unknown_charges_usd: float
    failures: dict[str, int]
    #: Attempt outcomes of every attempt that did not succeed (including retried ones).
    attempt_failures: dict[str, int]
    #: Outputs kept although not what their job asked for (another size or format).
    mismatched: int = 0
    #: Edit outputs flagged ``ignored_source`` or ``unchanged`` (among those scored so far).
    flagged_edits: int = 0

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def runnable(self) -> int:
        return sum(self.counts.get(s, 0) for s in (JobState.QUEUED, JobState.WAITING))

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.batch.id,
            "name": self.batch.name,
            "route": self.batch.route,
            "manifest": self.batch.manifest,
            "created_at": self.batch.created_at.isoformat(),
            "budget_usd": self.batch.budget_usd,
            "jobs": self.total,
            "states": {s.value: self.counts.get(s, 0) for s in JobState},
            "outputs": self.outputs,
            "mismatched_outputs": self.mismatched,
            "flagged_edits": self.flagged_edits,
            "attempts": self.attempts,
            "spent_usd": round(self.spent_usd, 6),
            "unknown_charges_usd": round(self.unknown_charges_usd, 6),
            "failures": self.failures,
            "attempt_failures": self.attempt_failures,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class RemoteBatch:
    """A remote batch (one of a provider's batches holding our jobs' lines), as recorded.

    Attributes:
        id: ours (``rb…``); its input file is named after it and its metadata carries it.
        batch_id: the imagerun batch its lines belong to.
        route: the route it runs on.
        endpoint: the provider endpoint of every line (``/v1/images/generations`` or edits).
        model: the one model its lines use.
        step: our lifecycle step (what a restart resumes from).
        remote_id: the provider's batch id, once created.
        status: the provider's status as last polled (``validating``, ``in_progress``, …).
        request_counts: the provider's ``request_counts`` as last polled.
        input_file_id, output_file_id, error_file_id: the provider's file ids.
        source_file_ids: source images uploaded as files for its edits, by source key.
        line_count: its lines (one attempt each).
        bytes: the size of its input file.
        worker_id: the worker driving it.
        lease_expires: until when ``worker_id`` drives it (its own lease, renewed as it drives).
        collect_failures: reads of its status or results that failed in a row for good.
        cancel_requested: ``imagerun cancel`` asked for it to be cancelled.
        error: why it failed as a whole (the provider's errors, or ours), if it did.
    """

    id: str
    batch_id: str
    route: str
    endpoint: str
    model: str
    step: RemoteStep
    line_count: int
    created_at: datetime
    updated_at: datetime
    remote_id: str | None = None
    status: str | None = None
    request_counts: dict[str, int] = field(default_factory=dict)
    input_file_id: str | None = None
    output_file_id: str | None = None
    error_file_id: str | None = None
    source_file_ids: dict[str, str] = field(default_factory=dict)
    bytes: int = 0
    worker_id: str | None = None
    lease_expires: datetime | None = None
    collect_failures: int = 0
    cancel_requested: bool = False
    error: str | None = None
    submitted_at: datetime | None = None
    finished_at: datetime | None = None

    def to_json(self) -> dict[str, Any]:
        """A JSON-friendly description (``imagerun status --json``)."""
        return {
            "id": self.id,
            "batch_id": self.batch_id,
            "route": self.route,
            "endpoint": self.endpoint,
            "model": self.model,
            "step": self.step.value,
            "remote_id": self.remote_id,
            "status": self.status,
            "request_counts": self.request_counts,
            "lines": self.line_count,
            "bytes": self.bytes,
            "cancel_requested": self.cancel_requested,
            "error": self.error,
            "created_at": self.created_at.isoformat(),
            "submitted_at": self.submitted_at.isoformat() if self.submitted_at else None,
            "finished_at": self.finished_at.isoformat() if self.finished_at else None,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class RemoteLine:
    """One line of a remote batch still to settle: its attempt's start row and its job."""

    start: AttemptStart
    job: Job
