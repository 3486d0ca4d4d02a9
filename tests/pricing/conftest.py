"""Fixtures for the pricing tests: the packaged price book and route catalog, loaded once."""

from __future__ import annotations

import pytest

from runner.pricing import PriceBook, load_price_book
from runner.routes import Catalog, load_catalog


@pytest.fixture(scope="package")
def book() -> PriceBook:
    """The packaged price book, without ``imagerun.toml`` overrides."""
    return load_price_book()


@pytest.fixture(scope="package")
def catalog() -> Catalog:
    """The built-in routes, with no environment (no keys, no base-URL overrides)."""
    return load_catalog(environ={})
