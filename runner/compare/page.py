"""The comparison page: ``OUT/compare.html`` with thumbnails in ``OUT/thumbs/``.

A summary table (a column per route) over a side-by-side table (a row per prompt, a column
per route). Like the gallery, the page loads nothing from elsewhere: its style is inline and
pinned by a Content-Security-Policy that allows that exact style, no script at all and only
same-folder images; every value goes through :func:`_e` (``html.escape`` with quotes).
"""

from __future__ import annotations

import base64
import hashlib
import html
import os
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import quote

from runner.compare.estimates import RouteEstimate
from runner.compare.plan import ComparisonPlan
from runner.compare.results import Cell, RouteSummary
from runner.export.staging import SourceError
from runner.export.thumbs import make_thumbnail, thumb_name, thumb_size

PAGE = "compare.html"
THUMBS = "thumbs"
#: Thumbnail edge on the comparison page (columns sit side by side).
THUMB_PX = 192

STYLE = """
:root { color-scheme: light dark; --line: #8884; --muted: #888; --bad: #c0392b; }
body { font: 14px/1.4 system-ui, sans-serif; margin: 0; padding: 16px; }
h1 { font-size: 20px; margin: 0 0 4px; } h2 { font-size: 16px; margin: 20px 0 8px; }
.muted { color: var(--muted); }
table { border-collapse: collapse; }
th, td { border: 1px solid var(--line); padding: 6px 8px; vertical-align: top; text-align: left; }
.summary td { font-variant-numeric: tabular-nums; }
.side th.prompt, .side td.prompt { max-width: 280px; white-space: pre-wrap;
  overflow-wrap: anywhere; }
.side td.cell { width: 210px; }
.side img { display: block; max-width: 192px; height: auto; }
.missing { color: var(--muted); padding: 24px 8px; text-align: center; }
dl { display: grid; grid-template-columns: auto 1fr; gap: 1px 6px; margin: 6px 0 0;
  font-size: 12px; }
dt { color: var(--muted); } dd { margin: 0; overflow-wrap: anywhere; }
.flag-ignored_source, .flag-unchanged, .state-failed, .state-unknown { color: var(--bad);
  font-weight: 600; }
.error { color: var(--bad); font-size: 12px; white-space: pre-wrap; overflow-wrap: anywhere; }
"""


def _sha(text: str) -> str:
    return base64.b64encode(hashlib.sha256(text.encode()).digest()).decode()


CSP = f"default-src 'none'; img-src 'self'; style-src 'sha256-{_sha(STYLE)}'"


def _e(value: Any) -> str:
    return "" if value is None else html.escape(str(value), quote=True)


def _money(value: float | None) -> str:
    return "—" if value is None else f"${value:.4f}"


def _ms(value: float | None) -> str:
    return "—" if value is None else f"{value / 1000:.2f} s"


class Thumbnails:
    """Makes the page's thumbnails in parallel; a missing or broken image gets none."""

    def __init__(self, data_dir: Path, folder: Path) -> None:
        self.data_dir = data_dir
        self.folder = folder

    def make(self, cells: Iterable[Cell]) -> dict[str, str]:
        """Thumbnail file name by output path, for every cell whose image could be read."""
        self.folder.mkdir(parents=True, exist_ok=True)
        wanted = {c.path: c.sha256 for c in cells if c.sha256 and c.path}
        with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
            made = pool.map(self._one, wanted.items())
            return {path: name for path, name in zip(wanted, made, strict=True) if name}

    def _one(self, item: tuple[str, str]) -> str | None:
        path, sha = item
        relative = os.path.normpath(path)
        source = self.data_dir / relative
        # A thumbnail is named by content and may exist from another output: the cell's own
        # file must be there for the page to show it.
        if os.path.isabs(relative) or relative.startswith("..") or not source.is_file():
            return None
        name = thumb_name(sha, THUMB_PX)
        try:
            make_thumbnail(source, self.folder / name, THUMB_PX)
        except SourceError:
            return None
        return name


def render_page(
    *,
    name: str,
    plan: ComparisonPlan,
    summaries: Sequence[RouteSummary],
    cells: Sequence[Cell],
    thumbs: dict[str, str],
) -> str:
    """The whole page as one string."""
    routes = [s.route for s in summaries]
    return "".join(
        [
            "<!doctype html>\n<html lang='en'>\n<head>\n<meta charset='utf-8'>\n",
            f"<meta http-equiv='Content-Security-Policy' content=\"{_e(CSP)}\">\n",
            f"<title>{_e(name)} — imagerun comparison</title>\n<style>{STYLE}</style>\n",
            f"</head>\n<body>\n<h1>{_e(name)}</h1>\n<p class='muted'>manifest "
            f"{_e(plan.manifest)} · {plan.jobs} job(s) · routes {_e(', '.join(routes))}</p>\n",
            _fits(plan),
            _summary(summaries, {e.route: e for e in plan.estimates}),
            _side_by_side(routes, cells, thumbs),
            "</body>\n</html>\n",
        ]
    )


def _fits(plan: ComparisonPlan) -> str:
    items = []
    for fit in plan.fits:
        if not fit.gaps:
            items.append(f"<li>{_e(fit.route)}: takes the manifest as written</li>")
            continue
        gaps = "; ".join(f"{g.field} ({g.lines} line(s)): {g.message}" for g in fit.gaps)
        choice = fit.choice.value if fit.choice else "not chosen"
        items.append(f"<li>{_e(fit.route)}: {_e(choice)} — {_e(gaps)}</li>")
    return f"<h2>What each route was sent</h2>\n<ul class='fits'>{''.join(items)}</ul>\n"


