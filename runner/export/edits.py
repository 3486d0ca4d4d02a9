"""Edit rows: where an edit's first source is, and the fidelity of its output to it.

A source given as a local path or a ``data:`` URL is read here; one given by ``http(s)://``
URL is not fetched (an export sends nothing), so its edit has no score. A score is kept in the
store once made (:class:`FidelityLedger`); a stored score is not made again. Scores of a page are
computed in parallel threads (Pillow and numpy release the GIL); each source is decoded from
disk at most once per page.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Protocol, Self, runtime_checkable

from runner.files.fidelity import FidelityError, FidelityThresholds, edit_fidelity
from runner.files.images import ImageError, decode_b64
from runner.models import SourceImage
from runner.routes import Route
from runner.store.exports import ExportOutput


def route_thresholds(route: Route | None) -> FidelityThresholds:
    """The edit-fidelity thresholds configured for ``route`` (the defaults for none)."""
    if route is None:
        return FidelityThresholds()
    return FidelityThresholds(
        ignored_below=route.fidelity_ignored_below,
        unchanged_above=route.fidelity_unchanged_above,
    )


def first_source(row: ExportOutput) -> SourceImage | None:
    """The source an edit's output is scored against (``None`` for a generation)."""
    return row.images[0] if row.images else None


def source_key(source: SourceImage) -> str:
    """A stable name for a source's thumbnail: its content hash, else a hash of its reference."""
    return source.sha256 or hashlib.sha256(source.ref.encode()).hexdigest()


def source_bytes(source: SourceImage) -> bytes | Path | None:
    """What to decode for ``source``: a local file, the bytes of a data URL, or ``None`` (URL)."""
    if source.kind == "path":
        return Path(source.ref)
    if source.kind == "data":
        try:
            return decode_b64(source.ref.partition(",")[2])
        except ImageError:
            return None
    return None


@runtime_checkable
class FidelityLedger(Protocol):
    """A store that keeps edit scores (``status`` then counts the flagged edits)."""

    async def record_fidelity(self, scored: Sequence[ExportOutput]) -> None:
        """Keep the ``edit_fidelity`` and ``edit_flag`` of ``scored``."""


def changed(before: Sequence[ExportOutput], after: Sequence[ExportOutput]) -> list[ExportOutput]:
    """The rows of ``after`` whose score or flag differs from the same row ``before``."""
    return [
        new
        for old, new in zip(before, after, strict=True)
        if (old.edit_fidelity, old.edit_flag) != (new.edit_fidelity, new.edit_flag)
    ]


class EditScorer:
    """Fills ``edit_fidelity`` and ``edit_flag`` on the edit rows of export pages.

    Args:
        thresholds: where a score flags ``ignored_source`` or ``unchanged``.
        data_dir: the directory output paths are relative to.
    """

    def __init__(self, thresholds: FidelityThresholds, data_dir: Path) -> None:
        self.thresholds = thresholds
        self.data_dir = data_dir
        self._pool = ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1))

    def score(self, rows: Sequence[ExportOutput]) -> list[ExportOutput]:
        """``rows`` with each edit's score and flag (unscorable edits keep ``None``)."""
        if not any(r.images for r in rows):
            return list(rows)
        return list(self._pool.map(self._one, rows))

    def _one(self, row: ExportOutput) -> ExportOutput:
        if row.edit_fidelity is not None:
            # Scored before: the stored score stands, its flag follows today's thresholds.
            flag = self.thresholds.flag(row.edit_fidelity).value
            return row if flag == row.edit_flag else dataclasses.replace(row, edit_flag=flag)
        source = first_source(row)
        what = None if source is None else source_bytes(source)
        relative = os.path.normpath(row.path)
        if what is None or os.path.isabs(relative) or relative.startswith(".."):
            return row
        try:
            found = edit_fidelity(what, self.data_dir / relative, self.thresholds)
        except FidelityError:
            return row
        return dataclasses.replace(row, edit_fidelity=found.score, edit_flag=found.flag.value)

    def close(self) -> None:
        """Stop the scoring threads."""
        self._pool.shutdown(cancel_futures=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
