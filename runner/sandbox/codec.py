"""The JSON form of :class:`SandboxConfig`, for ``/_sandbox/config`` and out-of-process runs.

``config_from_json`` applies a partial object on top of a base config, so a benchmark can send
``{"rpm": 600}`` without restating everything else. Field names are the dataclass's.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields, replace
from typing import Any

from runner.sandbox.config import (
    BATCH_SECONDS,
    FaultKind,
    FaultRule,
    Latency,
    Profile,
    SandboxConfig,
)
from runner.sandbox.options import parse_fault_rates, parse_policy

_FIELDS = frozenset(f.name for f in fields(SandboxConfig))


def config_to_json(config: SandboxConfig) -> dict[str, Any]:
    """A JSON-friendly copy of ``config``."""
    return {
        "latency": {
            "mean": config.latency.mean,
            "jitter": config.latency.jitter,
            "distribution": config.latency.distribution,
        },
        "rpm": config.rpm,
        "ipm": config.ipm,
        "fault_rates": {k.value: v for k, v in config.fault_rates.items()},
        "fault_rules": [
            {
                "match": r.match,
                "kind": r.kind.value,
                "times": r.times,
                "profile": r.profile.value if r.profile else None,
            }
            for r in config.fault_rules
        ],
        "charged_failures": sorted(o.value for o in config.charged_failures),
        "moderation_word": config.moderation_word,
        "hang_seconds": config.hang_seconds,
        "seed": config.seed,
        "tiny": config.tiny,
        "grain": config.grain,
        "balance_usd": config.balance_usd,
        "key_balances": dict(config.key_balances),
        "quota_status": config.quota_status,
        "file_ttl": config.file_ttl,
        "fetch_timeout": config.fetch_timeout,
        "batch_concurrency": config.batch_concurrency,
    } | {name: getattr(config, name) for name in BATCH_SECONDS}


def _latency(value: Any) -> Latency:
    if isinstance(value, int | float):
        return Latency(mean=float(value))
    if isinstance(value, list | tuple) and len(value) == 2:
        return Latency(mean=float(value[0]), jitter=float(value[1]))
    if isinstance(value, Mapping):
        return Latency(**{k: value[k] for k in ("mean", "jitter", "distribution") if k in value})
    raise ValueError("latency: expected seconds, [mean, jitter] or {mean, jitter, distribution}")


def _rule(value: Any) -> FaultRule:
    if not isinstance(value, Mapping):
        raise ValueError("fault_rules: expected objects with match, kind, times, profile")
    profile = value.get("profile")
    return FaultRule(
        match=str(value.get("match", "")),
        kind=FaultKind(str(value.get("kind"))),
        times=value.get("times"),
        profile=Profile(profile) if profile else None,
    )


def _decode(name: str, value: Any) -> Any:
    match name:
        case "latency":
            return _latency(value)
        case "fault_rates":
            return parse_fault_rates(value)
        case "fault_rules":
            return tuple(_rule(item) for item in value)
        case "charged_failures":
            return parse_policy(value)
        case "key_balances":
            return {str(k): float(v) for k, v in dict(value).items()}
        case _:
            return value


def config_from_json(data: Mapping[str, Any], base: SandboxConfig | None = None) -> SandboxConfig:
    """``base`` (default: the defaults) with the fields present in ``data`` replaced.

    Raises:
        ValueError: an unknown field or an invalid value (the message names it).
    """
    if unknown := set(data) - _FIELDS:
        raise ValueError(f"unknown sandbox setting(s): {', '.join(sorted(unknown))}")
    changes: dict[str, Any] = {}
    for name, value in data.items():
        try:
            changes[name] = _decode(name, value)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{name}: {exc}") from None
    try:
        return replace(base or SandboxConfig(), **changes)
    except TypeError as exc:
        raise ValueError(str(exc)) from None
