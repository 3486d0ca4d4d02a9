"""The comparison plan: what each route cannot take, said before anything is sent, and fitted."""

from __future__ import annotations

import json
from pathlib import Path

from runner.compare.plan import (
    FitChoice,
    fit_manifest,
    nearest_quality,
    nearest_size,
    plan_comparison,
)
from runner.manifest import check_manifest
from runner.routes import load_catalog

from .conftest import write_manifest

CATALOG = load_catalog(environ={})


def _routes(*names: str) -> list:
    return [CATALOG.get(n) for n in names]


def test_every_route_gets_its_gaps_and_no_choice_means_not_ready(tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path / "m.jsonl", 6)
    plan = plan_comparison(manifest, _routes("sandbox-openai", "sandbox-laozhang"), CATALOG, {})
    openai, laozhang = plan.fits
    assert openai.gaps == []
    assert openai.ready
    assert [g.field for g in laozhang.gaps] == ["size"]
    assert laozhang.gaps[0].lines == 6
    assert laozhang.gaps[0].first_line == 1
    assert "does not accept size" in laozhang.gaps[0].message
    assert not plan.ready
    assert plan.jobs == 6
    chosen = plan_comparison(
        manifest,
        _routes("sandbox-openai", "sandbox-laozhang"),
        CATALOG,
        {"sandbox-laozhang": FitChoice.DROP},
    )
    assert chosen.ready
    assert chosen.to_json()["routes"][1]["choice"] == "drop"


def test_a_route_without_edits_blocks_whatever_the_choice(tmp_path: Path) -> None:
    catalog = load_catalog({"sandbox-laozhang": {"params": ["response_format"]}}, environ={})
    manifest = write_manifest(tmp_path / "m.jsonl", 4, size=False)
    plan = plan_comparison(
        manifest,
        [catalog.get("sandbox-openai"), catalog.get("sandbox-laozhang")],
        catalog,
        {"sandbox-laozhang": FitChoice.ADAPT},
    )
    assert not plan.ready
    assert plan.fits[1].blocking
    assert all(p.field == "images" for p in plan.fits[1].blocking)


def test_drop_and_adapt_write_a_manifest_the_route_takes(tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path / "in" / "m.jsonl", 4)
    for route_name, choice, size in (
        ("sandbox-laozhang", FitChoice.ADAPT, None),
        ("sandbox-laozhang-vip", FitChoice.ADAPT, "2048x1360"),
        ("sandbox-laozhang-vip", FitChoice.DROP, None),
    ):
        route = CATALOG.get(route_name)
        plan = plan_comparison(
            manifest, [route, CATALOG.get("sandbox")], CATALOG, {route_name: choice}
        )
        target = tmp_path / "out" / f"{route_name}-{choice}.jsonl"
        fit_manifest(manifest, route, CATALOG, plan.fits[0], target)
        lines = [json.loads(t) for t in target.read_text("utf-8").splitlines()]
        assert [line.get("size") for line in lines] == [size] * 4
        # The fitted copy lives elsewhere yet reads the same source image.
        assert Path(lines[1]["images"][0]).is_absolute()
        report = check_manifest(target, route, CATALOG)
        assert report.problems == []
        assert (report.jobs, report.edits) == (4, 2)


def test_nearest_size_and_quality() -> None:
    assert nearest_size("vip", "1536x1024") == "2048x1360"
    assert nearest_size("legacy", "1000x1500") == "1024x1536"
    assert nearest_size("none", "1024x1024") is None
    assert nearest_quality(("low", "auto"), "high") == "auto"
    assert nearest_quality(("low", "high"), "xhigh") == "high"
    assert nearest_quality((), "high") is None
