"""Prices as dated data and the cost engine.

- :class:`PricedJob`: what the price engine reads of a job (from a stored job or a manifest
  line);
- :func:`load_price_book` → :class:`PriceBook` (``prices.toml`` + ``imagerun.toml`` overrides);
- :func:`estimate_job` / :func:`worst_case`: what a job will cost, before it runs;
- :func:`attempt_cost` / :func:`reprice`: what an attempt cost, and whether it was charged;
- :func:`token_cost`: USD for reported token usage;
- :func:`output_image_tokens`: expected output tokens of one image (the sandbox's ``usage``).
"""

from runner.pricing.attempts import CostResult, attempt_cost, reprice, token_cost
from runner.pricing.book import (
    PriceBook,
    PriceNotFound,
    TokenPrices,
    default_price_book,
    load_price_book,
    output_image_tokens,
)
from runner.pricing.estimate import Estimate, estimate_job, worst_case
from runner.pricing.priced_job import PricedJob

__all__ = [
    "CostResult",
    "Estimate",
    "PriceBook",
    "PriceNotFound",
    "PricedJob",
    "TokenPrices",
    "attempt_cost",
    "default_price_book",
    "estimate_job",
    "load_price_book",
    "output_image_tokens",
    "reprice",
    "token_cost",
    "worst_case",
]
