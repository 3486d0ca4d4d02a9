"""Job estimates on every built-in route, checked by hand against the price book's figures.

Shared hand figures (prices.toml, from the reference):
  gpt-image-2: text in $5/M, image in $8/M; per image (1024x1024 / 1024x1536 / 1536x1024)
    low 0.006/0.005/0.005, medium 0.053/0.041/0.041, high 0.211/0.165/0.165.
  PROMPT has 40 characters → text tokens low ceil(40/6)=7, typical 40/4=10, high 40 (1/char),
    i.e. $0.000035 / $0.00005 / $0.0002 at $5/M.
  One source image → 765 / 3050 / 6100 input tokens → $0.00612 / $0.0244 / $0.0488 at $8/M.
"""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest

from runner.pricing import (
    Estimate,
    PriceBook,
    PriceNotFound,
    estimate_job,
    worst_case,
)
from runner.routes import Catalog, Route, load_catalog
from tests.pricing.lines import line

PROMPT = "Two red foxes asleep in fresh snow, dawn"

#: A manifest as the token routes accept it (one dict per JSONL line).
JOBS: list[dict[str, Any]] = [
    {"id": "hi-square", "prompt": PROMPT, "quality": "high", "size": "1024x1024"},
    {"id": "auto-auto", "prompt": PROMPT},
    {
        "id": "edit-wide",
        "prompt": PROMPT,
        "images": ["fox.png"],
        "quality": "medium",
        "size": "1536x1024",
        "n": 2,
    },
    {"id": "big-low", "prompt": PROMPT, "quality": "low", "size": "2048x2048"},
]

#: Hand results for JOBS at official prices (openai, laozhang-official): (low, typical, high).
OFFICIAL = {
    # 0.211 + text 0.000035 / 0.00005 / 0.0002
    "hi-square": (0.211035, 0.21105, 0.2112),
    # low: low quality at the cheapest popular size, 1024x1536 or 1536x1024 = 0.005 (2048x1152
    #   is 0.005 × 2359296/1572864 = 0.0075; 2048x2048 is 0.006 × 4 = 0.024) → 0.005 + 0.000035
    # typical: medium 1024x1024 0.053 + 0.00005
    # high: high quality at the dearest popular size, 3840x2160 (or 2160x3840) =
    #   0.165 × 8294400/1572864 = 0.165 × 5.2734375 = 0.8701171875 (2048x2048 is 0.844)
    #   + 0.0002 = 0.8703171875 → 0.870317
    "auto-auto": (0.005035, 0.05305, 0.870317),
    # 2 × 0.041 = 0.082 output, + text + one source image:
    # 0.082 + 0.000035 + 0.00612 / 0.082 + 0.00005 + 0.0244 / 0.082 + 0.0002 + 0.0488
    "edit-wide": (0.088155, 0.10645, 0.131),
    # 2048x2048 is square, 4 × the pixels: 0.006 × 4 = 0.024, + text
    "big-low": (0.024035, 0.02405, 0.0242),
}


def _triple(estimate: Estimate) -> tuple[float, float, float]:
    return estimate.low, estimate.typical, estimate.high


def test_prompt_has_forty_characters() -> None:
    """The hand arithmetic below assumes it."""
    assert len(PROMPT) == 40


@pytest.mark.parametrize("route_name", ["openai", "laozhang-official"])
@pytest.mark.parametrize("job", JOBS, ids=lambda j: j["id"])
def test_official_price_routes(
    book: PriceBook, catalog: Catalog, route_name: str, job: dict[str, Any]
) -> None:
    """openai and laozhang Sora2Official both bill official token prices."""
    estimate = estimate_job(book, catalog.get(route_name), line(job))
    assert _triple(estimate) == pytest.approx(OFFICIAL[job["id"]], abs=1e-9)
    assert estimate.as_of == date(2026, 11, 21)
    assert "3P" in estimate.source  # gpt-image-2's per-token prices are third-party figures
    assert estimate.notes == ()


