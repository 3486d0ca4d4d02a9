"""What an attempt cost: from reported usage, a per-call price, or the per-image fallback.

The charge status comes from the route's failure-charge policy (``Route.charge_policy``) or,
when repricing a stored attempt, from the status already recorded (which may rest on stronger
evidence than the policy: a probe, the provider's call log).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from runner.models import ChargeStatus, Outcome, Usage
from runner.pricing.book import PriceBook, TokenPrices
from runner.pricing.estimate import mainline_prices, typical_attempt_usd
from runner.pricing.priced_job import PricedJob
from runner.routes.catalog import Route


@dataclass(frozen=True, slots=True, kw_only=True)
class CostResult:
    """The expected cost of one attempt.

    Attributes:
        expected_usd: USD rounded to 1e-6. With ``charge_status`` ``unknown`` this is what
            the attempt costs *if* it was charged; with ``not_charged`` it is 0.
        charge_status: whether the attempt is (expected to be) charged.
        basis: how ``expected_usd`` was reached, for the ledger and ``imagerun costs``.
    """

    expected_usd: float
    charge_status: ChargeStatus
    basis: str


def token_cost(
    book: PriceBook,
    model: str,
    usage: Usage,
    *,
    multiplier: float = 1.0,
    mainline_model: str | None = None,
) -> float:
    """USD for reported token usage, rounded to 1e-6.

    ``Usage.cached_tokens`` is taken to be part of the input tokens (OpenAI's convention).
    Usage does not say whether they were text or image tokens, so they are counted against
    text first: text has the smaller cache discount, so the cost errs high. Rates that are not
    published fall back to a rate that is never lower (cached → uncached input, text output →
    image output).

    Args:
        book: the price book.
        model: the image model label.
        usage: the attempt's usage.
        multiplier: the route's ``price_multiplier`` (e.g. 1.2 for an official price + 20 %).
        mainline_model: on the Responses shape, the model whose prices apply to
            ``mainline_input_tokens`` / ``mainline_output_tokens``.

    Raises:
        PriceNotFound: the model has no prices.
        ValueError: usage has mainline tokens but no ``mainline_model`` was given.
    """
    usd = _image_model_usd(book.prices(model), usage)
    if usage.mainline_input_tokens or usage.mainline_output_tokens:
        if mainline_model is None:
            raise ValueError("usage has mainline tokens but no mainline_model was given")
        mainline = book.prices(mainline_model)
        usd += mainline.usd("text_in", usage.mainline_input_tokens)
        usd += mainline.usd("text_out", usage.mainline_output_tokens)
    return round(usd * multiplier, 6)


def attempt_cost(
    book: PriceBook,
    route: Route,
    *,
    job: PricedJob,
    usage: Usage | None,
    outcome: Outcome,
    images: int,
) -> CostResult:
    """The expected cost and charge status of one finished attempt.

    - Per-call routes: ``usd_per_call × max(n, images)`` — gateways multiply the per-call
      price by the request's ``n`` whatever comes back.
    - Token routes: from ``usage``; without usage (a gateway omitted it, or a charged
      failure) the typical per-image cost for the job's size and quality.
    - Failures cost only what ``route.charge_policy(outcome)`` says: ``not_charged`` → 0;
      ``unknown`` → ``expected_usd`` is what the attempt *would* cost if charged, with
      ``charge_status`` left ``unknown`` for reconciliation to settle.

    Args:
        book: the price book.
        route: the route the attempt ran on.
        job: what the attempt's job asks for — used for the model, ``n`` and the no-usage
            fallback.
        usage: reported usage, or ``None``.
        outcome: the attempt's outcome class.
        images: images the attempt produced (0 for a failure).
    """
    status = route.charge_policy(outcome)
    return _result(book, route, job, usage, outcome, images, status)


def reprice(
    book: PriceBook,
    route: Route,
    *,
    job: PricedJob,
    usage: Mapping[str, Any] | str | None,
    outcome: Outcome | str,
    images: int,
    charge_status: ChargeStatus | str | None = None,
) -> CostResult:
    """Recompute a stored attempt's ``expected_usd`` with the current price book.

    Args:
        usage: the stored usage, as a dict (``Usage.to_json``) or its JSON text, or ``None``.
        outcome: the stored outcome class.
        charge_status: the stored charge status; it is kept, since it may rest on a probe or
            the provider's call log. ``None`` re-applies the route's policy.
        book, route, job, images: as for :func:`attempt_cost`.
    """
    data = json.loads(usage) if isinstance(usage, str) else usage
    parsed = Usage.from_json(dict(data) if data is not None else None)
    result_outcome = Outcome(outcome)
    if charge_status is None:
        status = route.charge_policy(result_outcome)
    else:
        status = ChargeStatus(charge_status)
    return _result(book, route, job, parsed, result_outcome, images, status)


def _result(
    book: PriceBook,
    route: Route,
    job: PricedJob,
    usage: Usage | None,
    outcome: Outcome,
    images: int,
    status: ChargeStatus,
) -> CostResult:
    if status is ChargeStatus.NOT_CHARGED:
        return CostResult(expected_usd=0.0, charge_status=status, basis=f"not charged ({outcome})")
    usd, basis = _charged_usd(book, route, job, usage, images)
    if status is ChargeStatus.UNKNOWN:
        basis = f"if charged ({outcome}): {basis}"
    return CostResult(expected_usd=round(usd, 6), charge_status=status, basis=basis)


def _charged_usd(
    book: PriceBook,
    route: Route,
    job: PricedJob,
    usage: Usage | None,
    images: int,
) -> tuple[float, str]:
    """Cost of the attempt if it is charged, and how it was reached."""
    if route.billing == "call":
        units = max(job.n, images)
        return route.usd_per_call * units, f"${route.usd_per_call:g} per call × {units}"
    # A usage object with every count zero says nothing (gateways fill it with zeros when
    # upstream gave none), so it is treated like no usage at all.
    if usage is None or not usage.to_json():
        return typical_attempt_usd(book, route, job, images)
    book.check_table(route.price_table)
    model = job.model_on(route)
    mainline = mainline_prices(book, route)
    usd = token_cost(
        book,
        model,
        usage,
        multiplier=route.price_factor,
        mainline_model=mainline.model if mainline else None,
    )
    basis = f"usage × {model} token prices"
    if mainline is not None:
        basis += f" + mainline {mainline.model}"
    if usage.output_text_tokens and book.prices(model).text_out is None:
        basis += " (text output at the image-output rate: no published price)"
    if route.price_multiplier != 1.0:
        basis += f" × {route.price_multiplier:g}"
    if route.batch_discount != 1.0:
        basis += f" × {route.batch_discount:g} (batch)"
    return usd, basis


def _image_model_usd(prices: TokenPrices, usage: Usage) -> float:
    text_in, image_in = usage.input_text_tokens, usage.input_image_tokens
    cached = min(usage.cached_tokens, text_in + image_in)
    text_cached = min(cached, text_in)
    image_cached = cached - text_cached
    return (
        prices.usd("text_in", text_in - text_cached)
        + prices.usd("text_cached", text_cached)
        + prices.usd("image_in", image_in - image_cached)
        + prices.usd("image_cached", image_cached)
        + prices.usd("image_out", usage.output_image_tokens)
        + prices.usd("text_out", usage.output_text_tokens)
    )
