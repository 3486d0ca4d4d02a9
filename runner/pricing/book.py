"""The price book: a dated table of per-token prices, per-image prices and token counts.

The data is the packaged ``prices.toml`` (its header gives the sources); ``imagerun.toml`` may
override or add rows with ``[prices."<model>"]`` tables, which the book's ``source`` records.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import date
from functools import cache
from importlib import resources
from types import MappingProxyType
from typing import Any

from runner.errors import ConfigError
from runner.pricing.tables import ImageTable, parse_table, table_quality
from runner.routes.sizes import Size, parse_size, resolve_size

#: Price keys of a ``[tokens.*]`` row, USD per 1M tokens.
RATE_KEYS = ("text_in", "text_cached", "image_in", "image_cached", "image_out", "text_out")

#: When a rate is not published, bill at this one instead: never below the real price.
_RATE_FALLBACK = {"text_cached": "text_in", "image_cached": "image_in", "text_out": "image_out"}

_TABLE_KEYS = ("output_tokens", "per_image", "auto_sizes")
_OVERRIDE_KEYS = frozenset((*RATE_KEYS, *_TABLE_KEYS, "source"))

# Dated snapshots (gpt-image-2-2026-04-21) price like their alias unless listed themselves.
_SNAPSHOT = re.compile(r"-\d{4}-\d{2}-\d{2}$")

PER_MILLION = 1_000_000


class PriceNotFound(ConfigError):
    """The price book has no (or not enough) prices for a model or route."""


@dataclass(frozen=True, slots=True, kw_only=True)
class TokenPrices:
    """One model's prices in USD per 1M tokens; ``None`` where nothing is published.

    Attributes:
        model: the model label.
        output_tokens: name of its output-token table (``None``: cannot estimate outputs).
        per_image: name of its published per-image price table, if any.
        auto_sizes: name of the size set ``size: auto`` may resolve to.
        source: where the prices come from ("off.", "3P", "derived", an override …).
        placeholder: the prices are a guess, not a published figure.
    """

    model: str
    text_in: float | None = None
    text_cached: float | None = None
    image_in: float | None = None
    image_cached: float | None = None
    image_out: float | None = None
    text_out: float | None = None
    output_tokens: str | None = None
    per_image: str | None = None
    auto_sizes: str = "legacy"
    source: str
    placeholder: bool = False

    def rate(self, key: str) -> float:
        """USD per 1M tokens for ``key`` (one of :data:`RATE_KEYS`), with the fallbacks.

        Raises:
            PriceNotFound: neither the rate nor its fallback is known.
        """
        value: float | None = getattr(self, key)
        if value is None and key in _RATE_FALLBACK:
            value = getattr(self, _RATE_FALLBACK[key])
        if value is None:
            raise PriceNotFound(
                f"no {key} price for model {self.model!r}; "
                f'set it in imagerun.toml [prices."{self.model}"]'
            )
        return value

    def usd(self, key: str, tokens: float) -> float:
        """USD for ``tokens`` at rate ``key``; no lookup (and no error) for zero tokens."""
        # Zero tokens need no rate: a mainline row has no image prices at all.
        return tokens * self.rate(key) / PER_MILLION if tokens else 0.0

    def describe(self) -> str:
        """``model (source)`` for an estimate's ``source`` line."""
        return f"{self.model} ({self.source})"


@dataclass(frozen=True, slots=True, kw_only=True)
class EstimateRules:
    """Approximations used for jobs that have not run (``[estimate]`` in ``prices.toml``).

    Each triple is ``(low, typical, high)``.
    """

    default_size: Size
    size_sets: Mapping[str, tuple[Size, ...]]
    chars_per_token: tuple[float, float, float]
    input_image_tokens: tuple[float, float, float]
    mainline_input_overhead: tuple[float, float, float]
    mainline_output_tokens: tuple[float, float, float]
    source: str


