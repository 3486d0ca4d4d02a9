"""Export file names: the ``--name`` template, sanitising, and collision suffixes.

A template is Python format syntax over a closed set of fields: ``{id}`` (the manifest id),
``{index}`` (the job's 1-based position in its batch), ``{k}`` (which output of the job, as
stored: 0-based, the ``k`` column of every index) and ``{metadata.<key>}`` (dotted for nested
objects). Format specs work (``{index:05d}``); conversions (``!r``) do not.
"""

from __future__ import annotations

import json
import re
import string
import unicodedata
from dataclasses import dataclass
from typing import Any

from runner.errors import UsageError
from runner.store.exports import ExportOutput

#: UTF-8 bytes a name may take before its suffix and extension (file systems allow 255).
MAX_NAME_BYTES = 150
_UNSAFE = re.compile(r'[/\\:*?"<>|]')
_DOTS = re.compile(r"\.{2,}")
_SPACES = re.compile(r"\s+")
_WINDOWS_RESERVED = frozenset(
    {"CON", "PRN", "AUX", "NUL"} | {f"{p}{n}" for p in ("COM", "LPT") for n in range(1, 10)}
)
_PLAIN = ("id", "index", "k")


@dataclass(frozen=True, slots=True)
class _Part:
    literal: str
    field: str | None
    spec: str


class NameTemplate:
    """A parsed, validated ``--name`` template.

    Raises:
        UsageError: the template is malformed or names an unknown field.
    """

    def __init__(self, text: str) -> None:
        self.text = text
        self._parts = _parse(text)
        self.has_k = any(p.field == "k" for p in self._parts)

    def render(self, row: ExportOutput) -> str:
        """The raw (unsanitised) name of ``row``; a missing metadata key renders empty."""
        out = []
        for part in self._parts:
            out.append(part.literal)
            if part.field is not None:
                out.append(_format(_value(row, part.field), part.spec))
        return "".join(out)


def _parse(text: str) -> list[_Part]:
    try:
        parsed = list(string.Formatter().parse(text))
    except ValueError as exc:
        raise UsageError(f"bad name template {text!r}: {exc}") from exc
    parts = []
    for literal, field, spec, conversion in parsed:
        if field is None:
            parts.append(_Part(literal, None, ""))
            continue
        if conversion:
            raise UsageError(
                f"bad name template {text!r}: conversions (!{conversion}) are not supported"
            )
        if "{" in (spec or ""):
            raise UsageError(f"bad name template {text!r}: nested fields are not supported")
        if field not in _PLAIN and not (field.startswith("metadata.") and len(field) > 9):
            raise UsageError(
                f"bad name template {text!r}: unknown field {{{field}}}; "
                "use {id}, {index}, {k} or {metadata.KEY}"
            )
        parts.append(_Part(literal, field, spec or ""))
    if not any(p.field for p in parts):
        raise UsageError(f"bad name template {text!r}: it names no field, so every name collides")
    return parts


def _value(row: ExportOutput, field: str) -> Any:
    if field == "id":
        return row.ext_id
    if field == "index":
        return row.index
    if field == "k":
        return row.k
    value: Any = row.metadata
    for key in field.split(".")[1:]:
        if not isinstance(value, dict) or key not in value:
            return ""
        value = value[key]
    return value


def _format(value: Any, spec: str) -> str:
    if value is None:
        return ""
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    try:
        return format(value, spec)
    except (ValueError, TypeError):
        # A spec meant for numbers met a string in some row's metadata: keep the plain value.
        return str(value)


def sanitise(name: str, *, max_bytes: int = MAX_NAME_BYTES) -> str:
    """Make ``name`` safe as one path component on any common file system.

    Path separators, characters Windows forbids, control and invisible formatting characters
    become ``_``; runs of dots collapse (so no ``..``); leading and trailing dots and spaces
    go; the result is cut to ``max_bytes`` of UTF-8; Windows device names get a ``_`` prefix.
    The result may be empty.
    """
    name = unicodedata.normalize("NFC", name)
    name = "".join("_" if unicodedata.category(ch) in ("Cc", "Cf") else ch for ch in name)
    name = _SPACES.sub(" ", _DOTS.sub(".", _UNSAFE.sub("_", name)))
    name = _cut(name.strip(" ."), max_bytes).strip(" .")
    if name.split(".", 1)[0].upper() in _WINDOWS_RESERVED:
        name = "_" + name
    return name


def _cut(name: str, max_bytes: int) -> str:
    encoded = name.encode("utf-8")
    if len(encoded) <= max_bytes:
        return name
    return encoded[:max_bytes].decode("utf-8", errors="ignore")


class Namer:
    """Hands out unique names within one export folder (or one tar set).

    Names are compared case-insensitively (macOS and Windows file systems are), and the
    first comer keeps the plain name: names depend only on the rows in id order, so a
    re-export maps every output to the same file.
    """

    def __init__(self, template: NameTemplate, *, dots: bool = True) -> None:
        self.template = template
        self._dots = dots
        self._used: set[str] = set()
        #: Next suffix to try per base name, so many equal names cost O(1) each.
        self._next: dict[str, int] = {}

    def claim(self, row: ExportOutput, ext: str) -> tuple[str, str | None]:
        """The unique name for ``row`` (with ``.ext`` unless ``ext`` is empty).

        Returns:
            The name, and the name it wanted when that one was taken (else ``None``).
        """
        base = sanitise(self.template.render(row)) or sanitise(row.ext_id) or f"job-{row.index}"
        if row.outputs_in_job > 1 and not self.template.has_k:
            base = f"{base}-{row.k}"
        if not self._dots:
            base = base.replace(".", "_")
        wanted = self._join(base, ext)
        if wanted.casefold() not in self._used:
            self._used.add(wanted.casefold())
            return wanted, None
        folded = base.casefold()
        n = self._next.get(folded, 2)
        while (used := self._join(f"{base}-{n}", ext)).casefold() in self._used:
            n += 1
        self._next[folded] = n + 1
        self._used.add(used.casefold())
        return used, wanted

    @staticmethod
    def _join(base: str, ext: str) -> str:
        return f"{base}.{ext}" if ext else base
