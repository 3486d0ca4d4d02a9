"""What attempts cost under each built-in route's failure-charge policy, and token pricing.

Prices by hand (prices.toml), USD per 1M tokens:
  gpt-image-2: text in 5, text cached 1.25, image in 8, image cached 2, image out 30.
  gpt-image-1: text in 5, image out 40. gpt-image-1.5: text in 5, no cached price, image out 32.
  gpt-5.5 (placeholder): text in 5, text out 30.
"""

from __future__ import annotations

import json

import pytest

from runner.models import ChargeStatus, Outcome, Usage
from runner.pricing import (
    PriceBook,
    PriceNotFound,
    attempt_cost,
    load_price_book,
    reprice,
    token_cost,
)
from runner.routes import Catalog
from tests.pricing.lines import line

PROMPT = "Two red foxes asleep in fresh snow, dawn"  # 40 chars → 10 typical tokens
HIGH_SQUARE = {"prompt": PROMPT, "quality": "high", "size": "1024x1024"}


# ---------------------------------------------------------------- token_cost


def test_token_cost_official_gpt_image_1(book: PriceBook) -> None:
    """1000 text in × $5/M + 4160 image out × $40/M = 0.005 + 0.1664 = 0.1714."""
    usage = Usage(input_text_tokens=1000, output_image_tokens=4160)
    assert token_cost(book, "gpt-image-1", usage) == 0.1714


def test_cached_tokens_count_against_text_first(book: PriceBook) -> None:
    """1000 cached of 100 text + 3050 image: 100 text and 900 image tokens at cached rates.

    100 × 1.25 + 900 × 2 + (3050 - 900) × 8 + 1367 × 30 = 125 + 1800 + 17200 + 41010 = 60135
    → $0.060135.
    """
    usage = Usage(
        input_text_tokens=100, input_image_tokens=3050, cached_tokens=1000, output_image_tokens=1367
    )
    assert token_cost(book, "gpt-image-2", usage) == 0.060135


def test_unpublished_cached_price_bills_full_rate(book: PriceBook) -> None:
    """gpt-image-1.5 has no cached price: 100 × 5 + 1056 × 32 = 500 + 33792 → $0.034292."""
    usage = Usage(input_text_tokens=100, cached_tokens=50, output_image_tokens=1056)
    assert token_cost(book, "gpt-image-1.5", usage) == 0.034292


def test_text_output_priced_at_image_output_rate(book: PriceBook) -> None:
    """No text-output price is published for image models: 100 × $30/M = $0.003."""
    assert token_cost(book, "gpt-image-2", Usage(output_text_tokens=100)) == 0.003


def test_multiplier_and_mainline(book: PriceBook) -> None:
    """image 20 × 5 + 1767 × 30 = 53110; mainline 600 × 5 + 250 × 30 = 10500; × 1.2.

    (53110 + 10500) / 1e6 = 0.06361; × 1.2 = 0.076332.
    """
    usage = Usage(
        input_text_tokens=20,
        output_image_tokens=1767,
        mainline_input_tokens=600,
        mainline_output_tokens=250,
    )
    assert token_cost(book, "gpt-image-2", usage, mainline_model="gpt-5.5") == 0.06361
    assert (
        token_cost(book, "gpt-image-2", usage, multiplier=1.2, mainline_model="gpt-5.5") == 0.076332
    )


def test_mainline_tokens_need_a_mainline_model(book: PriceBook) -> None:
    with pytest.raises(ValueError, match="mainline"):
        token_cost(book, "gpt-image-2", Usage(mainline_input_tokens=10))


def test_unknown_model_is_a_config_error(book: PriceBook) -> None:
    with pytest.raises(PriceNotFound, match=r"gpt-image-9.*imagerun\.toml"):
        token_cost(book, "gpt-image-9", Usage(output_image_tokens=1))


# ---------------------------------------------------------------- attempt_cost: token routes


