"""What the sandbox charges, in new-api quota units (500,000 quota = US$1).

Token rates come from the packaged price book (``runner.pricing.default_price_book``, never
a user's overrides: the sandbox plays the provider, whose prices do not change because a
client configured different ones). Amounts are whole quota units, as new-api keeps them, so
balances and call logs add up exactly.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import ROUND_HALF_UP, Decimal
from types import MappingProxyType

from runner.pricing import PriceNotFound, default_price_book
from runner.sandbox.tokens import ImageUsage

#: new-api's ``QuotaPerUnit``: quota units per US dollar.
QUOTA_PER_USD = 500_000
_PER_MILLION = Decimal(1_000_000)

#: What a Batch API line costs, as a share of the same synchronous request (OpenAI bills
#: batches at half price).
BATCH_PRICE_FACTOR = Decimal("0.5")

#: Rates used for a model the price book does not list (the sandbox still answers for it).
FALLBACK_IMAGE_MODEL = "gpt-image-2"
FALLBACK_MAINLINE_MODEL = "gpt-5.5"

#: Mainline models the Responses image tool accepts (S4, July 2026). The price book may
#: price only some of them; the others are billed at ``FALLBACK_MAINLINE_MODEL``'s rates.
MAINLINE_MODELS: frozenset[str] = frozenset(
    {
        "gpt-5.5",
        "gpt-5.4-mini",
        "gpt-5.4-nano",
        "gpt-5.2",
        "gpt-5",
        "gpt-5-nano",
        "o3",
        "gpt-4.1",
        "gpt-4.1-mini",
        "gpt-4.1-nano",
        "gpt-4o",
        "gpt-4o-mini",
    }
)


def _rates(model: str, fallback: str, keys: tuple[str, ...]) -> Mapping[str, Decimal]:
    book = default_price_book()
    try:
        prices = book.prices(model)
        values = {key: prices.rate(key) for key in keys}
    except PriceNotFound:
        fallback_prices = book.prices(fallback)
        values = {key: fallback_prices.rate(key) for key in keys}
    return MappingProxyType({key: Decimal(str(value)) for key, value in values.items()})


def to_quota(usd: Decimal | float | str) -> int:
    """Round a dollar amount to whole quota units (half up, as money is usually rounded)."""
    amount = Decimal(str(usd)) * QUOTA_PER_USD
    return int(amount.quantize(Decimal(1), rounding=ROUND_HALF_UP))


def to_usd(quota: int) -> float:
    """Quota units as dollars (exact to the micro-dollar)."""
    return quota / QUOTA_PER_USD


def image_usage_usd(model: str, usage: ImageUsage) -> Decimal:
    """Dollar cost of an image call's usage at ``model``'s token prices."""
    rates = _rates(model, FALLBACK_IMAGE_MODEL, ("text_in", "image_in", "image_out"))
    return (
        usage.text_in * rates["text_in"]
        + usage.image_in * rates["image_in"]
        + usage.image_out * rates["image_out"]
    ) / _PER_MILLION


def mainline_usd(model: str, input_tokens: int, output_tokens: int) -> Decimal:
    """Dollar cost of the Responses mainline model's tokens."""
    rates = _rates(model, FALLBACK_MAINLINE_MODEL, ("text_in", "text_out"))
    return (input_tokens * rates["text_in"] + output_tokens * rates["text_out"]) / _PER_MILLION
