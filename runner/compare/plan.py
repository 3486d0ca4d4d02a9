"""Before a comparison sends anything: what each route cannot take, and how that is fitted.

Every route is checked against the manifest first. A field a route refuses (``size`` on a
route without sizes, a ``quality`` it does not know, a ``mask``…) is a *gap*; the user
chooses per route to ``drop`` the field or ``adapt`` it (a size becomes the route's nearest
accepted size, a quality ``auto`` or its nearest kept value; any other field is dropped). The
fitted manifest is written beside the comparison, so what each route was really sent stays on
record. A problem no choice can fix (a bad prompt, an edit on a route without edits) stops the
comparison before it starts.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from runner.compare.estimates import RouteEstimate
from runner.errors import Problem
from runner.manifest import check_manifest
from runner.manifest.readers import read_records
from runner.models import OPTION_FIELDS
from runner.routes.catalog import Catalog, Route
from runner.routes.sizes import (
    LEGACY_SIZES,
    VIP_SIZES,
    Size,
    SizeRuleName,
    parse_size,
    size_problem,
)

#: Fields a route may refuse that a comparison can drop or adapt.
FITTABLE = frozenset({*OPTION_FIELDS, "mask"})


class FitChoice(StrEnum):
    """What to do with the fields a route cannot take."""

    DROP = "drop"
    ADAPT = "adapt"


@dataclass(frozen=True, slots=True, kw_only=True)
class Gap:
    """A field a route refuses: on how many lines, the first of them and why."""

    field: str
    lines: int
    first_line: int
    message: str

    def to_json(self) -> dict[str, Any]:
        return {
            "field": self.field,
            "lines": self.lines,
            "first_line": self.first_line,
            "message": self.message,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class RouteFit:
    """One route's side of a comparison: its gaps, the choice made, what cannot be fixed."""

    route: str
    gaps: list[Gap]
    choice: FitChoice | None
    #: Problems no choice fixes (they stop the comparison).
    blocking: list[Problem] = field(default_factory=list)

    @property
    def ready(self) -> bool:
        """Whether this route can be sent the manifest (fitted as chosen)."""
        return not self.blocking and (not self.gaps or self.choice is not None)

    def to_json(self) -> dict[str, Any]:
        return {
            "route": self.route,
            "gaps": [g.to_json() for g in self.gaps],
            "choice": self.choice.value if self.choice else None,
            "blocking": [str(p) for p in self.blocking],
            "ready": self.ready,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class ComparisonPlan:
    """Every route's fit, decided before anything is sent, and (once every route fits) what
    each route will cost and already holds."""

    manifest: Path
    jobs: int
    fits: list[RouteFit]
    estimates: list[RouteEstimate] = field(default_factory=list)

    @property
    def ready(self) -> bool:
        return all(f.ready for f in self.fits)

    def to_json(self) -> dict[str, Any]:
        return {
            "manifest": str(self.manifest),
            "jobs": self.jobs,
            "ready": self.ready,
            "routes": [f.to_json() for f in self.fits],
            "estimates": [e.to_json() for e in self.estimates],
        }


def plan_comparison(
    manifest: Path,
    routes: Sequence[Route],
    catalog: Catalog,
    choices: Mapping[str, FitChoice],
) -> ComparisonPlan:
    """Check ``manifest`` against every route and note each route's gaps and choice.

    Blocking; run it in a worker thread.

    Args:
        manifest: the manifest every route is sent.
        routes: the routes compared.
        catalog: the route catalog (for size and quality rules).
        choices: by route name, what to do with its gaps (no entry: nothing chosen).
    """
    fits = []
    jobs = 0
    for route in routes:
        report = check_manifest(manifest, route, catalog)
        jobs = max(jobs, report.jobs)
        gaps: dict[str, Gap] = {}
        blocking = []
        for problem in report.problems:
            if problem.field not in FITTABLE:
                blocking.append(problem)
                continue
            seen = gaps.get(problem.field)
            gaps[problem.field] = Gap(
                field=problem.field,
                lines=(seen.lines if seen else 0) + 1,
                first_line=seen.first_line if seen else problem.line,
                message=seen.message if seen else problem.message,
            )
        fits.append(
            RouteFit(
                route=route.name,
                gaps=list(gaps.values()),
                choice=FitChoice(choices[route.name]) if gaps and route.name in choices else None,
                blocking=blocking,
            )
        )
    return ComparisonPlan(manifest=manifest, jobs=jobs, fits=fits)


def fit_manifest(
    manifest: Path, route: Route, catalog: Catalog, fit: RouteFit, target: Path
) -> Path:
    """Write ``manifest`` as ``route`` can take it (``fit``'s gaps dropped or adapted).

    Relative source paths are made absolute, so the fitted copy reads the same images.
    Blocking; run it in a worker thread.

    Returns:
        ``target``, a JSONL manifest.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    fields = {g.field for g in fit.gaps}
    base = manifest.resolve().parent
    with target.open("w", encoding="utf-8") as out:
        for data in _records(manifest):
            fitted = _fit_line(data, fields, route, catalog, fit.choice or FitChoice.DROP)
            out.write(json.dumps(_absolute(fitted, base), ensure_ascii=False) + "\n")
    return target


def _records(manifest: Path) -> Iterator[dict[str, Any]]:
    for item in read_records(manifest):
        if not isinstance(item, Problem):
            yield dict(item.data)


def _fit_line(
    data: dict[str, Any], fields: set[str], route: Route, catalog: Catalog, choice: FitChoice
) -> dict[str, Any]:
    model = str(data.get("model") or route.model)
    for name in fields & data.keys():
        value = data.pop(name)
        if choice is not FitChoice.ADAPT or name not in route.params:
            continue
        if name == "size":
            adapted = nearest_size(catalog.size_rule(route, model), str(value))
        elif name == "quality":
            adapted = nearest_quality(catalog.qualities(route, model), str(value))
        else:
            adapted = None
        if adapted is not None:
            data[name] = adapted
    return data


def nearest_size(rule: SizeRuleName, value: str) -> str | None:
    """The accepted size closest to ``value`` in aspect ratio, then in pixels (``None``: none)."""
    if rule == "none":
        return None
    candidates = VIP_SIZES if rule == "vip" else LEGACY_SIZES
    wanted = parse_size(value) or Size(1024, 1024)
    ratio = wanted.width / wanted.height

    def distance(text: str) -> tuple[float, int]:
        size = parse_size(text) or wanted
        return abs(size.width / size.height - ratio), abs(size.pixels - wanted.pixels)

    best = min(candidates, key=distance)
    return best if size_problem(rule, best) is None else None


def nearest_quality(allowed: Sequence[str], value: str) -> str | None:
    """``value`` if allowed, else ``auto``, else the highest allowed (``None``: none)."""
    if value in allowed:
        return value
    if "auto" in allowed:
        return "auto"
    return allowed[-1] if allowed else None


def _absolute(data: dict[str, Any], base: Path) -> dict[str, Any]:
    def fix(ref: Any) -> Any:
        if not isinstance(ref, str) or ":" in ref.split("/")[0] or Path(ref).is_absolute():
            return ref
        return str(base / ref)

    if isinstance(data.get("images"), list):
        data["images"] = [fix(r) for r in data["images"]]
    elif "images" in data:
        data["images"] = fix(data["images"])
    if "mask" in data:
        data["mask"] = fix(data["mask"])
    return data
