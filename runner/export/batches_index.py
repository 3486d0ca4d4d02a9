"""The index of an export of several batches: ``OUT/index.html``, a card per batch.

Each card links the batch's gallery (``OUT/<batch>/index.html``) and shows its totals (jobs,
images, spend, flagged edits) and the thumbnails of its first images, which the gallery
already made in ``OUT/<batch>/thumbs/``. Self-contained like the gallery: inline style pinned
by a Content-Security-Policy, no script, same-folder images, every value escaped.
"""

from __future__ import annotations

import base64
import hashlib
import html
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from runner.export.gallery import PAGE, THUMBS
from runner.export.report import ExportReport
from runner.export.thumbs import thumb_name
from runner.store.records import BatchStatus

STYLE = """
:root { color-scheme: light dark; --line: #8884; --muted: #888; --bad: #c0392b; }
body { font: 14px/1.4 system-ui, sans-serif; margin: 0; padding: 16px; }
h1 { font-size: 20px; margin: 0 0 12px; }
.batches { display: grid; gap: 12px; grid-template-columns: repeat(auto-fill, minmax(300px, 1fr)); }
.batch { border: 1px solid var(--line); border-radius: 8px; padding: 10px; }
.batch h2 { font-size: 16px; margin: 0 0 6px; overflow-wrap: anywhere; }
.strip { display: flex; gap: 4px; min-height: 64px; margin: 6px 0; }
.strip img { width: 64px; height: 64px; object-fit: cover; border-radius: 4px; }
.strip .none { color: var(--muted); align-self: center; }
dl { display: grid; grid-template-columns: auto 1fr; gap: 1px 8px; margin: 0; font-size: 13px; }
dt { color: var(--muted); } dd { margin: 0; }
.flagged { color: var(--bad); font-weight: 600; }
"""

CSP = (
    "default-src 'none'; img-src 'self'; style-src "
    f"'sha256-{base64.b64encode(hashlib.sha256(STYLE.encode()).digest()).decode()}'"
)


@dataclass(frozen=True, slots=True, kw_only=True)
class BatchCard:
    """One batch on the index: where its gallery is and its totals."""

    name: str
    batch_id: str
    route: str
    #: The gallery page and the thumbnails, relative to the index.
    page: str
    thumbs: tuple[str, ...]
    jobs: int
    images: int
    failed: int
    spent_usd: float
    flagged_edits: int


def batch_card(report: ExportReport, status: BatchStatus, out_dir: Path) -> BatchCard:
    """The card of an exported batch (its ``html`` format written under ``out_dir``)."""
    pages = [p for p in report.formats["html"].paths if p.name == PAGE]
    folder = pages[0].parent.relative_to(out_dir).as_posix()
    return BatchCard(
        name=report.batch_name,
        batch_id=report.batch_id,
        route=status.batch.route,
        page=f"{folder}/{PAGE}",
        thumbs=tuple(
            thumb
            for sha in report.samples
            if (out_dir / (thumb := f"{folder}/{THUMBS}/{thumb_name(sha)}")).is_file()
        ),
        jobs=status.total,
        images=report.outputs,
        failed=report.failed,
        spent_usd=status.spent_usd,
        flagged_edits=report.flagged_edits,
    )


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def render_index(title: str, cards: Sequence[BatchCard]) -> str:
    """The index page for ``cards``."""
    items = "".join(_card(card) for card in cards)
    total = sum(c.spent_usd for c in cards)
    return (
        "<!doctype html>\n<html lang='en'>\n<head>\n<meta charset='utf-8'>\n"
        f"<meta http-equiv='Content-Security-Policy' content=\"{_e(CSP)}\">\n"
        f"<title>{_e(title)}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n"
        f"<h1>{_e(title)}</h1>\n<p>{len(cards)} batch(es), {sum(c.images for c in cards)} "
        f"image(s), ${total:.4f} spent</p>\n<main class='batches'>\n{items}</main>\n"
        "</body>\n</html>\n"
    )


def _card(card: BatchCard) -> str:
    strip = "".join(
        f"<img src='{_e(quote(t))}' loading='lazy' alt='{_e(card.name)}'>" for t in card.thumbs
    )
    flagged = "flagged" if card.flagged_edits else ""
    return (
        f'<article class="batch"><h2><a href="{_e(quote(card.page))}">{_e(card.name)}</a></h2>'
        f"<div class='strip'>{strip or '<span class=none>no images</span>'}</div><dl>"
        f"<dt>batch</dt><dd>{_e(card.batch_id)} · {_e(card.route)}</dd>"
        f"<dt>jobs</dt><dd>{card.jobs}</dd><dt>images</dt><dd>{card.images}</dd>"
        f"<dt>failed</dt><dd>{card.failed}</dd><dt>spend</dt><dd>${card.spent_usd:.4f}</dd>"
        f"<dt>flagged edits</dt><dd class='{flagged}'>{card.flagged_edits}</dd></dl></article>\n"
    )
