"""Cost estimates for jobs that have not run: a low / typical / high range per job.

Per-call routes are exact: ``usd_per_call × n``. Token routes are priced from the size and
quality a job asks for, using the published per-image prices (output tokens), plus input
tokens and, on the Responses shape, the mainline model's tokens. What a job does not pin down
widens the range:

- quality given → that quality throughout; absent/``auto`` → low / medium / high;
- size given → that size; absent/``auto`` → 1024x1024 for *typical*, while *low* and *high*
  take the cheapest and dearest of the sizes ``auto`` may resolve to (``[estimate.size_sets]``);
- prompt tokens ≈ characters / 6, 4, 1 (low, typical, high; 1 char per token covers CJK);
- each source image and the mask ≈ 765 / 3050 / 6100 input tokens — an approximation: OpenAI
  publishes no input-token counts for gpt-image-2, which always reads images at high fidelity;
- Responses adds mainline tokens: prompt + images + a fixed overhead in, prompt + a
  reasoning/tool-call allowance out (``[estimate]`` in ``prices.toml``).

Everything token-priced is then multiplied by the route's ``price_multiplier``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import date

from runner.models import Shape
from runner.pricing.book import EstimateRules, PriceBook, PriceNotFound, TokenPrices
from runner.pricing.priced_job import PricedJob
from runner.pricing.tables import TABLE_QUALITIES, table_quality
from runner.routes.catalog import Route
from runner.routes.sizes import Size

LOW, TYPICAL, HIGH = 0, 1, 2
_PICK: tuple[Callable[[Iterable[float]], float], ...] = (min, min, max)


@dataclass(frozen=True, slots=True, kw_only=True)
class Estimate:
    """The expected cost of one job, in USD.

    Attributes:
        low: the cheapest plausible outcome.
        typical: what the job most likely costs.
        high: the dearest plausible outcome (what :func:`worst_case` returns).
        basis: how the figures were reached (quality, size, token assumptions).
        as_of: date of the price book.
        source: where the prices come from, with their quality ("off.", "3P", placeholder …).
        notes: warnings the user should see, e.g. an unverified placeholder price.
    """

    low: float
    typical: float
    high: float
    basis: str
    as_of: date
    source: str
    notes: tuple[str, ...] = ()


def estimate_job(book: PriceBook, route: Route, job: PricedJob) -> Estimate:
    """Estimate what one job costs on ``route`` (see the module docstring for the rules).

    Args:
        book: the price book.
        route: the route the job will run on.
        job: what the job asks for.

    Raises:
        PriceNotFound: a token route's model (or mainline model) has no prices.
    """
    if route.billing == "call":
        usd = round(route.usd_per_call * job.n, 6)
        return Estimate(
            low=usd,
            typical=usd,
            high=usd,
            basis=f"${route.usd_per_call:g} per call × n={job.n}",
            as_of=book.as_of,
            source=f"route {route.name}: usd_per_call",
        )
    book.check_table(route.price_table)
    model = job.model_on(route)
    prices = book.prices(model)
    mainline = mainline_prices(book, route)
    qualities = _level_qualities(job.quality)
    sizes = _level_sizes(book, job, model)
    values = tuple(
        _level_usd(book, route, job, level, qualities[level], sizes[level], job.n)
        for level in (LOW, TYPICAL, HIGH)
    )
    return Estimate(
        low=values[LOW],
        typical=values[TYPICAL],
        high=values[HIGH],
        basis=_basis(book, route, job, model, mainline),
        as_of=book.as_of,
        source="; ".join(p.describe() for p in (prices, mainline) if p is not None),
        notes=_notes(job, prices, mainline),
    )


def worst_case(book: PriceBook, route: Route, job: PricedJob) -> float:
    """The most one attempt of this job could cost, for budget caps.

    One attempt produces all ``n`` images, and a charged failure costs no more than a
    success, so this is the estimate's ``high`` (computed alone: it is asked once per attempt,
    and the other levels and the wording are not needed for it).
    """
    if route.billing == "call":
        return round(route.usd_per_call * job.n, 6)
    book.check_table(route.price_table)
    quality = _level_qualities(job.quality)[HIGH]
    sizes = _level_sizes(book, job, job.model_on(route))[HIGH]
    return _level_usd(book, route, job, HIGH, quality, sizes, job.n)


def typical_attempt_usd(
    book: PriceBook, route: Route, job: PricedJob, images: int
) -> tuple[float, str]:
    """Typical cost of one token-route attempt that reported no usage, and its basis.

    Args:
        images: images the attempt produced; 0 (a failure) means the ``n`` requested.
    """
    book.check_table(route.price_table)
    count = images or job.n
    quality, _ = table_quality(job.quality)
    size = job.size or book.rules.default_size
    usd = _level_usd(book, route, job, TYPICAL, quality, (size,), count)
    basis = f"no usage: typical {job.model_on(route)} {quality} {size} × {count} image(s)"
    if job.prompt_chars or job.input_images:
        basis += " + estimated input tokens"
    if mainline_prices(book, route) is not None:
        basis += " + mainline tokens"
    return usd, basis


def mainline_prices(book: PriceBook, route: Route) -> TokenPrices | None:
    """Prices of the route's mainline model, on the Responses shape only.

    Raises:
        PriceNotFound: a Responses route names no mainline model (its tokens are billed too).
    """
    if route.shape is not Shape.RESPONSES:
        return None
    if not route.mainline_model:
        raise PriceNotFound(f"route {route.name!r} speaks responses but sets no mainline_model")
    return book.prices(route.mainline_model)


def _level_qualities(quality: str | None) -> tuple[str, str, str]:
    if quality is None or quality == "auto":
        return TABLE_QUALITIES
    row, _ = table_quality(quality)
    return row, row, row


def _level_sizes(book: PriceBook, job: PricedJob, model: str) -> tuple[tuple[Size, ...], ...]:
    if job.size is not None:
        return (job.size,), (job.size,), (job.size,)
    auto = book.auto_sizes(model)
    return auto, (book.rules.default_size,), auto


def _level_usd(
    book: PriceBook,
    route: Route,
    job: PricedJob,
    level: int,
    quality: str,
    sizes: tuple[Size, ...],
    images: int,
) -> float:
    """Cost of one scenario: ``images`` outputs plus the request's input and mainline tokens."""
    rules = book.rules
    model = job.model_on(route)
    per_image = _PICK[level](book.per_image_usd(model, s, quality) for s in sizes)
    text = _text_tokens(job.prompt_chars, rules.chars_per_token[level])
    pictures = job.input_images * rules.input_image_tokens[level]
    prices = book.prices(model)
    usd = images * per_image + prices.usd("text_in", text) + prices.usd("image_in", pictures)
    mainline = mainline_prices(book, route)
    if mainline is not None:
        usd += _mainline_usd(mainline, rules, level, text, pictures)
    return round(usd * route.price_factor, 6)


