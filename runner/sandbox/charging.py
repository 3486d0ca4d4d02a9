"""Pricing a request, holding its price, and settling it under the failure-charge policy.

A success is always charged. A failure is charged only if its outcome class is in
``SandboxConfig.charged_failures``; clients can tell only from balances and call logs. A
charged failure costs what the success would have cost (the same quote).
"""

from __future__ import annotations

from decimal import Decimal

from runner.models import Outcome
from runner.sandbox.bodies import revised_prompt
from runner.sandbox.exchange import Exchange, Quote
from runner.sandbox.ledger import CallLogEntry
from runner.sandbox.parsing import Endpoint
from runner.sandbox.prices import (
    BATCH_PRICE_FACTOR,
    image_usage_usd,
    mainline_usd,
    to_quota,
    to_usd,
)
from runner.sandbox.records import CLIENT_CLOSED, RequestRecord
from runner.sandbox.state import Sandbox
from runner.sandbox.tokens import AUTO_QUALITY, image_usage, mainline_usage
from runner.sandbox.validation import DEFAULT_IMAGE_MODEL

#: Never charged, whatever the policy: no account to bill, or nothing left in it.
_NEVER_CHARGED = frozenset({Outcome.AUTH, Outcome.QUOTA_EXHAUSTED})


def quote(ex: Exchange, source_sizes: tuple[tuple[int, int], ...] = ()) -> Quote:
    """The price of ``ex`` as resolved so far (defaults stand in for what is unknown)."""
    group = ex.gateway_group
    call, resolved = ex.call, ex.resolved
    n = resolved.n if resolved else 1
    if group is not None and group.billing == "call":
        usd = group.usd_per_call * n * group.ratio
        return Quote(
            quota=to_quota(usd),
            usage=None,
            mainline=None,
            model_price=float(group.usd_per_call),
            group_ratio=float(group.ratio),
        )
    prompt = call.prompt if call else ""
    model = resolved.model if resolved else (call.model if call else None) or DEFAULT_IMAGE_MODEL
    out = (
        (resolved.width, resolved.height, resolved.quality)
        if resolved
        else (1024, 1024, AUTO_QUALITY)
    )
    usage = image_usage(prompt, source_sizes, out, n)
    usd = image_usage_usd(model, usage)
    mainline = None
    if call is not None and call.endpoint is Endpoint.RESPONSES and call.mainline_model:
        mainline = mainline_usage(prompt, revised_prompt(prompt), usage.image_in)
        usd += mainline_usd(call.mainline_model, *mainline)
    ratio = group.ratio if group is not None else Decimal(1)
    if ex.batch_id is not None:
        usd *= BATCH_PRICE_FACTOR
    return Quote(
        quota=to_quota(usd * ratio),
        usage=usage,
        mainline=mainline,
        model_price=None,
        group_ratio=float(ratio),
    )


def _charged(sandbox: Sandbox, outcome: Outcome) -> bool:
    if outcome in _NEVER_CHARGED:
        return False
    return outcome is Outcome.OK or outcome in sandbox.config.charged_failures


def settle(sandbox: Sandbox, ex: Exchange) -> RequestRecord:
    """Release the hold, charge per policy, and record the request (once).

    An exchange that never got an outcome was cut off (the client left, or the server is
    stopping): it is settled as a ``timeout`` with status 499.
    """
    ex.settled = True
    if ex.outcome is None:
        ex.outcome, ex.status = Outcome.TIMEOUT, CLIENT_CLOSED
    # A request still running when the sandbox was reset belongs to the forgotten run:
    # recording or charging it would leak into the next test's log and balances.
    current = ex.run_id == sandbox.run_id
    charged = 0
    if ex.account is not None and current:
        sandbox.ledger.release(ex.account, ex.held)
        if _charged(sandbox, ex.outcome):
            price = ex.quote or quote(ex)
            sandbox.ledger.charge(ex.account, _log_entry(sandbox, ex, price))
            charged = price.quota
    call = ex.call
    record = RequestRecord(
        seq=ex.seq,
        time=ex.arrived,
        profile=ex.profile,
        method=ex.request.method,
        path=ex.request.url.path,
        client_request_id=ex.client_request_id,
        group=ex.group,
        model=(ex.resolved.model if ex.resolved else call.model) if call else None,
        prompt=call.prompt if call else None,
        params=dict(call.params) if call else {},
        n_sources=len(call.sources) if call else 0,
        status=ex.status,
        fault=ex.fault,
        outcome=ex.outcome,
        provider_request_id=ex.request_id,
        charged_quota=charged,
        charged_usd=to_usd(charged),
        duration_ms=(sandbox.clock() - ex.started) * 1000,
        batch_id=ex.batch_id,
    )
    if current:
        sandbox.log.add(record)
    return record


def _log_entry(sandbox: Sandbox, ex: Exchange, price: Quote) -> CallLogEntry:
    assert ex.account is not None
    call = ex.call
    model = (ex.resolved.model if ex.resolved else call.model if call else None) or "unknown"
    other: dict[str, object] = {
        "request_path": ex.request.url.path,
        "group_ratio": price.group_ratio,
        "client_request_id": ex.client_request_id or "",
    }
    if ex.batch_id is not None:
        other["batch_id"] = ex.batch_id
    if price.model_price is not None:
        other["model_price"] = price.model_price
    if ex.resolved is not None and ex.resolved.n > 1:
        other["n"] = ex.resolved.n
    now_s = sandbox.wall_ns() // 1_000_000_000
    return CallLogEntry(
        id=0,
        created_at=now_s,
        model_name=model,
        quota=price.quota,
        # new-api's image relay forces at least one prompt token on every consume row.
        prompt_tokens=max(1, price.prompt_tokens),
        completion_tokens=price.completion_tokens,
        request_id=ex.request_id,
        token_id=ex.account.token_id,
        token_name=ex.account.token_name,
        group=ex.account.group,
        use_time=int(sandbox.clock() - ex.started),
        other=other,
    )


def hold_price(sandbox: Sandbox, ex: Exchange, price: Quote) -> bool:
    """Hold ``price`` on the exchange's account; ``False`` when the balance cannot cover it."""
    assert ex.account is not None
    if not sandbox.ledger.hold(ex.account, price.quota):
        return False
    ex.held = price.quota
    return True
