"""The ``webdataset`` layout: tar shards ``OUT/<batch>-000000.tar``, ``-000001.tar``…

Each sample is ``<key>.<ext>`` (the image) followed by ``<key>.json`` (its index row), the
convention the ``webdataset`` library reads. Keys come from the name template with dots
replaced (WebDataset splits the key from the extension at the first dot). Tar headers are
reproducible (fixed owner, the output's creation time), so re-exporting an unchanged batch
yields byte-identical shards, which are then left alone. Failed jobs have no image and are
never written here.
"""

from __future__ import annotations

import io
import json
import os
import re
import tarfile
from collections.abc import Sequence
from pathlib import Path

from runner.export.files import extension
from runner.export.naming import Namer
from runner.export.report import FormatReport, Renamed, Tally
from runner.export.rows import index_row
from runner.export.sink import ExportContext, skipped
from runner.export.staging import SourceError, StagedFile, read_verified
from runner.store.exports import ExportJob, ExportOutput

SHARD_DIGITS = 6


class WebDatasetSink:
    """Writes samples into shards of ``shard_size`` samples each."""

    wants_failed = False

    def __init__(self, ctx: ExportContext) -> None:
        self.ctx = ctx
        self.tally = Tally("webdataset")
        self.namer = Namer(ctx.template, dots=False)
        self._shard: StagedFile | None = None
        self._tar: tarfile.TarFile | None = None
        self._samples = 0
        self._shards = 0

    def shard_path(self, number: int) -> Path:
        return self.ctx.out_dir / f"{self.ctx.stem}-{number:0{SHARD_DIGITS}d}.tar"

    def write_outputs(self, rows: Sequence[ExportOutput]) -> None:
        for row in rows:
            key, wanted = self.namer.claim(row, "")
            if wanted is not None:
                self.tally.rename(Renamed(id=row.ext_id, k=row.k, wanted=wanted, used=key))
            try:
                data = read_verified(self.ctx.source(row), row.sha256)
            except SourceError as exc:
                self.tally.skip(skipped(row, exc))
                continue
            tar = self._shard_for_next()
            mtime = int(row.created_at.timestamp())
            meta = json.dumps(index_row(row, self.ctx.batch), ensure_ascii=False).encode()
            _add(tar, f"{key}.{extension(row)}", data, mtime)
            _add(tar, f"{key}.json", meta, mtime)
            self._samples += 1

    def write_failed(self, rows: Sequence[ExportJob]) -> None:
        """Failed jobs have no image: WebDataset samples are images."""

    def _shard_for_next(self) -> tarfile.TarFile:
        if self._tar is not None and self._samples < self.ctx.shard_size:
            return self._tar
        self._close_shard()
        self._shard = StagedFile(self.shard_path(self._shards))
        # Closed by _close_shard (or abort): a shard spans many calls.
        self._tar = tarfile.open(  # noqa: SIM115
            fileobj=self._shard.binary(), mode="w", format=tarfile.PAX_FORMAT
        )
        self._samples = 0
        self._shards += 1
        return self._tar

    def _close_shard(self) -> None:
        if self._tar is None or self._shard is None:
            return
        self._tar.close()
        self.tally.count(self._shard.commit())
        self.tally.paths.append(self._shard.target)
        self._tar = self._shard = None

    def finish(self) -> FormatReport:
        self._close_shard()
        self._remove_stale()
        return self.tally.freeze()

    def _remove_stale(self) -> None:
        """Delete shards beyond the last one, left by an earlier export with more shards."""
        pattern = re.compile(rf"{re.escape(self.ctx.stem)}-(\d{{{SHARD_DIGITS}}})\.tar")
        for entry in os.scandir(self.ctx.out_dir):
            match = pattern.fullmatch(entry.name)
            if match and int(match.group(1)) >= self._shards and entry.is_file():
                os.unlink(entry.path)
                self.tally.removed.append(self.ctx.out_dir / entry.name)

    def abort(self) -> None:
        if self._tar is not None:
            self._tar.close()
        if self._shard is not None:
            self._shard.discard()


def _add(tar: tarfile.TarFile, name: str, data: bytes, mtime: int) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = mtime
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))
