"""Export for asset pipelines: a finished batch as files, indexes, shards or a gallery.

Layouts under ``OUT`` (``<batch>`` is the batch name, made safe as a file name):

- ``files``: ``<batch>/<name>.<ext>`` (names from a template, default the manifest id, with
  ``-<k>`` when a job has several outputs) plus ``<batch>/results.jsonl``;
- ``jsonl`` / ``csv``: ``<batch>.jsonl`` / ``<batch>.csv``, the index alone;
- ``parquet``: ``<batch>.parquet``, the index, optionally with the image bytes;
- ``webdataset``: ``<batch>-000000.tar``… of ``<key>.<ext>`` + ``<key>.json`` samples;
- ``html``: ``<batch>/index.html`` with thumbnails in ``<batch>/thumbs/``.

Every index row has the columns of :data:`runner.export.rows.COLUMNS`. Re-exporting is
incremental: files whose content would not change are not rewritten.
"""

from runner.export.batch import FORMATS, export_batch
from runner.export.report import ExportReport, FormatReport, Renamed, Skipped

__all__ = [
    "FORMATS",
    "ExportReport",
    "FormatReport",
    "Renamed",
    "Skipped",
    "export_batch",
]
