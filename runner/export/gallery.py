"""The ``html`` layout: ``OUT/<batch>/index.html`` with thumbnails in ``OUT/<batch>/thumbs/``.

The page sits in the same folder as the ``files`` layout, so when both are exported each
thumbnail links to its full image. Failed and unknown jobs always get a card (with their
error): a gallery is where a person looks at what went wrong. The page is streamed card by
card; thumbnails of a page of rows are made in parallel (Pillow releases the GIL).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from runner.export.edits import first_source, source_bytes, source_key
from runner.export.files import extension
from runner.export.gallery_page import TAIL, failed_card, head, output_card
from runner.export.naming import Namer
from runner.export.report import FormatReport, Tally
from runner.export.sink import ExportContext, skipped
from runner.export.staging import SourceError, StagedFile
from runner.export.thumbs import make_thumbnail, thumb_name
from runner.store.exports import ExportJob, ExportOutput

PAGE = "index.html"
THUMBS = "thumbs"


class GallerySink:
    """Writes the gallery page and its thumbnails."""

    wants_failed = True

    def __init__(self, ctx: ExportContext) -> None:
        self.ctx = ctx
        self.thumbs = ctx.folder / THUMBS
        self.thumbs.mkdir(parents=True, exist_ok=True)
        self.page = StagedFile(ctx.folder / PAGE)
        self.tally = Tally("html", paths=[self.page.target])
        # Mirrors the files layout's naming (same template, same rows, same order).
        self.namer = Namer(ctx.template) if ctx.with_files else None
        self._pool = ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1))
        self._out = self.page.text()
        self._out.write(head(ctx.batch))

    def write_outputs(self, rows: Sequence[ExportOutput]) -> None:
        links = [self.namer.claim(r, extension(r))[0] if self.namer else None for r in rows]
        made = list(self._pool.map(self._thumbnail, rows))
        sources = list(self._pool.map(self._source_thumbnail, rows))
        for row, link, (written, problem), source in zip(rows, links, made, sources, strict=True):
            if problem is None:
                self.tally.count(bool(written))
            else:
                self.tally.skip(skipped(row, problem))
            self._out.write(
                output_card(
                    row,
                    thumb=thumb_name(row.sha256) if problem is None else None,
                    link=link if problem is None else None,
                    problem="image unavailable" if problem else None,
                    source_thumb=source,
                )
            )

    def _thumbnail(self, row: ExportOutput) -> tuple[bool | None, SourceError | None]:
        try:
            return make_thumbnail(self.ctx.source(row), self.thumbs / thumb_name(row.sha256)), None
        except SourceError as exc:
            return None, exc

    def _source_thumbnail(self, row: ExportOutput) -> str | None:
        """An edit's first source as a thumbnail (``None``: a generation, or not readable)."""
        source = first_source(row)
        what = None if source is None else source_bytes(source)
        if source is None or what is None:
            return None
        name = "src-" + thumb_name(source_key(source))
        try:
            make_thumbnail(what, self.thumbs / name)
        except SourceError:
            return None
        return name

    def write_failed(self, rows: Sequence[ExportJob]) -> None:
        self._out.writelines(failed_card(row) for row in rows)

    def finish(self) -> FormatReport:
        self._pool.shutdown()
        self._out.write(TAIL)
        self.tally.count(self.page.commit())
        return self.tally.freeze()

    def abort(self) -> None:
        self._pool.shutdown(cancel_futures=True)
        self.page.discard()
