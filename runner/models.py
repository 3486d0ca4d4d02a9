"""Domain vocabulary shared by every layer: states, outcome classes, records.

Persisted states are ``StrEnum`` values with explicit lowercase values; records are frozen,
slotted, keyword-only dataclasses. Datetimes are UTC-aware.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any


def utcnow() -> datetime:
    """The current time, UTC-aware."""
    return datetime.now(UTC)


#: Manifest request options, carried in ``JobSpec.params`` and sent to the provider as given
#: (``model`` travels in ``params`` too, but only when a line overrides the route's).
OPTION_FIELDS: tuple[str, ...] = (
    "size",
    "quality",
    "n",
    "output_format",
    "output_compression",
    "background",
    "moderation",
    "response_format",
)


class Shape(StrEnum):
    """The wire protocol a route speaks."""

    IMAGES = "images"
    RESPONSES = "responses"
    CHAT = "chat"
    #: OpenAI's Files + Batch API: many jobs per remote batch, each job one JSONL line.
    BATCH = "batch"


class JobState(StrEnum):
    """Lifecycle of one manifest line: queued → running → succeeded | failed | cancelled."""

    QUEUED = "queued"
    RUNNING = "running"
    WAITING = "waiting"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    UNKNOWN = "unknown"

    @property
    def terminal(self) -> bool:
        return self in (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED)


class RemoteStep(StrEnum):
    """Our step in a remote batch's lifecycle (what a restart resumes from).

    ``preparing``: its lines' attempt rows are committed, its input not yet on the provider;
    ``uploaded``: the input file's id is recorded; ``submitted``: the remote batch's id is
    recorded (it is polled); ``applying``: it ended and its result lines are being applied;
    ``done``: every line is settled and the files we uploaded are deleted; ``uncollected``:
    its status or results could not be read, try after try, for a reason that does not pass
    (its lines are held with their charge unknown, never re-sent by themselves).
    """

    PREPARING = "preparing"
    UPLOADED = "uploaded"
    SUBMITTED = "submitted"
    APPLYING = "applying"
    DONE = "done"
    UNCOLLECTED = "uncollected"

    @property
    def ended(self) -> bool:
        """Nothing more is done about it: applied, or given up as uncollected."""
        return self in (RemoteStep.DONE, RemoteStep.UNCOLLECTED)


class AttemptState(StrEnum):
    """An attempt row is written ``sending`` before the request leaves, ``done`` after."""

    SENDING = "sending"
    DONE = "done"


class Outcome(StrEnum):
    """Classified result of one attempt."""

    OK = "ok"
    RATE_LIMITED = "rate_limited"
    SERVER_ERROR = "server_error"
    TIMEOUT = "timeout"
    NETWORK = "network"
    INVALID_REQUEST = "invalid_request"
    MODERATION_BLOCKED = "moderation_blocked"
    AUTH = "auth"
    QUOTA_EXHAUSTED = "quota_exhausted"
    BAD_RESPONSE = "bad_response"
    DOWNLOAD_FAILED = "download_failed"
    INTERRUPTED = "interrupted"
    #: Set by recovery on a ``sending`` row whose process died: the request may have been seen.
    LOST = "lost"

    @property
    def retryable(self) -> bool:
        return self in _RETRYABLE

    @property
    def stops_route(self) -> bool:
        return self in (Outcome.AUTH, Outcome.QUOTA_EXHAUSTED)


_RETRYABLE = frozenset(
    {
        Outcome.RATE_LIMITED,
        Outcome.SERVER_ERROR,
        Outcome.TIMEOUT,
        Outcome.NETWORK,
        Outcome.BAD_RESPONSE,
        Outcome.DOWNLOAD_FAILED,
    }
)


class ChargeStatus(StrEnum):
    CHARGED = "charged"
    NOT_CHARGED = "not_charged"
    UNKNOWN = "unknown"


class ChargeEvidence(StrEnum):
    POLICY = "policy"
    PROBE = "probe"
    CALL_LOG = "call_log"
    BALANCE = "balance"


class UnknownPolicy(StrEnum):
    """What to do with a job whose request may have reached the provider."""

    HOLD = "hold"
    RESEND = "resend"


@dataclass(frozen=True, slots=True, kw_only=True)
class SourceImage:
    """A source image (or mask) reference as stored with a job.

    ``ref`` is an absolute local path, an ``http(s)://`` URL or a ``data:`` URL.
    """

    kind: str  # "path" | "url" | "data"
    ref: str
    sha256: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "ref": self.ref, "sha256": self.sha256}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SourceImage:
        return cls(kind=data["kind"], ref=data["ref"], sha256=data.get("sha256"))


@dataclass(frozen=True, slots=True, kw_only=True)
class JobSpec:
    """A validated manifest line, ready to enqueue."""

    key: str
    ext_id: str
    line: int
    prompt: str
    params: dict[str, Any]
    images: tuple[SourceImage, ...] = ()
    mask: SourceImage | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def is_edit(self) -> bool:
        return bool(self.images)


@dataclass(frozen=True, slots=True, kw_only=True)
class Job:
    """A job as claimed from the store by a worker."""

    id: int
    batch_id: str
    route: str
    ext_id: str
    prompt: str
    params: dict[str, Any]
    images: tuple[SourceImage, ...]
    mask: SourceImage | None
    attempts: int
    created_at: datetime
    first_attempt_at: datetime | None = None
    #: The outcome class of its last attempt (``None`` before the first).
    last_outcome: str | None = None

    @property
    def is_edit(self) -> bool:
        return bool(self.images)


@dataclass(frozen=True, slots=True, kw_only=True)
class Usage:
    """Token usage as reported by the provider (all optional: gateways may omit it)."""

    input_text_tokens: int = 0
    input_image_tokens: int = 0
    cached_tokens: int = 0
    output_image_tokens: int = 0
    output_text_tokens: int = 0
    #: Mainline-model tokens on the Responses shape (billed on top of the image tokens).
    mainline_input_tokens: int = 0
    mainline_output_tokens: int = 0

    def to_json(self) -> dict[str, int]:
        return {k: getattr(self, k) for k in self.__slots__ if getattr(self, k)}

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> Usage | None:
        if data is None:
            return None
        return cls(**{k: int(v) for k, v in data.items() if k in cls.__slots__})


@dataclass(frozen=True, slots=True, kw_only=True)
class Limit:
    """One rate-limit window as a server reported it (any field may be missing)."""

    limit: int | None = None
    remaining: int | None = None
    #: Seconds until the window resets.
    reset_s: float | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class RateLimits:
    """An answer's ``x-ratelimit-{limit,remaining,reset}-*`` headers, by resource."""

    requests: Limit | None = None
    tokens: Limit | None = None
    images: Limit | None = None

    def to_json(self) -> dict[str, dict[str, float]]:
        """What the ledger keeps on the attempt: each resource reported, its fields given
        (``{"requests": {"limit": 500, "remaining": 499, "reset_s": 0.12}}``)."""
        out: dict[str, dict[str, float]] = {}
        for name in ("requests", "tokens", "images"):
            if (window := getattr(self, name)) is not None:
                given = ((k, getattr(window, k)) for k in ("limit", "remaining", "reset_s"))
                out[name] = {k: v for k, v in given if v is not None}
        return out

    @property
    def reset_s(self) -> float | None:
        """When the window that refused has room again: the longest reset among the resources
        with nothing remaining, or among all reported when none says it ran out.

        OpenAI reports every resource on every answer, and a token window's reset is the time
        to refill it whole (often minutes): a 429 on the request window must not wait for it.
        """
        windows = [w for w in (self.requests, self.tokens, self.images) if w is not None]
        out = [w for w in windows if w.remaining == 0 and w.reset_s is not None]
        resets = [w.reset_s for w in (out or windows) if w.reset_s is not None]
        return max(resets) if resets else None
