"""The gallery page's markup: head, cards and tail, rendered as strings to stream out.

Every value that reaches the page goes through :func:`_e` (``html.escape`` with quotes), so
a prompt containing ``<script>`` is shown as text. The page loads nothing from elsewhere: its
style and script are inline and pinned by a Content-Security-Policy that allows only those
exact hashes and same-folder images, so even a missed escape could not run a script.
"""

from __future__ import annotations

import base64
import hashlib
import html
from typing import Any
from urllib.parse import quote

from runner.export.thumbs import thumb_size
from runner.store.exports import ExportJob, ExportOutput
from runner.store.records import BatchInfo

STYLE = """
:root { color-scheme: light dark; --line: #8884; --muted: #888; --bad: #c0392b; --warn: #b7791f; }
* { box-sizing: border-box; }
body { font: 14px/1.4 system-ui, sans-serif; margin: 0; padding: 16px; }
header { display: flex; flex-wrap: wrap; gap: 12px; align-items: baseline; margin-bottom: 16px; }
header h1 { font-size: 20px; margin: 0; }
header .batch { color: var(--muted); }
.controls { margin-left: auto; display: flex; gap: 8px; align-items: center; }
.grid { display: grid; gap: 12px; grid-template-columns: repeat(auto-fill, minmax(260px, 1fr)); }
.card { border: 1px solid var(--line); border-radius: 8px; overflow: hidden;
  display: flex; flex-direction: column; }
.card[hidden] { display: none; }
.thumb { display: flex; align-items: center; justify-content: center; min-height: 120px;
  background: repeating-conic-gradient(#8882 0 25%, transparent 0 50%) 50% / 16px 16px; }
.thumb img { display: block; max-width: 256px; width: 100%; height: auto; }
.thumb.missing { color: var(--muted); padding: 24px; text-align: center; }
.meta { padding: 8px 10px; }
.prompt { margin: 0 0 6px; white-space: pre-wrap; overflow-wrap: anywhere;
  max-height: 8.4em; overflow: auto; }
dl { display: grid; grid-template-columns: auto 1fr; gap: 2px 8px; margin: 0; font-size: 12px; }
dt { color: var(--muted); }
dd { margin: 0; overflow-wrap: anywhere; }
.status-failed { color: var(--bad); font-weight: 600; }
.status-unknown { color: var(--warn); font-weight: 600; }
.thumb.pair { gap: 6px; padding: 4px; }
.thumb.pair figure { margin: 0; flex: 1; text-align: center; font-size: 11px; color: var(--muted); }
.thumb.pair img { max-width: 100%; }
.thumb.pair .arrow { color: var(--muted); }
.flag-ignored_source, .flag-unchanged { color: var(--bad); font-weight: 600; }
.error { margin: 6px 0 0; color: var(--bad); white-space: pre-wrap; overflow-wrap: anywhere;
  font-size: 12px; }
"""

SCRIPT = """
"use strict";
(() => {
  const cards = Array.from(document.querySelectorAll("article.card"));
  const status = document.getElementById("status");
  const search = document.getElementById("search");
  const shown = document.getElementById("shown");
  const counts = new Map();
  for (const card of cards) {
    counts.set(card.dataset.status, (counts.get(card.dataset.status) || 0) + 1);
  }
  for (const [name, n] of [...counts].sort()) {
    const option = document.createElement("option");
    option.value = name;
    option.textContent = `${name} (${n})`;
    status.append(option);
  }
  const texts = new WeakMap();
  const textOf = (card) => {
    if (!texts.has(card)) texts.set(card, card.textContent.toLowerCase());
    return texts.get(card);
  };
  const apply = () => {
    const wanted = status.value;
    const query = search.value.trim().toLowerCase();
    let n = 0;
    for (const card of cards) {
      const ok = (!wanted || card.dataset.status === wanted) &&
        (!query || textOf(card).includes(query));
      card.hidden = !ok;
      if (ok) n += 1;
    }
    shown.textContent = `${n} of ${cards.length} shown`;
  };
  status.addEventListener("change", apply);
  search.addEventListener("input", apply);
  apply();
})();
"""


def _sha(text: str) -> str:
    return base64.b64encode(hashlib.sha256(text.encode()).digest()).decode()


CSP = (
    "default-src 'none'; img-src 'self'; "
    f"style-src 'sha256-{_sha(STYLE)}'; script-src 'sha256-{_sha(SCRIPT)}'"
)


def _e(value: Any) -> str:
    return "" if value is None else html.escape(str(value), quote=True)


def head(batch: BatchInfo) -> str:
    """Everything before the first card."""
    title = f"{batch.name} — imagerun gallery"
    return (
        "<!doctype html>\n<html lang='en'>\n<head>\n<meta charset='utf-8'>\n"
        f"<meta http-equiv='Content-Security-Policy' content=\"{_e(CSP)}\">\n"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>\n"
        f"<title>{_e(title)}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n<header>\n"
        f"<h1>{_e(batch.name)}</h1>\n"
        f"<span class='batch'>batch {_e(batch.id)} · route {_e(batch.route)} · "
        f"submitted {_e(batch.created_at.strftime('%Y-%m-%d %H:%M UTC'))}</span>\n"
        "<div class='controls'>\n"
        "<label>status <select id='status'><option value=''>all</option></select></label>\n"
        "<input id='search' type='search' placeholder='filter text' aria-label='filter text'>\n"
        "<span id='shown'></span>\n</div>\n</header>\n<main class='grid'>\n"
    )