def test_openai_ok_from_usage(book: PriceBook, catalog: Catalog) -> None:
    """10 text × 5 + 7033 out × 30 = 50 + 210990 → $0.21104, charged."""
    result = attempt_cost(
        book,
        catalog.get("openai"),
        job=line(HIGH_SQUARE),
        usage=Usage(input_text_tokens=10, output_image_tokens=7033),
        outcome=Outcome.OK,
        images=1,
    )
    assert result.expected_usd == 0.21104
    assert result.charge_status is ChargeStatus.CHARGED
    assert result.basis == "usage × gpt-image-2 token prices"


@pytest.mark.parametrize(
    "outcome",
    [Outcome.SERVER_ERROR, Outcome.RATE_LIMITED, Outcome.MODERATION_BLOCKED, Outcome.AUTH],
)
def test_openai_documented_free_failures(
    book: PriceBook, catalog: Catalog, outcome: Outcome
) -> None:
    result = attempt_cost(
        book, catalog.get("openai"), job=line(HIGH_SQUARE), usage=None, outcome=outcome, images=0
    )
    assert result.expected_usd == 0.0
    assert result.charge_status is ChargeStatus.NOT_CHARGED


@pytest.mark.parametrize("outcome", [Outcome.TIMEOUT, Outcome.NETWORK, Outcome.LOST])
def test_openai_unknown_failures_show_the_would_be_cost(
    book: PriceBook, catalog: Catalog, outcome: Outcome
) -> None:
    """Unknown charge: expected_usd is the typical cost if charged: 0.211 + 10 × $5/M."""
    result = attempt_cost(
        book, catalog.get("openai"), job=line(HIGH_SQUARE), usage=None, outcome=outcome, images=0
    )
    assert result.expected_usd == 0.21105
    assert result.charge_status is ChargeStatus.UNKNOWN
    assert result.basis.startswith(f"if charged ({outcome}): no usage")


def test_official_gateway_timeout_is_charged_at_typical(book: PriceBook, catalog: Catalog) -> None:
    """laozhang bills client timeouts; no usage, no quality → medium 1024x1024 0.053 + text."""
    result = attempt_cost(
        book,
        catalog.get("laozhang-official"),
        job=line({"prompt": PROMPT}),
        usage=None,
        outcome=Outcome.TIMEOUT,
        images=0,
    )
    assert result.expected_usd == 0.05305
    assert result.charge_status is ChargeStatus.CHARGED


def test_enterprise_ok_from_usage(book: PriceBook, catalog: Catalog) -> None:
    """(10 × 5 + 7033 × 30) / 1e6 = 0.21104; × 1.2 = 0.253248."""
    result = attempt_cost(
        book,
        catalog.get("laozhang-enterprise"),
        job=line(HIGH_SQUARE),
        usage=Usage(input_text_tokens=10, output_image_tokens=7033),
        outcome=Outcome.OK,
        images=1,
    )
    assert result.expected_usd == 0.253248
    assert result.basis.endswith("× 1.2")


def test_ok_without_usage_uses_the_per_image_table(book: PriceBook, catalog: Catalog) -> None:
    """A gateway that omits usage (or sends all zeros): 3 × 0.041 + 10 × $5/M = 0.12305."""
    params = {"prompt": PROMPT, "quality": "medium", "size": "1024x1536", "n": 3}
    for usage in (None, Usage()):
        result = attempt_cost(
            book,
            catalog.get("laozhang-official"),
            job=line(params),
            usage=usage,
            outcome=Outcome.OK,
            images=3,
        )
        assert result.expected_usd == 0.12305
        assert result.basis.startswith("no usage: typical gpt-image-2 medium 1024x1536 × 3")


def test_responses_ok_includes_mainline(book: PriceBook, catalog: Catalog) -> None:
    """(20 × 5 + 1767 × 30) + (600 × 5 + 250 × 30) = 53110 + 10500 → $0.06361."""
    usage = Usage(
        input_text_tokens=20,
        output_image_tokens=1767,
        mainline_input_tokens=600,
        mainline_output_tokens=250,
    )
    result = attempt_cost(
        book,
        catalog.get("openai-responses"),
        job=line({"prompt": PROMPT}),
        usage=usage,
        outcome=Outcome.OK,
        images=1,
    )
    assert result.expected_usd == 0.06361
    assert "mainline gpt-5.5" in result.basis


# ---------------------------------------------------------------- attempt_cost: per-call routes


