"""Building a :class:`SandboxConfig` from simple option values (the ``imagerun sandbox`` flags).

Every parser raises ``ValueError`` with a message fit for the command line; the CLI turns it
into a usage error.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Literal, cast

from runner.models import Outcome
from runner.sandbox.config import (
    BATCH_SECONDS,
    CHARGEABLE_FAILURES,
    DEFAULT_MODERATION_WORD,
    NEW_API_POLICY,
    FaultKind,
    FaultRule,
    Latency,
    Profile,
    SandboxConfig,
)
from runner.sandbox.ratelimit import SHAPES, LimiterShape

#: The Batch API knobs :func:`config_from_options` takes by their field names.
BATCH_KNOBS = frozenset({*BATCH_SECONDS, "batch_concurrency"})

#: Named failure-charge policies: ``none`` (only successes are billed), ``new-api`` (stock
#: new-api: client timeouts and 200s without a usable image are billed), ``all``.
POLICY_PRESETS: Mapping[str, frozenset[Outcome]] = {
    "none": frozenset(),
    "new-api": NEW_API_POLICY,
    "all": CHARGEABLE_FAILURES,
}


def parse_policy(value: str | Iterable[str]) -> frozenset[Outcome]:
    """A policy from a preset name (``none``, ``new-api``, ``all``) or outcome class names.

    ``"timeout,bad_response"`` and ``["timeout", "bad_response"]`` are the same policy.
    """
    names = [v.strip() for v in value.split(",")] if isinstance(value, str) else list(value)
    names = [n for n in names if n]
    if len(names) == 1 and names[0] in POLICY_PRESETS:
        return POLICY_PRESETS[names[0]]
    allowed = ", ".join(sorted(CHARGEABLE_FAILURES))
    classes: set[Outcome] = set()
    for name in names:
        try:
            outcome = Outcome(name)
        except ValueError:
            raise ValueError(f"unknown outcome class {name!r}; expected {allowed}") from None
        if outcome not in CHARGEABLE_FAILURES:
            raise ValueError(f"{name!r} cannot be charged; chargeable classes: {allowed}")
        classes.add(outcome)
    return frozenset(classes)


def _fault_kind(name: str) -> FaultKind:
    try:
        return FaultKind(name.strip())
    except ValueError:
        kinds = ", ".join(k.value for k in FaultKind)
        raise ValueError(f"unknown fault {name.strip()!r}; expected one of {kinds}") from None


def parse_fault_rates(value: str | Mapping[str, float]) -> dict[FaultKind, float]:
    """Rates from ``"server_error=0.05,hang=0.01"`` or a mapping of fault name to probability."""
    pairs: list[tuple[str, object]] = []
    if isinstance(value, str):
        for item in filter(None, (part.strip() for part in value.split(","))):
            name, sep, text = item.partition("=")
            if not sep:
                raise ValueError(f"fault rate {item!r}: expected KIND=PROBABILITY")
            pairs.append((name, text))
    else:
        pairs = list(value.items())
    rates: dict[FaultKind, float] = {}
    for name, rate in pairs:
        kind = _fault_kind(name)
        try:
            rates[kind] = float(str(rate))
        except (TypeError, ValueError):
            raise ValueError(f"fault rate for {name!r}: {rate!r} is not a number") from None
    return rates


def parse_fault_rule(text: str) -> FaultRule:
    """A scripted fault from ``MARKER:KIND[:TIMES][@PROFILE]``.

    ``#RESET#:reset:2`` resets the first two requests whose prompt contains ``#RESET#``;
    ``#BUSY#:unavailable`` (or ``…:always``) fails every one of them; ``…@laozhang``
    limits the rule to one profile. The marker may itself contain colons.
    """
    body, _, profile = text.partition("@")
    parts = body.rsplit(":", 2)
    if len(parts) == 3 and (parts[2].isdigit() or parts[2] == "always"):
        match, kind, times_text = parts
    else:
        match, _, kind = body.rpartition(":")
        times_text = "always"
    if not match:
        raise ValueError(f"fault rule {text!r}: expected MARKER:KIND[:TIMES][@PROFILE]")
    try:
        return FaultRule(
            match=match,
            kind=_fault_kind(kind),
            times=None if times_text == "always" else int(times_text),
            profile=Profile(profile) if profile else None,
        )
    except ValueError as exc:
        raise ValueError(f"fault rule {text!r}: {exc}") from None


def _limiter_shape(value: str) -> LimiterShape:
    for shape in SHAPES:
        if value == shape:
            return shape
    raise ValueError(f"limiter {value!r}: expected one of {', '.join(SHAPES)}")


def _latency(mean: float, jitter: float, distribution: str) -> Latency:
    if distribution not in ("uniform", "normal"):
        raise ValueError("latency distribution must be 'uniform' or 'normal'")
    return Latency(
        mean=mean, jitter=jitter, distribution=cast(Literal["uniform", "normal"], distribution)
    )


def _batch_knobs(batch: dict[str, float]) -> dict[str, float]:
    if unknown := set(batch) - BATCH_KNOBS:
        raise ValueError(f"unknown sandbox option(s): {', '.join(sorted(unknown))}")
    return batch


def config_from_options(
    *,
    latency: float = 0.0,
    jitter: float = 0.0,
    latency_distribution: str = "uniform",
    rpm: int | None = None,
    ipm: int | None = None,
    limiter: str = "bucket",
    burst: int | None = None,
    limiter_window: float = 1.0,
    no_limit_headers: bool = False,
    faults: str | Mapping[str, float] | None = None,
    rules: Sequence[str] = (),
    policy: str | Iterable[str] = "new-api",
    seed: int = 0,
    tiny: bool = False,
    grain: bool = False,
    balance: float = 100.0,
    hang: float = 30.0,
    moderation_word: str | None = DEFAULT_MODERATION_WORD,
    quota_status: int = 403,
    file_ttl: float = 3600.0,
    **batch: float,
) -> SandboxConfig:
    """A config from ``imagerun sandbox``'s option values.

    Each option is the :class:`SandboxConfig` field of the same meaning, in the form a command
    line gives it: ``latency``/``jitter``/``latency_distribution`` make its ``Latency``; a 0 or
    ``None`` rate (``rpm``, ``ipm``, ``burst``) means unlimited; ``no_limit_headers`` turns
    the ``x-ratelimit-*`` headers off; ``faults`` is ``"server_error=0.05,reset=0.01"``;
    ``rules`` are ``MARKER:KIND[:TIMES][@PROFILE]`` (see :func:`parse_fault_rule`); ``policy``
    is ``none``, ``new-api``, ``all`` or class names; an empty ``moderation_word`` blocks
    nothing; ``balance`` is every key's starting balance in dollars; ``batch`` holds the Batch
    API knobs under their field names (``batch_window``, ``batch_concurrency``, …).

    Raises:
        ValueError: an option value is invalid.
    """
    return SandboxConfig(
        latency=_latency(latency, jitter, latency_distribution),
        **_batch_knobs(batch),  # type: ignore[arg-type]
        rpm=rpm or None,
        ipm=ipm or None,
        limiter=_limiter_shape(limiter),
        burst=burst or None,
        limiter_window=limiter_window,
        limit_headers=not no_limit_headers,
        fault_rates=parse_fault_rates(faults) if faults else {},
        fault_rules=tuple(parse_fault_rule(r) for r in rules),
        charged_failures=parse_policy(policy),
        moderation_word=moderation_word or None,
        hang_seconds=hang,
        seed=seed,
        tiny=tiny,
        grain=grain,
        balance_usd=balance,
        quota_status=quota_status,
        file_ttl=file_ttl,
    )
