"""The live sandbox: configuration, accounts, limiter, faults, served files and request log.

One :class:`Sandbox` backs one app (``app.state.sandbox``). Its state is changed only by the
server's event loop; other threads (a test driving a :func:`running_sandbox`) may read the
snapshots it hands out, and should change knobs through :meth:`Sandbox.configure` between
requests or through ``POST /_sandbox/config``.
"""

from __future__ import annotations

import random
import secrets
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

import anyio

from runner.routes import Catalog, load_catalog
from runner.sandbox.batch_state import BatchRegistry
from runner.sandbox.config import Profile, SandboxConfig
from runner.sandbox.connections import ConnectionRegistry
from runner.sandbox.faults import FaultPlan
from runner.sandbox.file_store import UploadStore
from runner.sandbox.files import FileStore
from runner.sandbox.groups import GROUPS, OPENAI_GROUP, group_for_key
from runner.sandbox.ids import build_hash, request_rng
from runner.sandbox.ledger import Account, Ledger
from runner.sandbox.prices import to_usd
from runner.sandbox.ratelimit import RateLimiter
from runner.sandbox.records import RecordKind, RequestLog, RequestRecord
from runner.sandbox.sources import SourceLoader

Clock = Callable[[], float]
WallClock = Callable[[], int]


def limiter_knobs(config: SandboxConfig) -> tuple[object, ...]:
    """The settings a rate limiter is built from: when they change, its buckets restart."""
    return (config.rpm, config.ipm, config.limiter, config.burst, config.limiter_window)


def limiter_for(config: SandboxConfig, clock: Clock) -> RateLimiter:
    """The rate limiter ``config`` describes."""
    return RateLimiter(
        config.rpm,
        config.ipm,
        clock,
        shape=config.limiter,
        burst=config.burst,
        window=config.limiter_window,
    )