@dataclass(frozen=True, slots=True, kw_only=True)
class PriceBook:
    """Dated prices for token-billed routes. Build with :func:`load_price_book`.

    Attributes:
        as_of: the date the figures were compiled.
        source: where they come from, including any ``imagerun.toml`` overrides.
        table: the table's name; a token route's ``price_table`` must match it.
    """

    as_of: date
    source: str
    table: str
    models: Mapping[str, TokenPrices]
    output_token_tables: Mapping[str, ImageTable]
    per_image_tables: Mapping[str, ImageTable]
    rules: EstimateRules

    def prices(self, model: str) -> TokenPrices:
        """The prices for ``model``; a dated snapshot falls back to its alias.

        Raises:
            PriceNotFound: the model has no row.
        """
        found = self.models.get(model) or self.models.get(_SNAPSHOT.sub("", model))
        if found is None:
            raise PriceNotFound(
                f"no prices for model {model!r} (price book as of {self.as_of}); "
                f'add [prices."{model}"] to imagerun.toml'
            )
        return found

    def check_table(self, price_table: str) -> None:
        """Fail if a route names a price table this book does not hold."""
        if price_table != self.table:
            raise PriceNotFound(
                f"price table {price_table!r} is not defined (this book holds {self.table!r})"
            )

    def output_image_tokens(self, model: str, size: Size, quality: str | None) -> float:
        """Output image tokens of one image, unrounded (see :func:`output_image_tokens`)."""
        prices = self.prices(model)
        if prices.output_tokens is None:
            raise PriceNotFound(f"no output-token table for model {model!r}")
        row, _ = table_quality(quality)
        return self.output_token_tables[prices.output_tokens].value(size, row)

    def per_image_usd(self, model: str, size: Size, quality: str | None) -> float:
        """Output cost of one image: the published table, else tokens × ``image_out``."""
        prices = self.prices(model)
        row, _ = table_quality(quality)
        if prices.per_image is not None:
            return self.per_image_tables[prices.per_image].value(size, row)
        tokens = self.output_image_tokens(model, size, quality)
        return tokens * prices.rate("image_out") / PER_MILLION

    def auto_sizes(self, model: str) -> tuple[Size, ...]:
        """The sizes ``size: auto`` may resolve to for ``model``."""
        return self.rules.size_sets[self.prices(model).auto_sizes]


def output_image_tokens(
    model: str, size: str | Size | None, quality: str | None, *, book: PriceBook | None = None
) -> int:
    """Output image tokens one image of this model, size and quality is expected to use.

    The sandbox uses this to emulate ``usage``. Counts for gpt-image-2 are derived from its
    per-image prices (OpenAI publishes no table); other sizes than the three reference ones
    are scaled by pixel area. ``auto``/absent size is 1024x1024 and quality ``medium``.

    Args:
        model: model label (a dated snapshot resolves to its alias).
        size: ``"WxH"``, a :class:`Size`, ``"auto"`` or ``None``.
        quality: ``low|medium|high``; ``auto``/``None`` → ``medium``; others → ``high``.
        book: the price book (default: the packaged one).
    """
    chosen = book or default_price_book()
    resolved = size if isinstance(size, Size) else resolve_size(size)
    return round(chosen.output_image_tokens(model, resolved, quality))


@cache
def default_price_book() -> PriceBook:
    """The packaged price book without overrides (loaded once)."""
    return load_price_book()