@pytest.mark.parametrize("job", JOBS, ids=lambda j: j["id"])
def test_enterprise_is_official_plus_twenty_percent(
    book: PriceBook, catalog: Catalog, job: dict[str, Any]
) -> None:
    """GPTImage2 Enterprise bills official prices × 1.2."""
    estimate = estimate_job(book, catalog.get("laozhang-enterprise"), line(job))
    expected = {
        "hi-square": (0.253242, 0.25326, 0.25344),  # 0.211035 × 1.2, 0.21105 × 1.2, 0.2112 × 1.2
        "auto-auto": (0.006042, 0.06366, 1.044381),  # 0.8703171875 × 1.2 = 1.04438062 → 1.044381
        "edit-wide": (0.105786, 0.12774, 0.1572),  # 0.088155 × 1.2, 0.10645 × 1.2, 0.131 × 1.2
        "big-low": (0.028842, 0.02886, 0.02904),  # 0.024035 × 1.2, 0.02405 × 1.2, 0.0242 × 1.2
    }[job["id"]]
    assert _triple(estimate) == pytest.approx(expected, abs=1e-9)
    assert "× 1.2" in estimate.basis


def test_responses_adds_mainline_tokens(book: PriceBook, catalog: Catalog) -> None:
    """openai-responses: image tokens plus gpt-5.5 (placeholder $5/M in, $30/M out) tokens."""
    route = catalog.get("openai-responses")
    estimate = estimate_job(book, route, line(JOBS[0]))
    # image part as on openai: 0.211035 / 0.21105 / 0.2112
    # mainline in  = prompt tokens + overhead 300/500/1000 = 307 / 510 / 1040 tokens × $5/M
    #              = 0.001535 / 0.00255 / 0.0052
    # mainline out = prompt tokens + allowance 100/300/1500 = 107 / 310 / 1540 tokens × $30/M
    #              = 0.00321 / 0.0093 / 0.0462
    # low 0.211035 + 0.001535 + 0.00321 = 0.21578; typical 0.21105 + 0.00255 + 0.0093 = 0.2229;
    # high 0.2112 + 0.0052 + 0.0462 = 0.2626
    assert _triple(estimate) == pytest.approx((0.21578, 0.2229, 0.2626), abs=1e-9)
    assert "mainline gpt-5.5" in estimate.basis
    assert "unverified placeholder" in estimate.source
    assert any("gpt-5.5" in note and "placeholder" in note for note in estimate.notes)


def test_responses_edit_counts_images_for_both_models(book: PriceBook, catalog: Catalog) -> None:
    """The source image is read by the image model and by the mainline model."""
    job = {"prompt": PROMPT, "images": ["fox.png"], "quality": "medium", "size": "1536x1024"}
    estimate = estimate_job(book, catalog.get("openai-responses"), line(job))
    # image model: 0.041 + text + image in = 0.047155 / 0.06545 / 0.09
    # mainline in: 7+765+300 = 1072 / 10+3050+500 = 3560 / 40+6100+1000 = 7140 tokens × $5/M
    #            = 0.00536 / 0.0178 / 0.0357
    # mainline out: 107 / 310 / 1540 × $30/M = 0.00321 / 0.0093 / 0.0462
    # low 0.047155 + 0.00536 + 0.00321 = 0.055725; typical 0.06545 + 0.0178 + 0.0093 = 0.09255;
    # high 0.09 + 0.0357 + 0.0462 = 0.1719
    assert _triple(estimate) == pytest.approx((0.055725, 0.09255, 0.1719), abs=1e-9)


@pytest.mark.parametrize(
    ("route_name", "job"),
    [
        ("laozhang", {"prompt": PROMPT}),
        ("laozhang", {"prompt": PROMPT, "images": ["fox.png"]}),
        ("laozhang-vip", {"prompt": PROMPT, "size": "3840x2160"}),
        ("laozhang-vip", {"prompt": PROMPT, "size": "1280x1280", "images": ["a.png", "b.png"]}),
        ("laozhang-chat", {"prompt": PROMPT}),
        ("laozhang-chat", {"prompt": PROMPT, "images": ["https://example.com/fox.png"]}),
    ],
)
def test_per_call_routes_are_exact(
    book: PriceBook, catalog: Catalog, route_name: str, job: dict[str, Any]
) -> None:
    """Default-group laozhang routes cost $0.03 per call whatever the size or inputs."""
    estimate = estimate_job(book, catalog.get(route_name), line(job))
    assert _triple(estimate) == (0.03, 0.03, 0.03)
    assert estimate.basis == "$0.03 per call × n=1"


