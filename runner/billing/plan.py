"""What ``imagerun probe-billing`` will send: one success, then one of each failure class it
can provoke safely, and what that could cost at most.

Provoked without help from the provider:

- ``invalid_request``: a size no route accepts (``100x100``); only on shapes that send a size.
- ``moderation_blocked``: a prompt built to be refused. On a real provider a blocked request
  can count against the account's standing, so this probe can be turned off
  (``--no-moderation``), and the default prompt is harmless: it carries the sandbox's trigger
  word; against a real provider pass your own with ``--moderation-prompt``. If it is not
  blocked it is billed like any success and reported as "not provoked".
- ``timeout``: a real generation with a very short client timeout (the upstream may finish
  and charge anyway: exactly what the probe is for).

Other classes (``server_error``, ``rate_limited``, ``network``, ``bad_response``) cannot be
provoked on a healthy provider; a test server that injects them for prompts carrying a
marker (the sandbox's ``--rule MARKER:KIND``) can be probed with ``--provoke CLASS=MARKER``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from runner.errors import UsageError
from runner.models import Job, Outcome, Shape, utcnow
from runner.pricing import PriceBook, PricedJob, worst_case
from runner.routes import Catalog, Route
from runner.routes.sizes import size_problem
from runner.shapes import ADAPTERS

BASE_PROMPT = "imagerun billing probe: a plain grey square on a white background"
#: Carries the sandbox's trigger word; harmless (and probably not blocked) elsewhere.
DEFAULT_MODERATION_PROMPT = (
    "imagerun billing probe (moderation): this forbidden request is meant to be refused"
)
INVALID_SIZE = "100x100"
CHEAP_SIZE = "1024x1024"
#: Classes ``--provoke`` accepts: what a server can answer with (a success, and the classes
#: that stop a route, are not probed; ``interrupted``/``lost`` are ours, not the server's).
PROVOKABLE = frozenset(
    {
        Outcome.SERVER_ERROR,
        Outcome.RATE_LIMITED,
        Outcome.TIMEOUT,
        Outcome.NETWORK,
        Outcome.INVALID_REQUEST,
        Outcome.MODERATION_BLOCKED,
        Outcome.BAD_RESPONSE,
    }
)


@dataclass(frozen=True, slots=True, kw_only=True)
class ProbeOptions:
    """How to probe.

    Attributes:
        moderation: send the moderation probe.
        moderation_prompt: the prompt meant to be blocked.
        markers: failure class → prompt marker a test server turns into that class.
        timeout_after: the client timeout of the timeout probe, in seconds.
        settle: seconds to wait for a charge to show up before calling it "not charged".
        timeout_settle: the same after a timed-out probe, whose upstream generation goes on
            and is charged only when it finishes (default: the route's timeout).
        poll: seconds between reads of the call log while waiting.
    """

    moderation: bool = True
    moderation_prompt: str = DEFAULT_MODERATION_PROMPT
    markers: Mapping[Outcome, str] = field(default_factory=dict)
    timeout_after: float = 3.0
    settle: float = 60.0
    timeout_settle: float | None = None
    poll: float = 1.0


@dataclass(frozen=True, slots=True, kw_only=True)
class Probe:
    """One probe request: the class it means to provoke and how."""

    provoke: Outcome
    prompt: str
    params: dict[str, Any]
    how: str
    client_timeout: float | None = None


def parse_marker(text: str) -> tuple[Outcome, str]:
    """``CLASS=MARKER`` of ``--provoke``."""
    name, sep, marker = text.partition("=")
    try:
        outcome = Outcome(name.strip())
    except ValueError:
        outcome = None
    if not sep or not marker or outcome not in PROVOKABLE:
        known = ", ".join(sorted(PROVOKABLE))
        raise UsageError(f"--provoke wants CLASS=MARKER with CLASS one of {known}; got {text!r}")
    return outcome, marker


def _base_params(catalog: Catalog, route: Route) -> dict[str, Any]:
    """The cheapest request the route takes: low quality, 1024x1024 where those apply."""
    params: dict[str, Any] = {}
    if "low" in catalog.qualities(route):
        params["quality"] = "low"
    if "size" in route.params and size_problem(catalog.size_rule(route), CHEAP_SIZE) is None:
        params["size"] = CHEAP_SIZE
    return params


def _sends_size(route: Route, params: dict[str, Any]) -> bool:
    job = Job(
        id=0,
        batch_id="",
        route=route.name,
        ext_id="",
        prompt=BASE_PROMPT,
        params=params,
        images=(),
        mask=None,
        attempts=0,
        created_at=utcnow(),
    )
    sent = ADAPTERS[route.shape].build(route, job, [], None).params_sent
    return INVALID_SIZE in repr(sent)


def plan_probes(catalog: Catalog, route: Route, options: ProbeOptions) -> list[Probe]:
    """The probes for ``route``, success first.

    Raises:
        UsageError: the route runs remote batches (its lines are not single requests to
            time and charge one by one; the batch's own results say what each cost).
    """
    if route.shape is Shape.BATCH:
        raise UsageError(
            f"probe-billing sends single requests; route {route.name} runs remote batches, "
            "whose result lines carry their own usage: probe its synchronous twin instead"
        )
    base = _base_params(catalog, route)
    probes = [Probe(provoke=Outcome.OK, prompt=BASE_PROMPT, params=base, how="a normal request")]
    invalid = {**base, "size": INVALID_SIZE}
    if Outcome.INVALID_REQUEST not in options.markers and _sends_size(route, invalid):
        probes.append(
            Probe(
                provoke=Outcome.INVALID_REQUEST,
                prompt=BASE_PROMPT,
                params=invalid,
                how=f"size {INVALID_SIZE}",
            )
        )
    if options.moderation and Outcome.MODERATION_BLOCKED not in options.markers:
        probes.append(
            Probe(
                provoke=Outcome.MODERATION_BLOCKED,
                prompt=options.moderation_prompt,
                params=base,
                how="a prompt built to be blocked",
            )
        )
    if Outcome.TIMEOUT not in options.markers:
        probes.append(
            Probe(
                provoke=Outcome.TIMEOUT,
                prompt=BASE_PROMPT,
                params=base,
                how=f"client timeout after {options.timeout_after:g}s",
                client_timeout=options.timeout_after,
            )
        )
    for outcome, marker in sorted(options.markers.items()):
        probes.append(
            Probe(
                provoke=outcome,
                prompt=f"{BASE_PROMPT} {marker}",
                params=base,
                how=f"marker {marker!r}",
                client_timeout=options.timeout_after if outcome is Outcome.TIMEOUT else None,
            )
        )
    return probes


def probes_worst_case(book: PriceBook, route: Route, probes: list[Probe]) -> float:
    """The most the probes can cost: each one billed like a success of its request."""
    jobs = (PricedJob.from_fields(prompt=p.prompt, params=p.params) for p in probes)
    return round(sum(worst_case(book, route, job) for job in jobs), 6)
