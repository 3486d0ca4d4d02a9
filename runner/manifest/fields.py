"""The manifest's fields and the checks on each value (JSONL or CSV, one job a line).

Every check here is route-aware but file-format-blind: the readers turn JSONL and CSV lines into
the same JSON-typed ``dict`` and the checks below see only that. A check returns a user-facing
reason when the value is wrong and ``None`` when it is fine; the caller attaches file, line and
field.

Limits are OpenAI's for GPT image models: prompts up to 32,000 characters, up to
16 source images, ``n`` 1–10, ``output_compression`` 0–100 and only for jpeg/webp, a transparent
background only for png/webp.
"""

from __future__ import annotations

import re
from difflib import get_close_matches
from functools import lru_cache
from typing import Any

from runner.routes.catalog import COMMON_FIELDS, Catalog, Route
from runner.routes.sizes import SizeRuleName, size_problem

#: Every field a manifest line may have, in the order the docs list them.
KNOWN_FIELDS: tuple[str, ...] = (
    "id",
    "prompt",
    "images",
    "mask",
    "size",
    "quality",
    "n",
    "output_format",
    "output_compression",
    "background",
    "moderation",
    "model",
    "response_format",
    "metadata",
)
_KNOWN = frozenset(KNOWN_FIELDS)


MAX_PROMPT_CHARS = 32_000
MAX_IMAGES = 16
MAX_ID_CHARS = 128
N_RANGE = (1, 10)
COMPRESSION_RANGE = (0, 100)

CHOICES: dict[str, tuple[str, ...]] = {
    "output_format": ("png", "jpeg", "webp"),
    "background": ("transparent", "opaque", "auto"),
    "moderation": ("low", "auto"),
    "response_format": ("b64_json", "url"),
}
#: ``output_format`` values that take ``output_compression`` / a transparent background.
COMPRESSIBLE_FORMATS = ("jpeg", "webp")
ALPHA_FORMATS = ("png", "webp")
DEFAULT_FORMAT = "png"

# Ids name output files on export (``<job id>.<ext>``): no separators, no control characters.
_BAD_ID_CHARS = re.compile(r"[\x00-\x1f\x7f/\\]")


def unknown_field_message(name: str) -> str:
    """Why ``name`` is not a manifest field, with a suggestion when one is close."""
    close = get_close_matches(name, KNOWN_FIELDS, n=1, cutoff=0.7)
    if close:
        return f"unknown field (did you mean {close[0]!r}?)"
    return f"unknown field; known fields: {', '.join(KNOWN_FIELDS)}"


def is_known(name: str) -> bool:
    """Whether ``name`` is a manifest field at all (on any route)."""
    return name in _KNOWN


def type_name(value: Any) -> str:
    """The JSON name of a value's type, for messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def id_problem(value: Any) -> str | None:
    """Check an explicit ``id``: a string or an integer usable as a file name."""
    if isinstance(value, bool) or not isinstance(value, str | int):
        return f"expected a string or an integer, found {type_name(value)}"
    if isinstance(value, int):
        return None
    if not value:
        return "is empty; leave it out to use the line number"
    if len(value) > MAX_ID_CHARS:
        return f"is longer than {MAX_ID_CHARS} characters"
    if value in (".", "..") or _BAD_ID_CHARS.search(value):
        return "must not contain '/', '\\' or control characters, nor be '.' or '..'"
    return _unicode_problem(value)


def prompt_problem(value: Any) -> str | None:
    """Check ``prompt``: a non-blank string of at most 32,000 characters."""
    if not isinstance(value, str):
        return f"expected a string, found {type_name(value)}"
    if not value or value.isspace():
        return "is empty"
    if len(value) > MAX_PROMPT_CHARS:
        return f"is {len(value):,} characters; the limit is {MAX_PROMPT_CHARS:,}"
    return _unicode_problem(value)


def _unicode_problem(value: str) -> str | None:
    """JSON allows lone surrogates (``"\\ud800"``); no database or API takes them."""
    if value.isascii():
        return None
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "contains invalid Unicode (a lone surrogate escape)"
    return None


def model_problem(value: Any) -> str | None:
    """Check a ``model`` override: a non-blank string."""
    if not isinstance(value, str):
        return f"expected a string, found {type_name(value)}"
    if not value or value.isspace() or value != value.strip():
        return "expected a model name without surrounding spaces"
    return None


def metadata_problem(value: Any) -> str | None:
    """Check ``metadata``: any JSON object."""
    if not isinstance(value, dict):
        return f"expected a JSON object, found {type_name(value)}"
    return None


def whole_number_problem(value: Any, low: int, high: int) -> str | None:
    """Check an integer option such as ``n``."""
    if isinstance(value, bool) or not isinstance(value, int):
        return f"expected a whole number from {low} to {high}, found {_show(value)}"
    if not low <= value <= high:
        return f"must be from {low} to {high}, found {value}"
    return None


def choice_problem(value: Any, allowed: tuple[str, ...]) -> str | None:
    """Check a string option against its allowed values."""
    if isinstance(value, str) and value in allowed:
        return None
    return f"expected one of {', '.join(allowed)}, found {_show(value)}"


@lru_cache(maxsize=1024)
def cached_size_problem(rule: SizeRuleName, value: str) -> str | None:
    """``size_problem`` memoised: a manifest repeats a handful of sizes a million times."""
    return size_problem(rule, value)


class RouteRules:
    """What one route accepts, with per-model lookups memoised for the hot path."""

    __slots__ = ("_qualities", "_size_rules", "accepted", "catalog", "route")

    def __init__(self, route: Route, catalog: Catalog) -> None:
        self.route = route
        self.catalog = catalog
        self.accepted: frozenset[str] = COMMON_FIELDS | route.params
        self._size_rules: dict[str, SizeRuleName] = {}
        self._qualities: dict[str, tuple[str, ...]] = {}

    def size_problem(self, value: Any, model: str) -> str | None:
        """Check ``size`` against the size rule of ``model`` on this route."""
        if not isinstance(value, str):
            return f"expected a string such as 1024x1024, found {type_name(value)}"
        rule = self._size_rules.get(model)
        if rule is None:
            rule = self._size_rules[model] = self.catalog.size_rule(self.route, model)
        return cached_size_problem(rule, value)

    def quality_problem(self, value: Any, model: str) -> str | None:
        """Check ``quality`` against the values ``model`` accepts on this route."""
        allowed = self._qualities.get(model)
        if allowed is None:
            allowed = self._qualities[model] = self.catalog.qualities(self.route, model)
        return choice_problem(value, allowed)

    def option_problem(self, name: str, value: Any, model: str) -> str | None:
        """Check one option field (see ``OPTION_FIELDS``) on its own."""
        if name == "size":
            return self.size_problem(value, model)
        if name == "quality":
            return self.quality_problem(value, model)
        if name == "n":
            return whole_number_problem(value, *N_RANGE)
        if name == "output_compression":
            return whole_number_problem(value, *COMPRESSION_RANGE)
        return choice_problem(value, CHOICES[name])


def _show(value: Any) -> str:
    """A short rendering of a wrong value for a message."""
    if isinstance(value, str | int | float) and not isinstance(value, bool):
        text = repr(value)
        return text if len(text) <= 40 else text[:37] + "..."
    return type_name(value)
