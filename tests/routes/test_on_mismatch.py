"""``on_mismatch``: what an image of another size or format than asked means, per route."""

from __future__ import annotations

import pytest

from runner.errors import ConfigError
from runner.routes import load_catalog


def test_every_route_keeps_a_mismatched_image_by_default() -> None:
    catalog = load_catalog()
    assert {route.on_mismatch for route in catalog.routes.values()} == {"keep"}
    assert catalog.get("sandbox").public_dict()["on_mismatch"] == "keep"


def test_a_route_may_fail_the_job_instead() -> None:
    catalog = load_catalog({"sandbox": {"on_mismatch": "fail"}})
    assert catalog.get("sandbox").on_mismatch == "fail"
    assert catalog.get("openai").on_mismatch == "keep"


def test_any_other_value_is_a_config_error_naming_the_route() -> None:
    with pytest.raises(ConfigError, match=r"route 'sandbox': on_mismatch must be"):
        load_catalog({"sandbox": {"on_mismatch": "retry"}})
