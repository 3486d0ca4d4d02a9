"""The packaged price data, its overrides and the output-token emulation numbers."""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest

from runner.errors import ConfigError
from runner.pricing import (
    PriceBook,
    PriceNotFound,
    default_price_book,
    estimate_job,
    load_price_book,
    output_image_tokens,
)
from runner.pricing.tables import REFERENCE_SIZES, TABLE_QUALITIES
from runner.routes import load_catalog
from runner.routes.sizes import Size
from tests.pricing.lines import line

# ---------------------------------------------------------------- the data


def test_book_is_dated_and_sourced(book: PriceBook) -> None:
    assert book.as_of == date(2026, 11, 21)
    assert "OpenAI" in book.source
    assert "2026-11-21" in book.source
    assert book.table == "openai"


@pytest.mark.parametrize(
    ("model", "rates", "label"),
    [
        # (text in, text cached, image in, image cached, image out), USD per 1M tokens
        ("gpt-image-1", (5.00, 1.25, 10.00, 2.50, 40.00), "off."),
        ("gpt-image-1-mini", (2.00, 0.20, 2.50, 0.25, 8.00), "off."),
        ("gpt-image-1.5", (5.00, None, 8.00, None, 32.00), "3P"),
        ("gpt-image-2", (5.00, 1.25, 8.00, 2.00, 30.00), "3P"),
        ("gpt-image-2-2026-04-21", (5.00, 1.25, 8.00, 2.00, 30.00), "3P"),
        ("gpt-image-2.5-sunburst", (5.00, None, 8.00, None, 30.00), "3P"),
        ("gpt-image-2.5-flare", (5.00, None, 8.00, None, 30.00), "3P"),
        ("gpt-image-2.6-sunburst", (5.00, 1.25, 8.00, 2.00, 30.00), "off."),
    ],
)
def test_token_rows_match_the_reference(
    book: PriceBook, model: str, rates: tuple[float | None, ...], label: str
) -> None:
    row = book.prices(model)
    assert (row.text_in, row.text_cached, row.image_in, row.image_cached, row.image_out) == rates
    assert row.source.startswith(label)
    assert not row.placeholder


def test_mainline_row_is_a_marked_placeholder(book: PriceBook) -> None:
    row = book.prices("gpt-5.5")
    assert row.placeholder
    assert row.source == "unverified placeholder; override in imagerun.toml"
    assert (row.text_in, row.text_out) == (5.00, 30.00)


@pytest.mark.parametrize(
    ("model", "table"),
    [
        ("gpt-image-2", "gpt-image-2"),
        ("gpt-image-1.5", "gpt-image-1"),
        ("gpt-image-1", "gpt-image-1"),
        ("gpt-image-1-mini", "gpt-image-1-mini"),
    ],
)
def test_per_image_table_agrees_with_tokens_times_rate(
    book: PriceBook, model: str, table: str
) -> None:
    """Published per-image prices ≈ output tokens × image-out rate (the tables are rounded).

    e.g. gpt-image-1 low square 272 × $40/M = 0.01088 ≈ 0.011; gpt-image-2 high square
    7033 × $30/M = 0.21099 ≈ 0.211; the widest gap is gpt-image-1.5 medium portrait,
    1584 × $32/M = 0.050688 published as 0.05 (1.4 %).
    """
    prices = book.prices(model)
    assert prices.output_tokens == table
    assert prices.image_out is not None
    for quality in TABLE_QUALITIES:
        for size in REFERENCE_SIZES:
            tokens = book.output_image_tokens(model, size, quality)
            published = book.per_image_usd(model, size, quality)
            assert tokens * prices.image_out / 1e6 == pytest.approx(published, rel=0.015, abs=5e-4)


def test_snapshot_falls_back_to_its_alias(book: PriceBook) -> None:
    assert book.prices("gpt-image-2-2027-01-15").model == "gpt-image-2"
    assert book.prices("gpt-image-2.5-flare-2026-09-08").model == "gpt-image-2.5-flare-2026-09-08"


def test_unknown_model_names_the_fix(book: PriceBook) -> None:
    with pytest.raises(PriceNotFound, match=r'\[prices\."gpt-image-2\.6-flare"\]'):
        book.prices("gpt-image-2.6-flare")
    assert issubclass(PriceNotFound, ConfigError)


def test_route_with_unknown_price_table_is_refused(book: PriceBook) -> None:
    catalog = load_catalog({"openai": {"price_table": "batch"}}, environ={})
    with pytest.raises(PriceNotFound, match="'batch'"):
        estimate_job(book, catalog.get("openai"), line({"prompt": "x"}))


# ---------------------------------------------------------------- output-token emulation


