"""Which fault, if any, one request gets: scripted rules, the trigger word, then chance.

Chance is drawn from a generator seeded by the sandbox seed and the request's sequence number,
so the n-th request of a run gets the same fault every time the run is repeated.
"""

from __future__ import annotations

from runner.sandbox.config import FaultKind, Profile, SandboxConfig
from runner.sandbox.ids import request_rng


class FaultPlan:
    """Decides faults for a run under one configuration (rule counters live here)."""

    def __init__(self, config: SandboxConfig) -> None:
        self._rules = config.fault_rules
        self._used = [0] * len(self._rules)
        self._word = config.moderation_word.lower() if config.moderation_word else None
        # Enum order, not dict order, so the same rates always map draws to the same faults.
        self._rates = [(k, config.fault_rates[k]) for k in FaultKind if config.fault_rates.get(k)]
        self._seed = config.seed

    def decide(self, *, prompt: str, seq: int, profile: Profile) -> FaultKind | None:
        """The fault for request ``seq`` with ``prompt`` on ``profile``, or ``None``.

        Scripted rules win (first matching rule with uses left), then the moderation trigger
        word, then one random draw against the configured rates.
        """
        for index, rule in enumerate(self._rules):
            if rule.profile not in (None, profile) or rule.match not in prompt:
                continue
            if rule.times is not None and self._used[index] >= rule.times:
                continue
            self._used[index] += 1
            return rule.kind
        if self._word and self._word in prompt.lower():
            return FaultKind.MODERATION
        if not self._rates:
            return None
        draw = request_rng(self._seed, seq, "faults").random()
        for kind, rate in self._rates:
            if draw < rate:
                return kind
            draw -= rate
        return None

    def uses(self) -> list[int]:
        """How often each scripted rule has fired, in rule order."""
        return list(self._used)
