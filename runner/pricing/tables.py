"""Size × quality tables: output-token counts and per-image prices.

OpenAI publishes image figures for three reference sizes only (1024x1024, 1024x1536,
1536x1024). Any other size is priced from the reference size nearest in aspect ratio, scaled
by pixel area; that reproduces the three published sizes exactly and grows with the pixels a
larger image has to produce.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from runner.routes.sizes import Size

#: Table column order.
REFERENCE_SIZES: tuple[Size, Size, Size] = (Size(1024, 1024), Size(1024, 1536), Size(1536, 1024))

#: Qualities the tables have rows for, cheapest first.
TABLE_QUALITIES: tuple[str, str, str] = ("low", "medium", "high")

#: The typical quality when a job leaves it to the model (``auto`` or absent).
TYPICAL_QUALITY = "medium"

# Square vs 3:2 split at the geometric midpoint of the two ratios, so a size goes to the
# reference shape it is closest to on a log scale (5:4 counts as landscape, 6:5 as square).
_SQUARE_LIMIT = math.sqrt(1.5)

Triple = tuple[float, float, float]


@dataclass(frozen=True, slots=True, kw_only=True)
class ImageTable:
    """Per-image figures by quality for the three reference sizes.

    Attributes:
        name: the table's name in ``prices.toml``.
        rows: quality → (1024x1024, 1024x1536, 1536x1024).
        source: where the figures come from ("off.", "3P" or "derived" note).
    """

    name: str
    rows: Mapping[str, Triple]
    source: str

    def value(self, size: Size, quality: str) -> float:
        """The figure for ``size`` at a table quality (low/medium/high), area-scaled.

        Args:
            size: the output size.
            quality: one of :data:`TABLE_QUALITIES` (normalise with :func:`table_quality`).
        """
        index = reference_index(size)
        reference = REFERENCE_SIZES[index]
        return self.rows[quality][index] * size.pixels / reference.pixels


def reference_index(size: Size) -> int:
    """Column of the reference size closest to ``size`` in aspect ratio (0 square, 1 portrait)."""
    ratio = size.width / size.height
    if 1 / _SQUARE_LIMIT < ratio < _SQUARE_LIMIT:
        return 0
    return 2 if ratio > 1 else 1


def table_quality(quality: str | None) -> tuple[str, str | None]:
    """Map a requested quality onto a table row.

    Returns:
        ``(row, note)``: ``auto``/absent → ``medium`` (the typical choice); a quality the
        tables do not have (``xhigh``, ``max``, DALL·E's ``hd``) → ``high`` with a note that
        the figure is a lower bound, since nothing is published for it.
    """
    if quality is None or quality == "auto":
        return TYPICAL_QUALITY, None
    if quality in TABLE_QUALITIES:
        return quality, None
    return "high", f"no published figures for quality {quality!r}; priced as 'high' (may be low)"


def parse_triple(name: str, quality: str, raw: object) -> Triple:
    """Validate one ``[low|medium|high] = [a, b, c]`` row of a table."""
    if not isinstance(raw, list) or len(raw) != 3:
        raise ValueError(f"table {name!r} row {quality!r}: expected three numbers")
    values = tuple(float(v) for v in raw)
    return values[0], values[1], values[2]


def parse_table(name: str, raw: Mapping[str, object]) -> ImageTable:
    """Build an :class:`ImageTable` from its ``prices.toml`` section."""
    rows = {q: parse_triple(name, q, raw[q]) for q in TABLE_QUALITIES}
    return ImageTable(name=name, rows=rows, source=str(raw.get("source", "")))
