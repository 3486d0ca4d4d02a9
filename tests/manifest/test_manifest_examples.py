"""Every example manifest in jobs/examples/ is valid on the routes it is meant for."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from runner.manifest import check_manifest
from runner.routes import Catalog

EXAMPLES = Path(__file__).resolve().parents[2] / "jobs" / "examples"
_OFFICIAL = ["openai", "laozhang-official", "laozhang-enterprise"]

#: Manifest → routes it is meant for (jobs/examples/README.md says the same).
MEANT_FOR: dict[str, list[str]] = {
    "products.jsonl": [*_OFFICIAL, "sandbox", *(f"sandbox-{r}" for r in _OFFICIAL)],
    "edits.jsonl": [*_OFFICIAL, "sandbox", *(f"sandbox-{r}" for r in _OFFICIAL)],
    "ad-variants.csv": [
        *_OFFICIAL,
        "laozhang",
        "laozhang-vip",
        "laozhang-chat",
        "openai-responses",
        "sandbox",
        "sandbox-laozhang",
        "sandbox-laozhang-chat",
    ],
    "laozhang-vip.jsonl": ["laozhang-vip", "sandbox-laozhang-vip"],
}
CASES = [(name, route) for name, routes in MEANT_FOR.items() for route in routes]


def test_every_example_manifest_is_covered() -> None:
    shipped = {p.name for p in EXAMPLES.iterdir() if p.suffix in (".jsonl", ".csv")}
    assert shipped == set(MEANT_FOR)


@pytest.mark.parametrize(("name", "route"), CASES)
def test_example_is_valid_on_its_routes(name: str, route: str, catalog: Catalog) -> None:
    report = check_manifest(EXAMPLES / name, catalog.get(route), catalog)
    assert [str(p) for p in report.problems] == []
    assert 3 <= report.jobs <= 8


def test_example_sources_are_small_real_images() -> None:
    sources = sorted((EXAMPLES / "sources").iterdir())
    assert {p.name for p in sources} >= {"mug.png", "mug-mask.png", "sneaker.jpg"}
    for path in sources:
        assert path.stat().st_size <= 100 * 1024
        with Image.open(path) as image:
            image.verify()
    with Image.open(EXAMPLES / "sources" / "mug-mask.png") as mask:
        assert "A" in mask.getbands()
        assert mask.getextrema()[3][0] == 0  # some fully transparent pixels: the edit area
