"""An adopted orphan (images a dead worker wrote but never recorded) is priced with the job's
inputs: its source images and its mask, as a sent request would have been.

Hand figures (openai route, gpt-image-2, no usage → typical): medium 1024x1024 is 0.053 per
image; PROMPT (40 characters) is 10 text tokens × $5/M = 0.00005; each input image is 3050
tokens × $8/M = 0.0244.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from PIL import Image

from runner.files.adopt import JobFiles, adopt_orphans
from runner.files.layout import output_path
from runner.files.outputs import OutputRecord
from runner.models import JobState
from runner.pricing import load_price_book
from runner.routes import load_catalog

pytestmark = pytest.mark.anyio

PROMPT = "Two red foxes asleep in fresh snow, dawn"
BATCH = "b-adopt"


@dataclass(frozen=True, slots=True)
class _Batch:
    id: str
    route: str


@dataclass(slots=True)
class _Store:
    """The three adoption verbs over a fixed set of jobs; keeps what ``adopt`` was given."""

    jobs: dict[int, JobFiles]
    adopted: dict[int, tuple[int, float]] = field(default_factory=dict)

    async def recorded_paths(self, batch_ids: Sequence[str]) -> set[str]:
        return set()

    async def jobs_for_files(self, job_ids: Sequence[int]) -> Mapping[int, JobFiles]:
        return {i: self.jobs[i] for i in job_ids if i in self.jobs}

    async def adopt(
        self,
        job_id: int,
        attempt_id: str,
        files: Sequence[OutputRecord],
        expected_usd: float,
        *,
        refused: str | None = None,
    ) -> bool:
        self.adopted[job_id] = (len(files), expected_usd)
        return True


def _in_flight(job_id: int, *, images: int, mask: bool) -> JobFiles:
    return JobFiles(
        job_id=job_id,
        batch_id=BATCH,
        state=JobState.UNKNOWN,
        prompt=PROMPT,
        params={"quality": "medium", "size": "1024x1024"},
        images=images,
        mask=mask,
        recorded=frozenset(),
        lost_attempt=f"ir-lost-{job_id}",
    )


def _orphan(data_dir: Path, job_id: int) -> None:
    path = data_dir / output_path(BATCH, job_id, 0, "png")
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (10, 20, 30)).save(buffer, format="PNG")
    path.write_bytes(buffer.getvalue())


async def test_an_adopted_edit_is_priced_with_its_source_image_and_mask(tmp_path: Path) -> None:
    """Edit with a mask: 0.053 + 0.00005 + 2 × 0.0244; a generation: 0.053 + 0.00005."""
    store = _Store(
        jobs={
            1: _in_flight(1, images=1, mask=True),
            2: _in_flight(2, images=1, mask=False),
            3: _in_flight(3, images=0, mask=False),
        }
    )
    for job_id in store.jobs:
        _orphan(tmp_path, job_id)

    report = await adopt_orphans(
        store,
        tmp_path,
        [_Batch(id=BATCH, route="openai")],
        load_catalog(environ={}),
        load_price_book(),
    )

    assert report.adopted_jobs == 3
    assert store.adopted[1] == (1, pytest.approx(0.10185, abs=1e-9))
    assert store.adopted[2] == (1, pytest.approx(0.07745, abs=1e-9))
    assert store.adopted[3] == (1, pytest.approx(0.05305, abs=1e-9))