TAIL = f"</main>\n<script>{SCRIPT}</script>\n</body>\n</html>\n"


def output_card(
    row: ExportOutput,
    *,
    thumb: str | None,
    link: str | None,
    problem: str | None,
    source_thumb: str | None = None,
) -> str:
    """The card of one output: its thumbnail (or why there is none) and its facts.

    An edit's card shows its first source beside the output (``source_thumb``, or why there
    is no picture of it) and its fidelity flag.
    """
    if thumb is None:
        img, frame = _e(problem or "no image"), "thumb missing"
    else:
        width, height = thumb_size(row.width, row.height)
        img = (
            f"<img src='thumbs/{_e(quote(thumb))}' loading='lazy' decoding='async' "
            f"width='{width}' height='{height}' alt='{_e(_short(row.prompt))}'>"
        )
        if link is not None:
            img = f"<a href='{_e(quote(link))}'>{img}</a>"
        frame = "thumb"
    picture = (
        edit_pair(row, source_thumb, img) if row.images else f"<div class='{frame}'>{img}</div>"
    )
    facts: list[tuple[str, Any]] = [
        ("size", f"{row.width}×{row.height} {row.format}, {_kib(row.bytes)}")
    ]
    if row.images:
        facts.append(("fidelity", fidelity_text(row)))
    if row.asked is not None:
        # Kept as delivered (and paid for), though not what the job asked for.
        facts.append(("mismatch", f"asked for {row.asked}, got {row.got}"))
    facts += _common_facts(row)
    return _card(row, picture, facts, error=None)


def edit_pair(row: ExportOutput, source_thumb: str | None, output: str) -> str:
    """Source → output, side by side, for an edit."""
    if source_thumb is None:
        source = "<div class='missing'>source not available here</div>"
    else:
        source = (
            f"<img src='thumbs/{_e(quote(source_thumb))}' loading='lazy' decoding='async' "
            f"alt='source of {_e(row.ext_id)}'>"
        )
    return (
        f"<div class='thumb pair'><figure>{source}<figcaption>source</figcaption></figure>"
        f"<span class='arrow'>→</span><figure>{output}"
        f"<figcaption class='flag-{_e(row.edit_flag or 'none')}'>"
        f"{_e(row.edit_flag or 'not scored')}</figcaption></figure></div>"
    )


def fidelity_text(row: ExportOutput) -> str:
    """``0.84 ok``, or why an edit has no score."""
    if row.edit_fidelity is None:
        return "not scored (source not readable here)"
    return f"{row.edit_fidelity:.2f} {row.edit_flag}"


def failed_card(row: ExportJob) -> str:
    """The card of a failed or unknown job: its last outcome and error."""
    picture = f"<div class='thumb missing'>{_e(row.last_outcome or row.state)}</div>"
    error = row.last_error
    if error is None and row.state == "unknown":
        error = "outcome unknown: the request may have reached the provider (and been charged)"
    return _card(row, picture, _common_facts(row), error=error or row.last_outcome)


def _card(row: ExportJob, picture: str, facts: list[tuple[str, Any]], error: str | None) -> str:
    rows = "".join(f"<dt>{_e(name)}</dt><dd>{_e(value)}</dd>" for name, value in facts)
    status = f"<dt>status</dt><dd class='status-{_e(row.state)}'>{_e(row.state)}</dd>"
    err = f"<p class='error'>{_e(error)}</p>" if error else ""
    return (
        f"<article class='card' data-status='{_e(row.state)}'{_flag_attr(row)}>"
        f"{picture}<div class='meta'>"
        f"<p class='prompt'>{_e(row.prompt)}</p><dl>{status}{rows}</dl>{err}</div></article>\n"
    )


def _flag_attr(row: ExportJob) -> str:
    flag = getattr(row, "edit_flag", None)
    return "" if flag is None else f" data-flag='{_e(flag)}'"


def _common_facts(row: ExportJob) -> list[tuple[str, Any]]:
    facts: list[tuple[str, Any]] = [("id", row.ext_id), ("route", row.route or "—")]
    facts.append(("model", f"{row.model} ({row.provider})" if row.model else "—"))
    facts.append(("cost", _cost(row)))
    facts.append(("attempts", row.attempts))
    facts.append(("request", row.request_id or "—"))
    if row.provider_request_id:
        facts.append(("provider id", row.provider_request_id))
    if row.gateway_request_id:
        facts.append(("gateway id", row.gateway_request_id))
    return facts


def _cost(row: ExportJob) -> str:
    if row.job_observed_usd is not None:
        return f"${row.job_observed_usd:.4f} observed"
    if row.job_expected_usd is not None:
        return f"${row.job_expected_usd:.4f} expected ({row.charge_status or 'unknown'})"
    return "unknown" if row.charge_status == "unknown" else "—"


def _kib(size: int) -> str:
    return f"{size / 1024:.1f} KiB" if size < 1 << 20 else f"{size / (1 << 20):.1f} MiB"


def _short(text: str, limit: int = 120) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
