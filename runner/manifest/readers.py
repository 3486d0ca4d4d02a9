"""Streaming manifest readers: JSONL and CSV to one JSON-typed ``dict`` per job line.

Both read the file lazily, one physical line at a time, so memory does not grow with the file.
Line numbers are physical lines (a CSV record spanning several lines gets its first). Problems
that make a line unusable (malformed JSON, a CSV row of the wrong width, …) and file-level
problems (missing, empty, unknown extension, bad CSV header) are yielded as ``Problem``s; a
file-level problem uses line 0, a CSV header problem line 1.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any, NamedTuple

from runner.errors import Problem
from runner.manifest.fields import KNOWN_FIELDS, type_name, unknown_field_message

FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv"}
CSV_IMAGE_SEPARATOR = "|"
_BOM = b"\xef\xbb\xbf"
_INT_FIELDS = frozenset({"n", "output_compression"})
_INT = re.compile(r"^[+-]?[0-9]+$")


class Record(NamedTuple):
    """One job line as read: its physical line number, fields, and reading problems."""

    line: int
    data: dict[str, Any]
    problems: tuple[Problem, ...] = ()


def _emptiness(handle: IO[bytes]) -> str:
    try:
        blank = handle.tell() == 0
    except OSError:  # a pipe cannot tell
        blank = False
    return "the file is empty" if blank else "the file has no job lines"


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


# NaN/Infinity are accepted by Python's json but are not JSON, and would poison the job key.
_DECODER = json.JSONDecoder(parse_constant=_reject_constant)


def read_records(path: Path) -> Iterator[Record | Problem]:
    """Stream a manifest's job lines; the format comes from the file extension.

    Yields:
        A ``Record`` per non-blank line that parsed into an object, and a ``Problem`` per line
        (or file) that could not be read.
    """
    file = str(path)
    kind = FORMATS.get(path.suffix.lower())
    if kind is None:
        known = ", ".join(FORMATS)
        yield Problem(file, 0, "", f"unknown manifest format {path.suffix!r}; use {known}")
        return
    try:
        handle = path.open("rb")
    except FileNotFoundError:
        yield Problem(file, 0, "", "file not found")
        return
    except IsADirectoryError:
        yield Problem(file, 0, "", "is a directory, not a manifest file")
        return
    except OSError as exc:
        yield Problem(file, 0, "", f"cannot read: {exc.strerror or exc}")
        return
    with handle:
        reader = _jsonl(handle, file) if kind == "jsonl" else _csv(handle, file)
        first = next(reader, None)
        if first is not None:
            yield first
            yield from reader
        else:
            yield Problem(file, 0, "", f"no jobs: {_emptiness(handle)}")


def _decode(text: str) -> Any:
    """``json.loads`` without its two whitespace regex passes (a hot path at 1M lines)."""
    if text[0].isspace():
        return _DECODER.decode(text)
    value, end = _DECODER.raw_decode(text)
    if end != len(text) and not text[end:].isspace():
        raise json.JSONDecodeError("Extra data", text, end)
    return value


def _jsonl(lines: Iterable[bytes], file: str) -> Iterator[Record | Problem]:
    decode = _decode
    for number, raw in enumerate(lines, 1):
        if number == 1 and raw.startswith(_BOM):
            raw = raw[len(_BOM) :]
        if not raw or raw.isspace():
            continue
        try:
            data = decode(raw.decode("utf-8"))
        except UnicodeDecodeError as exc:
            yield Problem(file, number, "", f"not valid UTF-8 (byte {exc.start + 1})")
            continue
        except json.JSONDecodeError as exc:
            yield Problem(file, number, "", f"invalid JSON: {exc.msg} (column {exc.colno})")
            continue
        except ValueError as exc:
            yield Problem(file, number, "", f"invalid JSON: {exc}")
            continue
        if type(data) is not dict:
            yield Problem(file, number, "", f"expected a JSON object, found {type_name(data)}")
            continue
        yield Record(number, data)


class _Lines:
    """Decodes physical lines for ``csv.reader`` and counts them; notes undecodable ones."""

    def __init__(self, raw: Iterable[bytes]) -> None:
        self._raw = iter(raw)
        self.number = 0
        self.last_bad = 0  # the last line that was not UTF-8 (0: none yet)

    def __iter__(self) -> Iterator[str]:
        return self

    def __next__(self) -> str:
        raw = next(self._raw)
        self.number += 1
        if self.number == 1 and raw.startswith(_BOM):
            raw = raw[len(_BOM) :]
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            self.last_bad = self.number
            return raw.decode("utf-8", "replace")


def _csv(raw: Iterable[bytes], file: str) -> Iterator[Record | Problem]:
    lines = _Lines(raw)
    rows = csv.reader(lines, strict=True)
    columns: list[str | None] | None = None
    while True:
        start = lines.number + 1
        try:
            row = next(rows)
        except StopIteration:
            return
        except csv.Error as exc:
            hint = "; large data: URLs fit in JSONL, not CSV" if "field limit" in str(exc) else ""
            yield Problem(file, start, "", f"malformed CSV: {exc}{hint}")
            continue
        if not any(cell.strip() for cell in row):
            continue
        if lines.last_bad >= start:
            yield Problem(file, start, "", f"not valid UTF-8 (line {lines.last_bad})")
            continue
        if columns is None:
            columns, problems = _header(row, file, start)
            yield from problems
            if "prompt" not in columns:
                return
            continue
        yield _row(row, columns, file, start)


def _header(row: list[str], file: str, line: int) -> tuple[list[str | None], list[Problem]]:
    """Map header cells to field names (``None`` for unusable columns) and list problems."""
    columns: list[str | None] = []
    problems: list[Problem] = []
    for cell in row:
        name = cell.strip()
        if name not in KNOWN_FIELDS:
            message = unknown_field_message(name) if name else "empty column name"
            problems.append(Problem(file, line, name, f"unknown column: {message}"))
            columns.append(None)
        elif name in columns:
            problems.append(Problem(file, line, name, "column appears twice in the header"))
            columns.append(None)
        else:
            columns.append(name)
    if "prompt" not in columns:
        problems.append(Problem(file, line, "prompt", "no prompt column in the header"))
    return columns, problems


def _row(row: list[str], columns: list[str | None], file: str, line: int) -> Record | Problem:
    if len(row) != len(columns):
        return Problem(file, line, "", f"row has {len(row)} cells; the header has {len(columns)}")
    data: dict[str, Any] = {}
    problems: tuple[Problem, ...] = ()
    for name, cell in zip(columns, row, strict=True):
        if name is None:
            continue
        if name == "prompt":
            if cell:
                data[name] = cell
            continue
        cell = cell.strip()
        if not cell:
            continue
        if name == "images":
            data[name] = [part.strip() for part in cell.split(CSV_IMAGE_SEPARATOR)]
        elif name in _INT_FIELDS:
            data[name] = int(cell) if _INT.match(cell) else cell
        elif name == "metadata":
            try:
                data[name] = _DECODER.decode(cell)
            except ValueError as exc:
                message = f"expected a JSON object, found text that is not JSON ({exc})"
                problems = (*problems, Problem(file, line, name, message))
        else:
            data[name] = cell
    return Record(line, data, problems)
