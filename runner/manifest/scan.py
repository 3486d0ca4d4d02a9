"""Scan a manifest: stream its lines, validate each against a route, and find duplicates.

``scan_manifest`` is the streaming core (a ``JobSpec`` or ``Problem`` at a time, never the
whole file in memory); ``check_manifest`` summarises it for ``imagerun check``.

A *key seed* makes a set of jobs its own: ``imagerun compare`` passes its comparison's name, so
a comparison's jobs never share keys with the same lines submitted elsewhere (every column of
the comparison holds every line), while re-running the same comparison yields the same keys
and adds nothing. Without a seed the key is exactly :func:`runner.manifest.keys.job_digest`.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from runner.errors import Problem, ValidationFailed
from runner.manifest.fields import RouteRules, id_problem
from runner.manifest.keys import job_digest
from runner.manifest.readers import read_records
from runner.manifest.seen import FirstSeen
from runner.manifest.sources import SourceResolver
from runner.manifest.validate import LineChecker
from runner.models import JobSpec
from runner.routes.catalog import Catalog, Route

DUPLICATE_LINE = "duplicate of line {first}: give each line an id to run both"

#: Version tag of the seeded key (the seed folded over an ``imagerun.job.v1`` digest).
SEEDED_KEY_VERSION = b"imagerun.job.v1+seed"


def seeded_digest(digest: bytes, seed: str | None) -> bytes:
    """``digest`` as is without a seed; with one, sha256 of the tag, the seed and ``digest``.

    The seed is length-prefixed, so no two (seed, digest) pairs give the same bytes.
    """
    if seed is None:
        return digest
    text = seed.encode("utf-8", "surrogatepass")
    material = b"%s\0%d\0%s%s" % (SEEDED_KEY_VERSION, len(text), text, digest)
    return hashlib.sha256(material).digest()


@dataclass(frozen=True, slots=True, kw_only=True)
class CheckReport:
    """The outcome of checking a whole manifest.

    Attributes:
        jobs: valid lines (each would become a job).
        edits: how many of those have source images.
        problems: the first ``max_problems`` problems, in file order.
        truncated: problems found beyond that cap (counted, not kept).
    """

    jobs: int
    edits: int
    problems: list[Problem]
    truncated: int = 0

    @property
    def ok(self) -> bool:
        """Whether the manifest has no problem at all."""
        return not self.problems and not self.truncated

    def raise_for_problems(self) -> None:
        """Raise ``ValidationFailed`` with the problems unless the manifest is clean."""
        if not self.ok:
            raise ValidationFailed(self.problems, truncated=self.truncated)


def scan_manifest(
    path: Path, route: Route, catalog: Catalog, *, key_seed: str | None = None
) -> Iterator[JobSpec | Problem]:
    """Stream a manifest, validating every line against ``route``.

    Args:
        path: a ``.jsonl``/``.ndjson`` or ``.csv`` manifest; relative source paths are
            resolved against its folder.
        route: the route the jobs would run on (decides accepted fields, sizes, qualities).
        catalog: model capabilities for ``size``/``quality`` checks.
        key_seed: folded into every job key (:func:`seeded_digest`); ``None``: the plain key.

    Yields:
        A ``JobSpec`` per valid line, in file order, and every ``Problem`` found (a line may
        yield several; a line with a problem yields no ``JobSpec``).
    """
    file = str(path)
    rules = RouteRules(route, catalog)
    checker = LineChecker(file, rules, SourceResolver(os.path.abspath(path.parent)))
    with FirstSeen() as keys, _Ids() as ids:
        for item in read_records(path):
            if isinstance(item, Problem):
                yield item
                continue
            line, data, read_problems = item
            problems = [*read_problems] if read_problems else []
            explicit = ids.claim(file, line, data, problems)
            fields = checker.check(line, data, problems)
            if fields is None or problems:
                yield from problems
                continue
            digest = job_digest(
                route=route.name,
                model=fields.model,
                prompt=fields.prompt,
                params=fields.params,
                images=fields.images,
                mask=fields.mask,
                explicit_id=explicit,
            )
            digest = seeded_digest(digest, key_seed)
            first = keys.add(digest, line)
            if first is not None:
                yield Problem(file, line, "", DUPLICATE_LINE.format(first=first))
                continue
            yield JobSpec(
                key=digest.hex(),
                ext_id=explicit if explicit is not None else str(line),
                line=line,
                prompt=fields.prompt,
                params=fields.params,
                images=fields.images,
                mask=fields.mask,
                metadata=fields.metadata,
            )


def check_manifest(
    path: Path, route: Route, catalog: Catalog, *, max_problems: int = 200
) -> CheckReport:
    """Validate a whole manifest and summarise it (streams; keeps at most ``max_problems``)."""
    jobs = edits = truncated = 0
    problems: list[Problem] = []
    for item in scan_manifest(path, route, catalog):
        if isinstance(item, Problem):
            if len(problems) < max_problems:
                problems.append(item)
            else:
                truncated += 1
        else:
            jobs += 1
            edits += item.is_edit
    return CheckReport(jobs=jobs, edits=edits, problems=problems, truncated=truncated)


class _Ids:
    """Job ids of one manifest: explicit ids must be unique, and must not collide with the
    default id (the line number) of a line that has none.

    Memory: explicit ids live in a ``FirstSeen``; lines using the default id are one bit each.
    """

    def __init__(self) -> None:
        self._seen = FirstSeen()
        self._defaulted = bytearray()
        self._numeric = False  # has any explicit id looked like a line number?

    def claim(
        self, file: str, line: int, data: dict[str, object], problems: list[Problem]
    ) -> str | None:
        """Register the id of ``line``; return the explicit id, or ``None`` if defaulted."""
        if "id" not in data:
            message = self._default(line)
            if message is not None:
                problems.append(Problem(file, line, "id", message))
            return None
        value = data["id"]
        message = id_problem(value)
        if message is None:
            text = str(value)
            message = self._explicit(line, text)
            if message is None:
                return text
        problems.append(Problem(file, line, "id", message))
        return None

    def _explicit(self, line: int, text: str) -> str | None:
        first = self._seen.add(_id_digest(text), line)
        if first is not None:
            return f"duplicate id, first used on line {first}"
        if text.isascii() and text.isdigit() and (text == "0" or text[0] != "0"):
            self._numeric = True
            number = int(text)
            if number < line and self._is_defaulted(number):
                return (
                    f"line {number} has no id, so {text} (its line number) is its id already; "
                    f"choose another id or give line {number} one"
                )
        return None

    def _default(self, line: int) -> str | None:
        index = line >> 3
        if index >= len(self._defaulted):
            self._defaulted.extend(bytes(max(index + 1 - len(self._defaulted), 4096)))
        self._defaulted[index] |= 1 << (line & 7)
        if self._numeric:
            first = self._seen.get(_id_digest(str(line)))
            if first is not None:
                return (
                    f"no id given, so the id is the line number {line}, which line {first} "
                    "already uses as its id; give this line an id"
                )
        return None

    def _is_defaulted(self, line: int) -> bool:
        index = line >> 3
        return index < len(self._defaulted) and bool(self._defaulted[index] & (1 << (line & 7)))

    def __enter__(self) -> _Ids:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._seen.close()


def _id_digest(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()
