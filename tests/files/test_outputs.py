"""The output record: built in one place, carrying what was asked against what came."""

from __future__ import annotations

from runner.files.images import ImageInfo, Mismatch
from runner.files.layout import OutputName
from runner.files.outputs import OutputRecord, mismatch_summary, output_record

NAME = OutputName(batch_id="b-1", job_id=7, k=1, format="png")
INFO = ImageInfo(format="png", width=96, height=64)


def test_a_record_names_its_file_and_image() -> None:
    record = output_record(NAME, INFO, sha256="ab" * 32, size=123, attempt_id="ir-1", worker_id="w")
    assert (record.job_id, record.batch_id, record.k, record.path) == (7, "b-1", 1, "b-1/7-1.png")
    assert (record.width, record.height, record.format, record.bytes) == (96, 64, "png", 123)
    assert (record.attempt_id, record.worker_id, record.sha256) == ("ir-1", "w", "ab" * 32)
    assert (record.asked, record.got, record.mismatch) == (None, None, None)
    assert record.created_at.tzinfo is not None


def test_a_mismatch_is_kept_on_the_record() -> None:
    wrong = Mismatch(asked="1024x1024", got="96x64")
    record = output_record(
        NAME, INFO, sha256="0" * 64, size=1, attempt_id="ir-1", worker_id=None, mismatch=wrong
    )
    assert (record.asked, record.got) == ("1024x1024", "96x64")
    assert record.mismatch == wrong


def test_the_summary_names_each_image_not_as_asked() -> None:
    def record(k: int, mismatch: Mismatch | None) -> OutputRecord:
        name = OutputName(batch_id="b", job_id=1, k=k, format="png")
        return output_record(
            name, INFO, sha256="0" * 64, size=1, attempt_id="a", worker_id=None, mismatch=mismatch
        )

    fine = record(0, None)
    small = record(1, Mismatch(asked="1024x1024", got="96x64"))
    assert mismatch_summary([fine]) is None
    assert mismatch_summary([fine, small]) == "image 1: asked for 1024x1024, got 96x64"