def load_price_book(overrides: Mapping[str, Mapping[str, Any]] | None = None) -> PriceBook:
    """Load ``prices.toml`` and apply ``[prices."<model>"]`` overrides from ``imagerun.toml``.

    Args:
        overrides: model label → settings (any of :data:`RATE_KEYS`, ``output_tokens``,
            ``per_image``, ``auto_sizes``, ``source``). An unknown label adds a model.
            Overriding ``image_out`` drops the model's published per-image table, which no
            longer matches; output tokens × the new rate apply instead.

    Raises:
        ConfigError: an override has an unknown key, a bad value or names an unknown table.
    """
    text = resources.files("runner.pricing").joinpath("prices.toml").read_text("utf-8")
    data = tomllib.loads(text)
    out_tables = {k: parse_table(k, v) for k, v in data["output_tokens"].items()}
    img_tables = {k: parse_table(k, v) for k, v in data["per_image"].items()}
    rules = _parse_rules(data["estimate"])
    models = {name: _parse_row(name, raw) for name, raw in data["tokens"].items()}
    tables = {"output_tokens": out_tables, "per_image": img_tables, "auto_sizes": rules.size_sets}
    source = str(data["source"])
    if overrides:
        for name, raw in overrides.items():
            models[name] = _override(models.get(name), name, raw, tables)
        source += "; overridden in imagerun.toml: " + ", ".join(sorted(overrides))
    return PriceBook(
        as_of=date.fromisoformat(str(data["as_of"])),
        source=source,
        table=str(data["table"]),
        models=MappingProxyType(models),
        output_token_tables=MappingProxyType(out_tables),
        per_image_tables=MappingProxyType(img_tables),
        rules=rules,
    )


def _parse_row(name: str, raw: Mapping[str, Any]) -> TokenPrices:
    return TokenPrices(
        model=name,
        source=str(raw["source"]),
        placeholder=bool(raw.get("placeholder", False)),
        auto_sizes=str(raw.get("auto_sizes", "legacy")),
        output_tokens=raw.get("output_tokens"),
        per_image=raw.get("per_image"),
        **{k: float(raw[k]) for k in RATE_KEYS if k in raw},
    )


def _triple(raw: Any) -> tuple[float, float, float]:
    low, typical, high = (float(v) for v in raw)
    return low, typical, high


def _size(text: str) -> Size:
    size = parse_size(text)
    if size is None:
        raise ValueError(f"prices.toml: bad size {text!r}")
    return size


def _parse_rules(raw: Mapping[str, Any]) -> EstimateRules:
    sets = {k: tuple(_size(s) for s in v) for k, v in raw["size_sets"].items()}
    return EstimateRules(
        default_size=_size(raw["default_size"]),
        size_sets=MappingProxyType(sets),
        chars_per_token=_triple(raw["chars_per_token"]),
        input_image_tokens=_triple(raw["input_image_tokens"]),
        mainline_input_overhead=_triple(raw["mainline_input_overhead"]),
        mainline_output_tokens=_triple(raw["mainline_output_tokens"]),
        source=str(raw["source"]),
    )


def _override(
    base: TokenPrices | None,
    name: str,
    raw: Mapping[str, Any],
    tables: Mapping[str, Mapping[str, object]],
) -> TokenPrices:
    where = f'imagerun.toml [prices."{name}"]'
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where}: expected a table of prices")
    unknown = sorted(set(raw) - _OVERRIDE_KEYS)
    if unknown:
        known = ", ".join(sorted(_OVERRIDE_KEYS))
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; known: {known}")
    changes: dict[str, Any] = {}
    for key in RATE_KEYS:
        if key in raw:
            value = raw[key]
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise ConfigError(f"{where}: {key} must be a number ≥ 0 (USD per 1M tokens)")
            changes[key] = float(value)
    for key in _TABLE_KEYS:
        if key in raw:
            if raw[key] not in tables[key]:
                known = ", ".join(sorted(tables[key]))
                raise ConfigError(f"{where}: {key} {raw[key]!r} is not a table; known: {known}")
            changes[key] = str(raw[key])
    if "image_out" in changes and "per_image" not in changes:
        changes["per_image"] = None
    changes["source"] = str(raw.get("source", where))
    changes["placeholder"] = False
    if base is None:
        if not any(k in changes for k in RATE_KEYS):
            raise ConfigError(f"{where}: a new model needs at least one price")
        return TokenPrices(model=name, **changes)
    return replace(base, **changes)
