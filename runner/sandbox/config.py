"""The sandbox's knobs: one frozen :class:`SandboxConfig` and the records it is made of.

Everything that changes how the emulator behaves lives here, so a test, a benchmark or the
``imagerun sandbox`` command describes a run with one value (and ``POST /_sandbox/config``
swaps it at runtime; see :mod:`runner.sandbox.codec` for the JSON form).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import Literal, TypeVar

from runner.models import Outcome
from runner.sandbox.ratelimit import SHAPES, LimiterShape

_K = TypeVar("_K")
_V = TypeVar("_V")


class Profile(StrEnum):
    """Which provider a sandbox path emulates (``/openai/v1/…`` or ``/laozhang/v1/…``)."""

    OPENAI = "openai"
    LAOZHANG = "laozhang"


class FaultKind(StrEnum):
    """A fault the sandbox can inject into one request."""

    #: HTTP 500 with a JSON error body.
    SERVER_ERROR = "server_error"
    #: HTTP 502 with an HTML body, as an edge proxy sends it.
    BAD_GATEWAY = "bad_gateway"
    #: HTTP 503 "overloaded" with a JSON error body.
    UNAVAILABLE = "unavailable"
    #: HTTP 429 with ``Retry-After`` although the bucket had room (an upstream limit).
    RATE_LIMIT = "rate_limit"
    #: Sleep ``hang_seconds`` before answering (504), or until the client goes away.
    HANG = "hang"
    #: Close the connection with a TCP reset before any response byte (real server only).
    RESET = "reset"
    #: Promise the full ``Content-Length``, send half the body, close the connection.
    TRUNCATE = "truncate"
    #: HTTP 200 whose base64 image cannot be decoded.
    CORRUPT_B64 = "corrupt_b64"
    #: HTTP 200 with no image (``data: []``, a chat answer without a link, …).
    EMPTY_DATA = "empty_data"
    #: HTTP 400 moderation block, as if the prompt contained the trigger word.
    MODERATION = "moderation"
    #: HTTP 401, as if the key were wrong.
    AUTH = "auth"
    #: Insufficient balance, as if the account were empty.
    QUOTA = "quota"


#: Outcome class each fault produces (what the failure-charge policy is keyed on).
FAULT_OUTCOMES: Mapping[FaultKind, Outcome] = MappingProxyType(
    {
        FaultKind.SERVER_ERROR: Outcome.SERVER_ERROR,
        # The gateway gave up on its upstream, which may have done (and billed) the work.
        FaultKind.BAD_GATEWAY: Outcome.TIMEOUT,
        FaultKind.UNAVAILABLE: Outcome.SERVER_ERROR,
        FaultKind.RATE_LIMIT: Outcome.RATE_LIMITED,
        FaultKind.HANG: Outcome.TIMEOUT,
        FaultKind.RESET: Outcome.NETWORK,
        FaultKind.TRUNCATE: Outcome.BAD_RESPONSE,
        FaultKind.CORRUPT_B64: Outcome.BAD_RESPONSE,
        FaultKind.EMPTY_DATA: Outcome.BAD_RESPONSE,
        FaultKind.MODERATION: Outcome.MODERATION_BLOCKED,
        FaultKind.AUTH: Outcome.AUTH,
        FaultKind.QUOTA: Outcome.QUOTA_EXHAUSTED,
    }
)

#: Failure classes a policy may charge. ``auth`` and ``quota_exhausted`` never are: there is
#: no account to bill, or no money left in it.
CHARGEABLE_FAILURES: frozenset[Outcome] = frozenset(
    {
        Outcome.SERVER_ERROR,
        Outcome.TIMEOUT,
        Outcome.NETWORK,
        Outcome.MODERATION_BLOCKED,
        Outcome.INVALID_REQUEST,
        Outcome.BAD_RESPONSE,
        Outcome.RATE_LIMITED,
    }
)

#: Stock new-api semantics: an upstream 200 with a body is charged even when
#: it holds no usable image, and so is a client that gave up after the upstream accepted.
NEW_API_POLICY: frozenset[Outcome] = frozenset({Outcome.TIMEOUT, Outcome.BAD_RESPONSE})

#: The default moderation trigger: a prompt containing this word (any case) is blocked.
DEFAULT_MODERATION_WORD = "forbidden"


@dataclass(frozen=True, slots=True, kw_only=True)
class Latency:
    """Simulated generation time per request, in seconds.

    Attributes:
        mean: the centre of the distribution.
        jitter: half-width (``uniform``) or standard deviation (``normal``); 0 means fixed.
        distribution: ``uniform`` draws from ``[mean - jitter, mean + jitter]``; ``normal``
            from N(mean, jitter). Draws below zero are clipped to zero.
    """

    mean: float = 0.0
    jitter: float = 0.0
    distribution: Literal["uniform", "normal"] = "uniform"

    def __post_init__(self) -> None:
        if self.mean < 0 or self.jitter < 0:
            raise ValueError("latency mean and jitter must be >= 0")
        if self.distribution not in ("uniform", "normal"):
            raise ValueError(f"unknown latency distribution {self.distribution!r}")


@dataclass(frozen=True, slots=True, kw_only=True)
class FaultRule:
    """A scripted fault: requests whose prompt contains ``match`` get ``kind``.

    Attributes:
        match: a substring of the prompt (case-sensitive; use a marker such as ``#RESET#``).
        kind: the fault to inject.
        times: inject into the first ``times`` matching requests only; ``None`` means always.
        profile: restrict the rule to one profile; ``None`` means both.
    """

    match: str
    kind: FaultKind
    times: int | None = None
    profile: Profile | None = None

    def __post_init__(self) -> None:
        if not self.match:
            raise ValueError("a fault rule needs a non-empty match string")
        if self.times is not None and self.times < 1:
            raise ValueError("fault rule times must be >= 1 (or None for always)")


def _frozen_map(value: Mapping[_K, _V]) -> Mapping[_K, _V]:
    return MappingProxyType(dict(value))


#: The Batch API's timing knobs, in seconds.
BATCH_SECONDS = (
    "batch_window",
    "batch_validating",
    "batch_finalizing",
    "file_create_delay",
    "batch_create_delay",
)


@dataclass(frozen=True, slots=True, kw_only=True)
class SandboxConfig:
    """Every knob of the sandbox. Defaults give a fast, fault-free, unlimited emulator.

    Attributes:
        latency: simulated generation time.
        rpm: requests per minute per API key, enforced as a token bucket of capacity
            ``max(1, ceil(rpm / 60))`` refilled at ``rpm / 60`` per second; ``None`` = no limit.
        ipm: images per minute per API key, same bucket shape, each request costing ``n``.
        limiter: how ``rpm`` and ``ipm`` are measured: ``bucket``, ``strict``, ``window`` or
            ``sliding`` (see :mod:`runner.sandbox.ratelimit`).
        burst: requests a ``bucket`` or ``strict`` limiter lets arrive back to back
            (``None``: a second's worth for ``bucket``, one for ``strict``).
        limiter_window: seconds of a ``window`` or ``sliding`` limiter.
        limit_headers: send OpenAI's ``x-ratelimit-*`` headers (official profile only).
        fault_rates: probability per request of each fault (seeded; the sum must be <= 1).
        fault_rules: scripted faults, checked before the random ones (first match wins).
        charged_failures: failure classes that are charged like a success (the hidden
            failure-charge policy; visible to clients only through balances and call logs).
        moderation_word: prompts containing it (case-insensitive) are blocked; ``None`` = off.
        hang_seconds: how long a ``hang`` fault holds the request before answering 504.
        seed: seeds every random draw (fault rates, latency, ids); same seed, same run.
        tiny: answer with 64x64 images whatever the size asked (throughput benchmarks).
        grain: overlay seeded noise so images compress like photographs, i.e. barely (a
            3840x2160 PNG is then ~20 MB, as real ones are; memory benchmarks).
        balance_usd: starting balance of every API key not listed in ``key_balances``.
        key_balances: starting balance by exact API key.
        quota_status: HTTP status of the gateway's ``insufficient_user_quota`` (403 in stock
            new-api; laozhang documents that it may arrive as 429).
        file_ttl: seconds a gateway image URL stays downloadable (404 afterwards).
        fetch_timeout: timeout for downloading ``image_url`` sources given by URL.
        batch_window: seconds that stand for a batch's 24 h completion window: lines not
            done when it runs out are expired.
        batch_validating: seconds a new batch spends ``validating``.
        batch_finalizing: seconds a batch whose lines are done spends ``finalizing``.
        batch_concurrency: lines of one batch generated at the same time.
        file_create_delay: seconds ``POST /v1/files`` waits, after the file is stored,
            before it answers (a client killed meanwhile leaves a file it never recorded).
        batch_create_delay: the same for ``POST /v1/batches`` (the batch is already running).
    """

    latency: Latency = field(default_factory=Latency)
    rpm: int | None = None
    ipm: int | None = None
    limiter: LimiterShape = "bucket"
    burst: int | None = None
    limiter_window: float = 1.0
    limit_headers: bool = True
    fault_rates: Mapping[FaultKind, float] = field(default_factory=dict)
    fault_rules: tuple[FaultRule, ...] = ()
    charged_failures: frozenset[Outcome] = NEW_API_POLICY
    moderation_word: str | None = DEFAULT_MODERATION_WORD
    hang_seconds: float = 30.0
    seed: int = 0
    tiny: bool = False
    grain: bool = False
    balance_usd: float = 100.0
    key_balances: Mapping[str, float] = field(default_factory=dict)
    quota_status: int = 403
    file_ttl: float = 3600.0
    fetch_timeout: float = 10.0
    batch_window: float = 5.0
    batch_validating: float = 0.1
    batch_finalizing: float = 0.1
    batch_concurrency: int = 8
    file_create_delay: float = 0.0
    batch_create_delay: float = 0.0

    def __post_init__(self) -> None:
        # Freeze the mappings so a config shared between threads cannot change under a request.
        object.__setattr__(self, "fault_rates", _frozen_map(self.fault_rates))
        object.__setattr__(self, "key_balances", _frozen_map(self.key_balances))
        object.__setattr__(self, "fault_rules", tuple(self.fault_rules))
        object.__setattr__(self, "charged_failures", frozenset(self.charged_failures))
        self._check()

    def _check(self) -> None:
        for name in ("rpm", "ipm"):
            limit = getattr(self, name)
            if limit is not None and limit < 1:
                raise ValueError(f"{name} must be >= 1 (or None for no limit)")
        if self.limiter not in SHAPES:
            raise ValueError(f"limiter must be one of {', '.join(SHAPES)}")
        if (self.burst is not None and self.burst < 1) or self.limiter_window <= 0:
            raise ValueError("burst must be >= 1 and limiter_window > 0")
        if any(not 0.0 <= p <= 1.0 for p in self.fault_rates.values()):
            raise ValueError("fault rates must be probabilities between 0 and 1")
        if sum(self.fault_rates.values()) > 1.0 + 1e-9:
            raise ValueError("fault rates must add up to at most 1")
        if extra := self.charged_failures - CHARGEABLE_FAILURES:
            names = ", ".join(sorted(extra))
            raise ValueError(f"cannot charge {names}: no account or no money to charge")
        if self.hang_seconds < 0 or self.file_ttl < 0 or self.fetch_timeout <= 0:
            raise ValueError("hang_seconds and file_ttl must be >= 0, fetch_timeout > 0")
        if self.balance_usd < 0 or any(v < 0 for v in self.key_balances.values()):
            raise ValueError("balances must be >= 0")
        if self.quota_status not in (402, 403, 429):
            raise ValueError("quota_status must be 402, 403 or 429")
        if any(getattr(self, name) < 0 for name in BATCH_SECONDS) or self.batch_window <= 0:
            raise ValueError("batch_window must be > 0, the other batch delays >= 0")
        if self.batch_concurrency < 1:
            raise ValueError("batch_concurrency must be >= 1")