def test_per_call_multiplies_by_n(book: PriceBook, catalog: Catalog) -> None:
    """Gateways multiply a per-call price by the request's n: 3 × 0.03."""
    estimate = estimate_job(book, catalog.get("laozhang"), line({"prompt": PROMPT, "n": 3}))
    assert _triple(estimate) == pytest.approx((0.09, 0.09, 0.09))


def test_manifest_totals_per_route(book: PriceBook, catalog: Catalog) -> None:
    """What ``imagerun estimate`` adds up for the whole manifest."""
    openai = sum(estimate_job(book, catalog.get("openai"), line(job)).typical for job in JOBS)
    # 0.21105 + 0.05305 + 0.10645 + 0.02405 = 0.3946
    assert openai == pytest.approx(0.3946, abs=1e-9)
    gateway_jobs = [{"prompt": job["prompt"]} for job in JOBS]
    laozhang = sum(
        estimate_job(book, catalog.get("laozhang"), line(j)).typical for j in gateway_jobs
    )
    assert laozhang == pytest.approx(4 * 0.03)


def test_auto_quality_on_legacy_model_ranges_over_legacy_sizes(
    book: PriceBook, catalog: Catalog
) -> None:
    """gpt-image-1.5 has only the three legacy sizes; its table brackets auto/auto."""
    estimate = estimate_job(
        book, catalog.get("openai"), line({"prompt": "", "model": "gpt-image-1.5"})
    )
    # low: low quality, cheapest legacy size 1024x1024 = 0.009; typical medium 1024x1024 = 0.034;
    # high: high quality, dearest legacy size 1024x1536 / 1536x1024 = 0.2 (empty prompt: no text)
    assert _triple(estimate) == pytest.approx((0.009, 0.034, 0.2), abs=1e-9)


def test_unpublished_quality_is_flagged(book: PriceBook, catalog: Catalog) -> None:
    """xhigh (gpt-image-2.5) has no figures: priced as high, and the estimate says so."""
    job = {"prompt": "", "model": "gpt-image-2.5-sunburst", "quality": "xhigh", "size": "1024x1024"}
    estimate = estimate_job(book, catalog.get("openai"), line(job))
    # no per-image table for 2.5: gpt-image-2 token counts × $30/M = 7033 × 30 / 1e6 = 0.21099
    assert _triple(estimate) == pytest.approx((0.21099, 0.21099, 0.21099), abs=1e-9)
    assert any("xhigh" in note for note in estimate.notes)


@pytest.mark.parametrize(
    "route_name",
    [
        "openai",
        "openai-responses",
        "laozhang",
        "laozhang-vip",
        "laozhang-chat",
        "laozhang-official",
        "laozhang-enterprise",
    ],
)
def test_worst_case_is_the_high_end(book: PriceBook, catalog: Catalog, route_name: str) -> None:
    """Budget caps reserve the dearest plausible attempt, never less than the typical one."""
    route: Route = catalog.get(route_name)
    jobs: list[dict[str, Any]] = [
        {"prompt": PROMPT},
        {"prompt": PROMPT, "images": ["a.png"]},
        {"prompt": PROMPT, "size": "1024x1536", "quality": "medium", "n": 3, "mask": "m.png"},
    ]
    for job in jobs:
        estimate = estimate_job(book, route, line(job))
        assert estimate.low <= estimate.typical <= estimate.high
        assert worst_case(book, route, line(job)) == estimate.high


def test_worst_case_default_job_on_openai(book: PriceBook, catalog: Catalog) -> None:
    """No size, no quality: the worst case is high quality at 3840x2160 plus prompt tokens."""
    assert worst_case(book, catalog.get("openai"), line({"prompt": PROMPT})) == 0.870317


def test_responses_route_needs_a_mainline_model(book: PriceBook) -> None:
    """Its mainline tokens are billed too, so an estimate without them would be short."""
    catalog = load_catalog({"openai-responses": {"mainline_model": ""}}, environ={})
    with pytest.raises(PriceNotFound, match="mainline_model"):
        estimate_job(book, catalog.get("openai-responses"), line({"prompt": PROMPT}))
