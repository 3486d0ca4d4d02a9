"""``export_batch``: stream a batch out of the store once, into every requested format.

One reader task pages through the store (outputs in job order, then failed/unknown jobs when
a format wants them) while the formats write the previous page, each in a worker thread of
its own. At most two pages are in memory, whatever the size of the batch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import aclosing
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import anyio
from anyio.abc import ObjectSendStream

from runner.abc import Exports
from runner.errors import UsageError
from runner.export.edits import EditScorer, FidelityLedger, changed, route_thresholds
from runner.export.files import FilesSink
from runner.export.gallery import GallerySink
from runner.export.index import CsvSink, JsonlSink
from runner.export.naming import NameTemplate, sanitise
from runner.export.parquet import ParquetSink
from runner.export.report import ExportReport
from runner.export.sink import ExportContext, Sink
from runner.export.webdataset import WebDatasetSink
from runner.routes import Catalog
from runner.store.exports import ExportJob, ExportOutput
from runner.store.records import BatchInfo

#: Every export format, by the name ``--format`` takes.
FORMATS: dict[str, Callable[[ExportContext], Sink]] = {
    "files": FilesSink,
    "jsonl": JsonlSink,
    "csv": CsvSink,
    "parquet": ParquetSink,
    "webdataset": WebDatasetSink,
    "html": GallerySink,
}
#: Formats that read the image files themselves (``parquet`` only with ``embed``).
_READS_IMAGES = frozenset({"files", "webdataset", "html"})

Progress = Callable[[int, int], None]


@dataclass(frozen=True, slots=True)
class _Failed:
    rows: list[ExportJob]


#: How many outputs' hashes an export report keeps as samples.
SAMPLES = 4


@dataclass(slots=True)
class _Counts:
    outputs: int = 0
    failed: int = 0
    flagged: int = 0
    samples: list[str] = field(default_factory=list)

    def add(self, page: _Page) -> None:
        if isinstance(page, _Failed):
            self.failed += len(page.rows)
            return
        self.outputs += len(page)
        self.flagged += sum(1 for r in page if r.edit_flag not in (None, "ok"))
        self.samples += [r.sha256 for r in page[: SAMPLES - len(self.samples)]]


_Page = list[ExportOutput] | _Failed
_R = TypeVar("_R")


async def export_batch(
    store: Exports,
    batch: BatchInfo,
    *,
    data_dir: Path,
    out_dir: Path,
    formats: Sequence[str],
    name_template: str = "{id}",
    include_failed: bool = False,
    embed: bool = False,
    shard_size: int = 1000,
    progress: Progress | None = None,
    catalog: Catalog | None = None,
) -> ExportReport:
    """Export ``batch`` to ``out_dir`` in each of ``formats``.

    Args:
        store: the store (any object with the :class:`runner.abc.Exports` queries).
        batch: the batch to export.
        data_dir: the data directory its outputs' paths are relative to.
        out_dir: where to write; created if missing.
        formats: names from :data:`FORMATS`.
        name_template: file names (``files``) and sample keys (``webdataset``); see
            :mod:`runner.export.naming`.
        include_failed: add failed and unknown jobs to the indexes (``files``' results.jsonl,
            ``jsonl``, ``csv``, ``parquet``). The gallery always shows them.
        embed: add the image bytes to the Parquet file (an ``image`` column).
        shard_size: samples per WebDataset shard.
        progress: called as ``progress(rows_done, rows_total)`` after each page.
        catalog: the routes (their thresholds flag the edits' fidelity; default thresholds).

    Returns:
        What each format wrote, left unchanged, skipped and renamed.

    Raises:
        UsageError: an unknown format, a bad template or shard size, or no data directory.
    """
    wanted = _check_formats(formats)
    if shard_size < 1:
        raise UsageError(f"shard size must be at least 1, not {shard_size}")
    if (_READS_IMAGES.intersection(wanted) or (embed and "parquet" in wanted)) and not (
        await anyio.Path(data_dir).is_dir()
    ):
        raise UsageError(f"data directory not found: {data_dir} (see --data / IMAGERUN_DATA)")
    ctx = ExportContext(
        batch=batch,
        data_dir=Path(data_dir),
        out_dir=Path(out_dir),
        stem=sanitise(batch.name) or batch.id,
        template=NameTemplate(name_template),
        include_failed=include_failed,
        embed=embed,
        shard_size=shard_size,
        with_files="files" in wanted,
    )
    await anyio.Path(ctx.out_dir).mkdir(parents=True, exist_ok=True)
    route = catalog.routes.get(batch.route) if catalog else None
    with EditScorer(route_thresholds(route), ctx.data_dir) as scorer:
        return await _run(store, ctx, wanted, progress, scorer)


async def _run(
    store: Exports,
    ctx: ExportContext,
    wanted: list[str],
    progress: Progress | None,
    scorer: EditScorer,
) -> ExportReport:
    sinks: dict[str, Sink] = {}
    try:
        for name in wanted:
            sinks[name] = await anyio.to_thread.run_sync(FORMATS[name], ctx)
        try:
            counts = await _stream(store, ctx.batch.id, list(sinks.values()), progress, scorer)
        except BaseExceptionGroup as group:
            raise _sole(group) from None
        reports = {}
        for name, sink in sinks.items():
            reports[name] = await anyio.to_thread.run_sync(sink.finish)
    except BaseException:
        # No sink call is running here: thread calls are not abandoned on cancellation.
        for sink in sinks.values():
            sink.abort()
        raise
    return ExportReport(
        batch_id=ctx.batch.id,
        batch_name=ctx.batch.name,
        out_dir=ctx.out_dir,
        outputs=counts.outputs,
        failed=counts.failed,
        formats=reports,
        flagged_edits=counts.flagged,
        samples=tuple(counts.samples),
    )


def _sole(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The one error inside (nested) task-group wrappers, or the group when there are several.

    Callers then see the ``OSError`` or ``StoreError`` that stopped the export, not a group.
    """
    leaves: list[BaseException] = []
    pending: list[BaseException] = [group]
    while pending:
        item = pending.pop()
        if isinstance(item, BaseExceptionGroup):
            pending.extend(item.exceptions)
        else:
            leaves.append(item)
    return leaves[0] if len(leaves) == 1 else group


def _check_formats(formats: Sequence[str]) -> list[str]:
    wanted = list(dict.fromkeys(f.strip().lower() for f in formats))
    unknown = [f for f in wanted if f not in FORMATS]
    if unknown or not wanted:
        raise UsageError(
            f"unknown export format {', '.join(map(repr, unknown)) or '(none given)'}; "
            f"choose from {', '.join(FORMATS)}"
        )
    return wanted


async def _stream(
    store: Exports,
    batch_id: str,
    sinks: list[Sink],
    progress: Progress | None,
    scorer: EditScorer,
) -> _Counts:
    need_failed = any(s.wants_failed for s in sinks)
    total = await store.count_export(batch_id, include_failed=need_failed)
    counts = _Counts()
    if progress is not None:
        progress(0, total)
    send, receive = anyio.create_memory_object_stream[_Page](1)
    async with anyio.create_task_group() as tg:
        tg.start_soon(_read, store, batch_id, need_failed, send)
        async with receive:
            async for page in receive:
                if not isinstance(page, _Failed):
                    page = await _scored(store, scorer, page)
                async with anyio.create_task_group() as writers:
                    for sink in sinks:
                        if isinstance(page, _Failed):
                            if sink.wants_failed:
                                writers.start_soon(_in_thread, sink.write_failed, page.rows)
                        else:
                            writers.start_soon(_in_thread, sink.write_outputs, page)
                counts.add(page)
                if progress is not None:
                    progress(counts.outputs + counts.failed, total)
    return counts


async def _scored(store: Exports, scorer: EditScorer, page: list[ExportOutput]) -> _Page:
    scored = await anyio.to_thread.run_sync(scorer.score, page)
    if isinstance(store, FidelityLedger) and (fresh := changed(page, scored)):
        await store.record_fidelity(fresh)
    return scored


async def _in_thread(call: Callable[[_R], None], rows: _R) -> None:
    await anyio.to_thread.run_sync(call, rows)


async def _read(
    store: Exports, batch_id: str, need_failed: bool, send: ObjectSendStream[_Page]
) -> None:
    async with send:
        async with aclosing(store.iter_outputs(batch_id)) as outputs:
            async for page in outputs:
                await send.send(page)
        if need_failed:
            async with aclosing(store.iter_failed(batch_id)) as failed:
                async for jobs in failed:
                    await send.send(_Failed(jobs))