def _mainline_usd(
    mainline: TokenPrices, rules: EstimateRules, level: int, text: int, pictures: float
) -> float:
    # The mainline model reads the prompt and images plus its instructions and the tool
    # definition, and writes the tool call: a revised prompt about as long as the prompt,
    # plus reasoning (the allowance).
    tokens_in = text + pictures + rules.mainline_input_overhead[level]
    tokens_out = text + rules.mainline_output_tokens[level]
    return mainline.usd("text_in", tokens_in) + mainline.usd("text_out", tokens_out)


def _text_tokens(chars: int, chars_per_token: float) -> int:
    return math.ceil(chars / chars_per_token) if chars else 0


def _basis(
    book: PriceBook, route: Route, job: PricedJob, model: str, mainline: TokenPrices | None
) -> str:
    rules = book.rules
    if job.quality is None or job.quality == "auto":
        quality = "quality auto → low/medium/high"
    else:
        quality = f"quality {job.quality}"
    if job.size is not None:
        size = f"size {job.size}"
    else:
        auto = ", ".join(str(s) for s in book.auto_sizes(model))
        size = f"size auto → {rules.default_size} typical, range over {auto}"
    parts = [f"{model} per-image prices", quality, size, f"n={job.n}"]
    if job.prompt_chars:
        low, typ, high = (_text_tokens(job.prompt_chars, c) for c in rules.chars_per_token)
        parts.append(f"prompt {job.prompt_chars} chars ≈ {low}/{typ}/{high} tokens")
    if job.input_images:
        low_i, typ_i, high_i = (f"{t:g}" for t in rules.input_image_tokens)
        parts.append(f"{job.input_images} input image(s) ≈ {low_i}/{typ_i}/{high_i} tokens each")
    if mainline is not None:
        parts.append(f"+ mainline {mainline.model} tokens")
    if route.price_multiplier != 1.0:
        parts.append(f"× {route.price_multiplier:g}")
    if route.batch_discount != 1.0:
        parts.append(f"× {route.batch_discount:g} (batch)")
    return "; ".join(parts)


def _notes(job: PricedJob, prices: TokenPrices, mainline: TokenPrices | None) -> tuple[str, ...]:
    notes: list[str] = []
    _, quality_note = table_quality(job.quality)
    if quality_note:
        notes.append(quality_note)
    for row in (prices, mainline):
        if row is not None and row.placeholder:
            notes.append(
                f"{row.model} prices are an unverified placeholder; "
                f'set real ones in imagerun.toml [prices."{row.model}"]'
            )
    return tuple(notes)
