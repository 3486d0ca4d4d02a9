"""The sandbox's own log of every request it received: what tests compare imagerun's ledger with."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from runner.models import Outcome
from runner.sandbox.config import FaultKind, Profile

RecordKind = Literal["image", "file", "account", "batch"]

#: Status recorded when the client went away before an answer (nginx's "client closed request").
CLIENT_CLOSED = 499


@dataclass(frozen=True, slots=True, kw_only=True)
class RequestRecord:
    """One request as the sandbox saw and answered it. Never holds the API key.

    Attributes:
        seq: arrival order, from 1.
        time: arrival time (UTC).
        profile: which provider was emulated.
        kind: ``image`` (an API call, a batch line too), ``file`` (a served image URL),
            ``account`` (a balance or call-log read) or ``batch`` (a Files or Batch API call).
        method: HTTP method.
        path: request path.
        client_request_id: the client's ``X-Client-Request-Id`` header.
        group: the key's group (``openai`` on the official profile), not the key.
        model: the image model asked for (the tool's model on Responses).
        prompt: the prompt text.
        params: other request fields as sent (no image bytes).
        n_sources: number of source images.
        status: HTTP status sent; ``None`` after a reset, 499 when the client left first.
        fault: the fault injected, if any (a trigger-word block counts as ``moderation``).
        outcome: the outcome class the charge policy was applied to.
        provider_request_id: ``x-request-id`` (official) or ``X-Oneapi-Request-Id`` (gateway).
        charged_quota: quota units charged (500,000 = $1).
        charged_usd: the same in dollars.
        duration_ms: time from arrival to settlement.
        batch_id: the batch a line of which this was (``None``: a synchronous request).
    """

    seq: int
    time: datetime
    profile: Profile
    kind: RecordKind = "image"
    method: str
    path: str
    client_request_id: str | None = None
    group: str | None = None
    model: str | None = None
    prompt: str | None = None
    params: Mapping[str, Any] = field(default_factory=dict)
    n_sources: int = 0
    status: int | None
    fault: FaultKind | None = None
    outcome: Outcome | None = None
    provider_request_id: str = ""
    charged_quota: int = 0
    charged_usd: float = 0.0
    duration_ms: float = 0.0
    batch_id: str | None = None

    def to_json(self) -> dict[str, Any]:
        """A JSON-friendly copy (as ``GET /_sandbox/requests`` returns it)."""
        return {
            "seq": self.seq,
            "time": self.time.isoformat(),
            "profile": self.profile.value,
            "kind": self.kind,
            "method": self.method,
            "path": self.path,
            "client_request_id": self.client_request_id,
            "group": self.group,
            "model": self.model,
            "prompt": self.prompt,
            "params": dict(self.params),
            "n_sources": self.n_sources,
            "status": self.status,
            "fault": self.fault.value if self.fault else None,
            "outcome": self.outcome.value if self.outcome else None,
            "provider_request_id": self.provider_request_id,
            "charged_quota": self.charged_quota,
            "charged_usd": self.charged_usd,
            "duration_ms": round(self.duration_ms, 3),
            "batch_id": self.batch_id,
        }


class RequestLog:
    """Records in arrival order (a record is added when its request settles)."""

    def __init__(self) -> None:
        self._records: list[RequestRecord] = []

    def add(self, record: RequestRecord) -> None:
        """Append a settled request."""
        self._records.append(record)

    def records(self, kind: RecordKind | None = None) -> list[RequestRecord]:
        """A snapshot, ordered by ``seq``, optionally of one kind only."""
        chosen = [r for r in self._records if kind is None or r.kind == kind]
        return sorted(chosen, key=lambda r: r.seq)

    def clear(self) -> None:
        """Forget every record."""
        self._records.clear()

    def __len__(self) -> int:
        return len(self._records)