def _summary(summaries: Sequence[RouteSummary], estimates: Mapping[str, RouteEstimate]) -> str:
    rows: list[tuple[str, list[str]]] = [
        ("batch", [f"{s.batch} ({s.batch_id})" for s in summaries]),
        ("lines held", [f"{s.jobs} of {s.lines}" for s in summaries]),
        (
            "succeeded / failed / unknown / pending",
            [f"{s.succeeded} / {s.failed} / {s.unknown} / {s.pending}" for s in summaries],
        ),
        (
            "success rate",
            ["—" if s.success_rate is None else f"{s.success_rate:.1%}" for s in summaries],
        ),
        (
            "latency p50 / p95",
            [f"{_ms(s.p50_latency_ms)} / {_ms(s.p95_latency_ms)}" for s in summaries],
        ),
        ("images", [str(s.images) for s in summaries]),
        (
            "spent (this route only)",
            [
                _money(s.spent_usd)
                + (f" (+{_money(s.unknown_charges_usd)} unknown)" if s.unknown_charges_usd else "")
                for s in summaries
            ],
        ),
        ("cost per image", [_money(s.cost_per_image_usd) for s in summaries]),
        (
            "estimated before sending (every line)",
            [_estimate(estimates.get(s.route)) for s in summaries],
        ),
        (
            "failed attempts",
            [", ".join(f"{k}×{v}" for k, v in s.failure_classes.items()) or "—" for s in summaries],
        ),
        (
            "edits scored / mean fidelity",
            [
                f"{s.edits_scored} / "
                + ("—" if s.mean_fidelity is None else f"{s.mean_fidelity:.2f}")
                for s in summaries
            ],
        ),
        (
            "edit flags",
            [", ".join(f"{k} {v}" for k, v in s.flags.items()) or "—" for s in summaries],
        ),
    ]
    head = "".join(f"<th>{_e(s.route)}</th>" for s in summaries)
    body = "".join(
        f"<tr><th>{_e(label)}</th>{''.join(f'<td>{_e(v)}</td>' for v in values)}</tr>\n"
        for label, values in rows
    )
    return (
        "<h2>Summary</h2>\n<table class='summary'>"
        f"<thead><tr><th></th>{head}</tr></thead>\n<tbody>\n{body}</tbody></table>\n"
    )


def _estimate(est: RouteEstimate | None) -> str:
    if est is None:
        return "—"
    return f"{_money(est.typical)} ({_money(est.low)}–{_money(est.high)})"


def _side_by_side(routes: Sequence[str], cells: Sequence[Cell], thumbs: dict[str, str]) -> str:
    by_job: dict[str, dict[str, Cell]] = {}
    order: dict[str, tuple[int, str]] = {}
    for cell in cells:
        by_job.setdefault(cell.id, {})[cell.route] = cell
        order.setdefault(cell.id, (cell.index, cell.prompt))
    head = "".join(f"<th>{_e(r)}</th>" for r in routes)
    rows = []
    for job_id in sorted(by_job, key=lambda j: order[j][0]):
        prompt = order[job_id][1]
        tds = "".join(_cell(by_job[job_id].get(r), thumbs) for r in routes)
        rows.append(
            f"<tr data-id='{_e(job_id)}'><td class='prompt'><b>{_e(job_id)}</b>\n"
            f"{_e(prompt)}</td>{tds}</tr>\n"
        )
    return (
        "<h2>Side by side</h2>\n<table class='side'>"
        f"<thead><tr><th class='prompt'>prompt</th>{head}</tr></thead>\n"
        f"<tbody>\n{''.join(rows)}</tbody></table>\n"
    )


def _cell(cell: Cell | None, thumbs: dict[str, str]) -> str:
    if cell is None:
        return "<td class='cell'><div class='missing'>no result (not run yet)</div></td>"
    thumb = thumbs.get(cell.path or "")
    if thumb is not None and cell.width and cell.height:
        width, height = thumb_size(cell.width, cell.height, THUMB_PX)
        picture = (
            f"<img src='{THUMBS}/{_e(quote(thumb))}' loading='lazy' decoding='async' "
            f"width='{width}' height='{height}' alt='{_e(cell.id)}'>"
        )
    else:
        why = "image unavailable" if cell.path else (cell.outcome or cell.state)
        picture = f"<div class='missing'>{_e(why)}</div>"
    facts: list[tuple[str, str, str]] = [("status", cell.state, f"state-{cell.state}")]
    if cell.width:
        more = f" (+{cell.images - 1})" if cell.images > 1 else ""
        facts.append(("size", f"{cell.width}×{cell.height}{more}", ""))
    cost = _money(cell.cost_usd) + (f" {cell.cost_kind}" if cell.cost_kind else "")
    facts += [("cost", cost, ""), ("latency", _ms(cell.latency_ms), "")]
    facts += [("attempts", str(cell.attempts), ""), ("request", cell.request_id or "—", "")]
    if cell.is_edit:
        score = "not scored" if cell.fidelity is None else f"{cell.fidelity:.2f}"
        facts.append(("fidelity", f"{score} {cell.flag or ''}".strip(), f"flag-{cell.flag}"))
    dl = "".join(
        f"<dt>{_e(k)}</dt><dd class='{_e(c)}'>{_e(v)}</dd>"
        if c
        else f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>"
        for k, v, c in facts
    )
    error = f"<p class='error'>{_e(cell.error)}</p>" if cell.error else ""
    return f"<td class='cell'>{picture}<dl>{dl}</dl>{error}</td>"
