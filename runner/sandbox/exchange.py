"""The working state of one request while the pipeline handles it.

Mutable on purpose: each pipeline step fills in what it learns (the account, the parsed call,
the fault, the quote, the outcome), and settlement turns it into a frozen
:class:`~runner.sandbox.records.RequestRecord`.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime

from starlette.requests import Request

from runner.models import Outcome
from runner.sandbox.config import FaultKind, Profile
from runner.sandbox.groups import Group
from runner.sandbox.ledger import Account
from runner.sandbox.parsing import Endpoint, ImageCall
from runner.sandbox.ratelimit import Admission
from runner.sandbox.tokens import ImageUsage
from runner.sandbox.validation import Resolved


@dataclass(frozen=True, slots=True, kw_only=True)
class Quote:
    """What a request costs if charged, and the usage that explains it."""

    quota: int
    usage: ImageUsage | None
    mainline: tuple[int, int] | None
    model_price: float | None
    group_ratio: float

    @property
    def prompt_tokens(self) -> int:
        """Input tokens as a new-api log row counts them."""
        mainline_in = self.mainline[0] if self.mainline else 0
        return mainline_in + (self.usage.input_tokens if self.usage else 0)

    @property
    def completion_tokens(self) -> int:
        """Output tokens as a new-api log row counts them."""
        mainline_out = self.mainline[1] if self.mainline else 0
        return mainline_out + (self.usage.image_out if self.usage else 0)


@dataclass(slots=True, kw_only=True)
class Exchange:
    """One request in flight."""

    request: Request
    #: The sandbox run it arrived in (a reset starts a new run).
    run_id: str
    profile: Profile
    endpoint: Endpoint
    seq: int
    arrived: datetime
    started: float
    request_id: str
    upstream_id: str
    ids: random.Random
    client_request_id: str | None
    #: The batch this request is a line of (``None`` for a synchronous request).
    batch_id: str | None = None
    #: The API key: used to find the account and rate bucket, never recorded.
    key: str = ""
    group: str | None = None
    #: The gateway token group (``None`` on the official profile).
    gateway_group: Group | None = None
    account: Account | None = None
    call: ImageCall | None = None
    fault: FaultKind | None = None
    admission: Admission | None = None
    #: Whether answers carry the ``x-ratelimit-*`` headers of ``admission``.
    limit_headers: bool = True
    resolved: Resolved | None = None
    quote: Quote | None = None
    held: int = 0
    outcome: Outcome | None = None
    status: int | None = None
    settled: bool = False

    @property
    def origin(self) -> str:
        """``scheme://host:port`` as the client addressed the sandbox."""
        return str(self.request.base_url).rstrip("/")
