"""What an export did, per format: files written, unchanged, skipped, renamed, removed."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: At most this many renamed/skipped examples are kept per format; totals are always exact.
MAX_EXAMPLES = 1000


@dataclass(frozen=True, slots=True, kw_only=True)
class Renamed:
    """An output whose name collided with an earlier one and got a ``-2``, ``-3``… suffix."""

    id: str
    k: int
    wanted: str
    used: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Skipped:
    """An output that could not be exported (its image is missing or does not match)."""

    id: str
    k: int | None
    path: str | None
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class FormatReport:
    """The result of one format.

    ``written`` and ``unchanged`` count files: re-exporting an unchanged batch writes none.
    """

    format: str
    written: int
    unchanged: int
    skipped: int
    #: The top-level files or folders this format produced.
    paths: tuple[Path, ...]
    renamed: tuple[Renamed, ...] = ()
    renamed_total: int = 0
    skips: tuple[Skipped, ...] = ()
    #: Files of an earlier export that this one made obsolete (e.g. surplus tar shards).
    removed: tuple[Path, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "written": self.written,
            "unchanged": self.unchanged,
            "skipped": self.skipped,
            "paths": [str(p) for p in self.paths],
            "renamed_total": self.renamed_total,
            "renamed": [
                {"id": r.id, "k": r.k, "wanted": r.wanted, "used": r.used} for r in self.renamed
            ],
            "skips": [
                {"id": s.id, "k": s.k, "path": s.path, "reason": s.reason} for s in self.skips
            ],
            "removed": [str(p) for p in self.removed],
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class ExportReport:
    """The result of :func:`runner.export.export_batch`."""

    batch_id: str
    batch_name: str
    out_dir: Path
    #: Output rows read from the store, and failed/unknown jobs read (when any format wanted them).
    outputs: int
    failed: int
    formats: dict[str, FormatReport]
    #: Edit outputs flagged ``ignored_source`` or ``unchanged``.
    flagged_edits: int = 0
    #: The sha256 of the batch's first few outputs (an index page's thumbnails).
    samples: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "batch_id": self.batch_id,
            "batch_name": self.batch_name,
            "out_dir": str(self.out_dir),
            "outputs": self.outputs,
            "failed": self.failed,
            "flagged_edits": self.flagged_edits,
            "formats": {name: rep.to_json() for name, rep in self.formats.items()},
        }


@dataclass(slots=True)
class Tally:
    """A format's counters while it runs; :meth:`freeze` makes the report."""

    format: str
    written: int = 0
    unchanged: int = 0
    skipped: int = 0
    renamed_total: int = 0
    paths: list[Path] = field(default_factory=list)
    renamed: list[Renamed] = field(default_factory=list)
    skips: list[Skipped] = field(default_factory=list)
    removed: list[Path] = field(default_factory=list)

    def count(self, written: bool) -> None:
        """Count one file that was either (re)written or found unchanged."""
        if written:
            self.written += 1
        else:
            self.unchanged += 1

    def rename(self, item: Renamed) -> None:
        self.renamed_total += 1
        if len(self.renamed) < MAX_EXAMPLES:
            self.renamed.append(item)

    def skip(self, item: Skipped) -> None:
        self.skipped += 1
        if len(self.skips) < MAX_EXAMPLES:
            self.skips.append(item)

    def freeze(self) -> FormatReport:
        return FormatReport(
            format=self.format,
            written=self.written,
            unchanged=self.unchanged,
            skipped=self.skipped,
            paths=tuple(self.paths),
            renamed=tuple(self.renamed),
            renamed_total=self.renamed_total,
            skips=tuple(self.skips),
            removed=tuple(self.removed),
        )
