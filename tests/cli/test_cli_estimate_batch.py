"""``imagerun estimate`` on OpenAI's token routes: the synchronous and the Batch API cost side by
side, per model and in total, in the table and in ``--json``.

The expected figures are computed here from the packaged price book's own numbers (per-image
table, text-input price, the estimate's characters-per-token rule), not from the engine.
"""

from __future__ import annotations

import json
import math
import tomllib
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

from .conftest import Invoke

#: Lines with quality and size given, so every level prices the same image.
LINES: list[dict[str, Any]] = [
    {"id": "square-high", "prompt": "a lighthouse at dusk", "quality": "high", "size": "1024x1024"},
    {"id": "tall-low", "prompt": "a paper kite", "quality": "low", "size": "1024x1536", "n": 2},
    {
        "id": "wide-medium-15",
        "prompt": "a harbour, seen from a hill, in the rain",
        "quality": "medium",
        "size": "1536x1024",
        "model": "gpt-image-1.5",
    },
]
#: Column of each size in the price book's per-image rows.
SIZE_COLUMN = {"1024x1024": 0, "1024x1536": 1, "1536x1024": 2}
LEVELS = ("low", "typical", "high")


def book() -> dict[str, Any]:
    text = resources.files("runner.pricing").joinpath("prices.toml").read_text("utf-8")
    return tomllib.loads(text)


def hand_cost(line: dict[str, Any], level: int) -> float:
    """One line's synchronous cost at ``level`` (0 low, 1 typical, 2 high), from the book."""
    data = book()
    model = line.get("model", "gpt-image-2")
    tokens = data["tokens"][model]
    per_image = data["per_image"][tokens["per_image"]][line["quality"]][SIZE_COLUMN[line["size"]]]
    chars_per_token = data["estimate"]["chars_per_token"][level]
    text_tokens = math.ceil(len(line["prompt"]) / chars_per_token)
    return line.get("n", 1) * per_image + text_tokens * tokens["text_in"] / 1_000_000


def hand_totals(lines: list[dict[str, Any]], factor: float = 1.0) -> dict[str, float]:
    return {
        name: sum(hand_cost(line, i) for line in lines) * factor for i, name in enumerate(LEVELS)
    }


def write_manifest(tmp_path: Path, lines: list[dict[str, Any]] = LINES) -> Path:
    path = tmp_path / "harbour.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines), "utf-8")
    return path


def estimate_json(cli: Invoke, manifest: Path, route: str) -> dict[str, Any]:
    result = cli("estimate", str(manifest), "--route", route, "--json")
    assert result.exit_code == 0, result.output
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def assert_levels(got: dict[str, float], want: dict[str, float]) -> None:
    for name in LEVELS:
        assert got[name] == pytest.approx(want[name], abs=2e-6), name


@pytest.mark.parametrize(
    ("route", "sync_route", "batch_route"),
    [
        ("openai", "openai", "openai-batch"),
        ("openai-batch", "openai", "openai-batch"),
        ("sandbox-openai", "sandbox-openai", "sandbox-openai-batch"),
        ("sandbox-openai-batch", "sandbox-openai", "sandbox-openai-batch"),
    ],
)
def test_json_carries_the_synchronous_and_the_batch_cost_per_model(
    cli: Invoke, tmp_path: Path, route: str, sync_route: str, batch_route: str
) -> None:
    data = estimate_json(cli, write_manifest(tmp_path), route)

    pair = data["batch_comparison"]
    assert (pair["synchronous_route"], pair["batch_route"]) == (sync_route, batch_route)
    assert pair["batch_discount"] == 0.5
    assert_levels(pair["synchronous"], hand_totals(LINES))
    assert_levels(pair["batch"], hand_totals(LINES, 0.5))
    models = {m["model"]: m for m in pair["per_model"]}
    assert {name: m["jobs"] for name, m in models.items()} == {"gpt-image-2": 2, "gpt-image-1.5": 1}
    two, one_five = LINES[:2], LINES[2:]
    assert_levels(models["gpt-image-2"]["synchronous"], hand_totals(two))
    assert_levels(models["gpt-image-2"]["batch"], hand_totals(two, 0.5))
    assert_levels(models["gpt-image-1.5"]["synchronous"], hand_totals(one_five))
    assert_levels(models["gpt-image-1.5"]["batch"], hand_totals(one_five, 0.5))
    # The route asked for is the headline total.
    asked = pair["batch"] if route.endswith("-batch") else pair["synchronous"]
    assert data["total"] == asked


def test_responses_route_is_set_beside_the_batch_route_without_mainline_tokens(
    cli: Invoke, tmp_path: Path
) -> None:
    """The Batch API route sends image lines: its cost has no mainline model in it."""
    single = [{k: v for k, v in line.items() if k != "n"} for line in LINES]
    data = estimate_json(cli, write_manifest(tmp_path, single), "openai-responses")

    pair = data["batch_comparison"]
    assert pair["batch_route"] == "openai-batch"
    assert_levels(pair["batch"], hand_totals(single, 0.5))
    # The Responses route pays the mainline model on top of the images.
    assert pair["synchronous"]["typical"] > hand_totals(single)["typical"]
    assert pair["synchronous"] == data["total"]


def test_per_call_gateway_has_no_batch_comparison(cli: Invoke, tmp_path: Path) -> None:
    path = tmp_path / "plain.jsonl"
    path.write_text('{"id": "a", "prompt": "a kite"}\n', "utf-8")

    data = estimate_json(cli, path, "laozhang")

    assert data["batch_comparison"] is None
    assert "Batch API" not in cli("estimate", str(path), "--route", "laozhang").stdout


def test_table_shows_both_costs_per_model_and_the_saving(cli: Invoke, tmp_path: Path) -> None:
    result = cli("estimate", str(write_manifest(tmp_path)), "--route", "openai")

    assert result.exit_code == 0, result.output
    sync, batch = hand_totals(LINES)["typical"], hand_totals(LINES, 0.5)["typical"]
    out = result.stdout
    assert "Synchronous (openai) vs Batch API (openai-batch)" in out
    rows = {line.split("│")[1].strip(): line for line in out.splitlines() if "│" in line}
    assert {"gpt-image-2", "gpt-image-1.5", "all models"} <= set(rows)
    assert f"${sync:.4f}" in rows["all models"]
    assert f"${batch:.4f}" in rows["all models"]
    assert f"typical ${batch:.4f} instead of ${sync:.4f}" in out