@pytest.mark.parametrize(
    ("route_name", "outcome", "status", "usd"),
    [
        ("laozhang", Outcome.OK, ChargeStatus.CHARGED, 0.03),
        ("laozhang", Outcome.TIMEOUT, ChargeStatus.CHARGED, 0.03),  # "client timeouts are charged"
        ("laozhang", Outcome.INTERRUPTED, ChargeStatus.CHARGED, 0.03),
        ("laozhang", Outcome.RATE_LIMITED, ChargeStatus.NOT_CHARGED, 0.0),
        ("laozhang", Outcome.SERVER_ERROR, ChargeStatus.NOT_CHARGED, 0.0),
        ("laozhang", Outcome.NETWORK, ChargeStatus.UNKNOWN, 0.03),
        ("laozhang-vip", Outcome.BAD_RESPONSE, ChargeStatus.CHARGED, 0.03),
        ("laozhang-vip", Outcome.INVALID_REQUEST, ChargeStatus.NOT_CHARGED, 0.0),
        ("laozhang-chat", Outcome.DOWNLOAD_FAILED, ChargeStatus.CHARGED, 0.03),
        ("laozhang-chat", Outcome.MODERATION_BLOCKED, ChargeStatus.NOT_CHARGED, 0.0),
        ("laozhang-chat", Outcome.LOST, ChargeStatus.UNKNOWN, 0.03),
    ],
)
def test_per_call_policies(
    book: PriceBook,
    catalog: Catalog,
    route_name: str,
    outcome: Outcome,
    status: ChargeStatus,
    usd: float,
) -> None:
    images = 1 if outcome is Outcome.OK else 0
    route = catalog.get(route_name)
    params = {"prompt": PROMPT}
    result = attempt_cost(book, route, job=line(params), usage=None, outcome=outcome, images=images)
    assert (result.expected_usd, result.charge_status) == (usd, status)


def test_per_call_bills_requested_n_even_if_fewer_images(book: PriceBook, catalog: Catalog) -> None:
    """n=2 that yields 1 image is billed 2 × 0.03 (as the -vip groups bill)."""
    result = attempt_cost(
        book,
        catalog.get("laozhang-vip"),
        job=line({"prompt": PROMPT, "n": 2}),
        usage=None,
        outcome=Outcome.OK,
        images=1,
    )
    assert result.expected_usd == 0.06
    assert result.basis == "$0.03 per call × 2"


# ---------------------------------------------------------------- reprice


def test_reprice_from_stored_json_with_new_prices(catalog: Catalog) -> None:
    """After image_out is overridden to $40/M: 10 × 5 + 7033 × 40 = 50 + 281320 → $0.28137."""
    book = load_price_book({"gpt-image-2": {"image_out": 40.0}})
    stored = json.dumps(Usage(input_text_tokens=10, output_image_tokens=7033).to_json())
    result = reprice(
        book,
        catalog.get("openai"),
        job=line(HIGH_SQUARE),
        usage=stored,
        outcome="ok",
        images=1,
        charge_status="charged",
    )
    assert result.expected_usd == 0.28137
    assert result.charge_status is ChargeStatus.CHARGED


def test_reprice_keeps_the_stored_charge_status(book: PriceBook, catalog: Catalog) -> None:
    """A call log said this server error was charged: the policy ("not_charged") loses."""
    result = reprice(
        book,
        catalog.get("laozhang"),
        job=line({"prompt": PROMPT}),
        usage=None,
        outcome=Outcome.SERVER_ERROR,
        images=0,
        charge_status=ChargeStatus.CHARGED,
    )
    assert (result.expected_usd, result.charge_status) == (0.03, ChargeStatus.CHARGED)


def test_reprice_without_stored_status_applies_policy(book: PriceBook, catalog: Catalog) -> None:
    result = reprice(
        book,
        catalog.get("openai"),
        job=line(HIGH_SQUARE),
        usage={"input_text_tokens": 10, "output_image_tokens": 7033},
        outcome="timeout",
        images=0,
    )
    # usage present, so it prices the usage (0.21104) although the status stays unknown
    assert (result.expected_usd, result.charge_status) == (0.21104, ChargeStatus.UNKNOWN)