@pytest.mark.parametrize(
    ("model", "size", "quality", "tokens"),
    [
        # gpt-image-2 counts derived from its per-image prices
        ("gpt-image-2", "1024x1024", "low", 200),
        ("gpt-image-2", "1024x1024", "medium", 1767),
        ("gpt-image-2", "1024x1024", "high", 7033),
        ("gpt-image-2", "1024x1536", "low", 167),
        ("gpt-image-2", "1536x1024", "medium", 1367),
        ("gpt-image-2", "1024x1536", "high", 5500),
        # official pre-2 counts: square / portrait 1024x1536 / landscape 1536x1024
        ("gpt-image-1", "1024x1024", "low", 272),
        ("gpt-image-1", "1024x1536", "low", 408),
        ("gpt-image-1", "1536x1024", "low", 400),
        ("gpt-image-1.5", "1024x1024", "medium", 1056),
        ("gpt-image-1.5", "1024x1536", "medium", 1584),
        ("gpt-image-1.5", "1536x1024", "medium", 1568),
        ("gpt-image-1", "1024x1024", "high", 4160),
        ("gpt-image-1", "1024x1536", "high", 6240),
        ("gpt-image-1", "1536x1024", "high", 6208),
        # mini: its own prices ÷ $8/M, 0.005 / 8e-6 = 625, 0.052 / 8e-6 = 6500
        ("gpt-image-1-mini", "1024x1024", "low", 625),
        ("gpt-image-1-mini", "1536x1024", "high", 6500),
        # 2.5/2.6 assume gpt-image-2's counts
        ("gpt-image-2.5-sunburst", "1024x1024", "high", 7033),
        ("gpt-image-2.6-sunburst", "1024x1024", "low", 200),
        # area scaling from the nearest reference shape:
        # 2048x2048 square = 4 × 1024x1024 → 7033 × 4 = 28132
        ("gpt-image-2", "2048x2048", "high", 28132),
        # 3840x2160 landscape: 5500 × 8294400 / 1572864 = 5500 × 5.2734375 = 29003.9 → 29004
        ("gpt-image-2", "3840x2160", "high", 29004),
        # 2160x3840 portrait, same area → same count
        ("gpt-image-2", "2160x3840", "high", 29004),
        # 1280x1024 (5:4) is nearer 3:2 than 1:1 on a log scale: 1367 × 1310720/1572864
        # = 1367 × 0.8333… = 1139.2 → 1139
        ("gpt-image-2", "1280x1024", "medium", 1139),
        # 1152x1024 (9:8) counts as square: 200 × 1179648/1048576 = 200 × 1.125 = 225
        ("gpt-image-2", "1152x1024", "low", 225),
    ],
)
def test_output_image_tokens(model: str, size: str, quality: str, tokens: int) -> None:
    assert output_image_tokens(model, size, quality) == tokens


def test_output_tokens_defaults() -> None:
    """auto/absent size → 1024x1024, auto/absent quality → medium; unknown quality → high."""
    assert output_image_tokens("gpt-image-2", "auto", "auto") == 1767
    assert output_image_tokens("gpt-image-2", None, None) == 1767
    assert output_image_tokens("gpt-image-2", Size(1024, 1024), "xhigh") == 7033
    assert output_image_tokens("gpt-image-2-2026-04-21", "1024x1024", "low") == 200


# ---------------------------------------------------------------- overrides


def test_override_replaces_the_placeholder() -> None:
    """Real gpt-5.5 prices in imagerun.toml clear the placeholder warning from estimates."""
    book = load_price_book(
        {"gpt-5.5": {"text_in": 1.25, "text_out": 10.0, "source": "openai.com/pricing"}}
    )
    row = book.prices("gpt-5.5")
    assert (row.text_in, row.text_out, row.placeholder) == (1.25, 10.0, False)
    assert row.source == "openai.com/pricing"
    assert book.source.endswith("overridden in imagerun.toml: gpt-5.5")
    route = load_catalog(environ={}).get("openai-responses")
    job = {"prompt": "", "quality": "low", "size": "1024x1024"}
    estimate = estimate_job(book, route, line(job))
    assert estimate.notes == ()
    # 0.006 + mainline typical: in 500 × 1.25 = 625, out 300 × 10 = 3000 → 0.003625; = 0.009625
    assert estimate.typical == pytest.approx(0.009625, abs=1e-9)


def test_overriding_image_out_drops_the_published_table() -> None:
    """The per-image table assumed $30/M; at $40/M output tokens × rate apply: 7033 × 40."""
    book = load_price_book({"gpt-image-2": {"image_out": 40}})
    assert book.prices("gpt-image-2").per_image is None
    assert book.per_image_usd("gpt-image-2", Size(1024, 1024), "high") == pytest.approx(0.28132)
    # other rows and the unoverridden snapshot keep the published table
    assert book.per_image_usd("gpt-image-2-2026-04-21", Size(1024, 1024), "high") == 0.211
    assert default_price_book().prices("gpt-image-2").image_out == 30.0


def test_override_adds_a_model() -> None:
    """A new label priced like gpt-image-2: high square = 7033 × $30/M = 0.21099."""
    book = load_price_book(
        {
            "gpt-image-2.6-flare": {
                "text_in": 5,
                "image_in": 8,
                "image_out": 30,
                "output_tokens": "gpt-image-2",
            }
        }
    )
    route = load_catalog(environ={}).get("openai")
    job = {"prompt": "", "model": "gpt-image-2.6-flare", "quality": "high", "size": "1024x1024"}
    assert estimate_job(book, route, line(job)).typical == pytest.approx(0.21099, abs=1e-9)
    assert (
        book.prices("gpt-image-2.6-flare").source == 'imagerun.toml [prices."gpt-image-2.6-flare"]'
    )


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"gpt-image-2": {"image_outt": 40}}, "unknown key"),
        ({"gpt-image-2": {"image_out": -1}}, "number ≥ 0"),
        ({"gpt-image-2": {"image_out": True}}, "number ≥ 0"),
        ({"gpt-image-2": {"image_out": "40"}}, "number ≥ 0"),
        ({"gpt-image-2": {"output_tokens": "dall-e-3"}}, "is not a table"),
        ({"gpt-image-2": {"auto_sizes": "huge"}}, "is not a table"),
        ({"my-model": {"source": "x"}}, "at least one price"),
        ({"gpt-image-2": 40}, "expected a table"),
    ],
)
def test_bad_overrides_name_the_table(override: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        load_price_book(override)
    assert "imagerun.toml [prices." in str(info.value)