class Sandbox:
    """Everything the emulator knows and remembers.

    Args:
        config: the initial knobs.
        clock: monotonic seconds for rate limits and URL expiry (tests pass a fake one).
        wall_ns: wall-clock nanoseconds for timestamps and gateway request ids.
    """

    # Set by reset(), which __init__ calls: one place decides what a fresh run looks like.
    _config: SandboxConfig
    _seq: int
    _run_id: str
    build: str
    ledger: Ledger
    limiter: RateLimiter
    faults: FaultPlan
    loader: SourceLoader

    def __init__(
        self,
        config: SandboxConfig,
        *,
        clock: Clock | None = None,
        wall_ns: WallClock | None = None,
    ) -> None:
        self.clock: Clock = clock or time.monotonic
        self.wall_ns: WallClock = wall_ns or time.time_ns
        self.catalog: Catalog = load_catalog(environ={})
        self.connections = ConnectionRegistry()
        self.files = FileStore(self.clock)
        #: Files API uploads and batch output files (on disk), and the batches.
        self.uploads = UploadStore()
        self.batches = BatchRegistry()
        self.log = RequestLog()
        self._inflight: set[anyio.CancelScope] = set()
        self.stopping = False
        self.reset(config)

    @property
    def config(self) -> SandboxConfig:
        """The knobs in force."""
        return self._config

    def apply(self, config: SandboxConfig) -> None:
        """Switch to ``config``.

        Rate-limit buckets restart only if the limiter's knobs changed, scripted-rule counters
        only if the faults changed; balances of existing accounts are kept (use :meth:`reset`).
        """
        old, self._config = self._config, config
        if limiter_knobs(old) != limiter_knobs(config):
            self.limiter = limiter_for(config, self.clock)
        fault_fields = ("fault_rules", "fault_rates", "moderation_word", "seed")
        if any(getattr(old, f) != getattr(config, f) for f in fault_fields):
            self.faults = FaultPlan(config)
        self.loader = SourceLoader(self.files, self.uploads, config.fetch_timeout)
        self.ledger.reconfigure(config)

    def configure(self, **changes: Any) -> SandboxConfig:
        """Change some knobs (``SandboxConfig`` field names); returns the new config."""
        config = replace(self._config, **changes)
        self.apply(config)
        return config

    def reset(self, config: SandboxConfig | None = None) -> None:
        """Forget every request, account, file, batch and counter; optionally swap config."""
        config = config or self._config
        self._config = config
        self.log.clear()
        self.files.clear()
        self.batches.clear()
        self.uploads.clear()
        self.ledger = Ledger(config)
        self._seq = 0
        self._run_id = secrets.token_hex(8)
        self.build = build_hash(config.seed)
        self.limiter = limiter_for(config, self.clock)
        self.faults = FaultPlan(config)
        self.loader = SourceLoader(self.files, self.uploads, config.fetch_timeout)

    @contextmanager
    def interruptible(self) -> Iterator[anyio.CancelScope]:
        """A cancel scope around a request's generation, cancelled by :meth:`stop_inflight`."""
        scope = anyio.CancelScope()
        if self.stopping:
            scope.cancel()
        self._inflight.add(scope)
        try:
            with scope:
                yield scope
        finally:
            self._inflight.discard(scope)

    def inflight(self) -> int:
        """How many requests are generating (or hanging) right now."""
        return len(self._inflight)

    def stop_inflight(self) -> None:
        """Cut short every request still generating (the server is stopping).

        Must run on the server's event loop. The cut requests answer 503 at once, so a hung
        request does not hold up the shutdown.
        """
        self.stopping = True
        self.batches.stop()
        for scope in list(self._inflight):
            scope.cancel()

    def next_seq(self) -> int:
        """The next request's sequence number (from 1)."""
        self._seq += 1
        return self._seq

    @property
    def run_id(self) -> str:
        """Changes on every :meth:`reset`: requests of an earlier run are not recorded."""
        return self._run_id

    def id_rng(self, seq: int) -> random.Random:
        """The generator for request ``seq``'s ids.

        Unlike faults and latency, ids are not reproducible: they include a per-run salt
        (new on every start and reset), because a provider never hands out the same request
        id twice and clients join their ledgers on it across runs.
        """
        return request_rng(self._config.seed, seq, f"ids:{self._run_id}")

    def requests(self, kind: RecordKind | None = "image") -> list[RequestRecord]:
        """Settled requests in arrival order: image API calls by default, ``None`` for all."""
        return self.log.records(kind)

    def account(self, key: str, profile: Profile | str | None = None) -> Account:
        """The account behind ``key`` (opened with its starting balance if never used).

        ``profile`` defaults to ``laozhang`` for keys with a gateway group prefix and
        ``openai`` otherwise (so ``sk-sandbox-openai`` needs no profile argument).
        """
        if profile is None:
            gateway = any(key.startswith(group.key_prefix) for group in GROUPS)
            profile = Profile.LAOZHANG if gateway else Profile.OPENAI
        profile = Profile(profile)
        group = OPENAI_GROUP if profile is Profile.OPENAI else group_for_key(key).name
        return self.ledger.account(profile, key, group)

    def balance_usd(self, key: str, profile: Profile | str | None = None) -> float:
        """Remaining balance of ``key`` in dollars."""
        return to_usd(self.account(key, profile).remaining)

    def charged_usd(self) -> float:
        """Dollars charged over all accounts."""
        return to_usd(self.ledger.total_used())

    def snapshot(self) -> dict[str, Any]:
        """Balances, totals and counters, as ``GET /_sandbox/state`` returns them."""
        records = self.log.records("image")
        outcomes: dict[str, int] = {}
        for record in records:
            name = record.outcome.value if record.outcome else "none"
            outcomes[name] = outcomes.get(name, 0) + 1
        return {
            "requests": len(records),
            "outcomes": outcomes,
            "charged_quota": self.ledger.total_used(),
            "charged_usd": self.charged_usd(),
            "accounts": [a.to_json() for a in self.ledger.accounts()],
            "fault_rule_uses": self.faults.uses(),
            "served_files": len(self.files),
            "stored_files": len(self.uploads),
            "running_batches": self.batches.running(),
        }
