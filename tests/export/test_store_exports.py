"""The store's export queries: every output once, in job order, paged in bounded pieces."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from runner.store.exports import ExportJob, ExportOutput

from .builders import ExportStore, build_sample

pytestmark = pytest.mark.anyio


@pytest.fixture
async def any_store(db_url: str) -> AsyncIterator[ExportStore]:
    """The export queries on SQLite and on PostgreSQL."""
    store = await ExportStore.open(db_url)
    assert isinstance(store, ExportStore)  # open() is typed as returning a plain Store
    try:
        yield store
    finally:
        await store.close()


async def outputs_of(store: ExportStore, batch_id: str, page_size: int) -> list[list[ExportOutput]]:
    return [page async for page in store.iter_outputs(batch_id, page_size=page_size)]


async def failed_of(store: ExportStore, batch_id: str, page_size: int) -> list[list[ExportJob]]:
    return [page async for page in store.iter_failed(batch_id, page_size=page_size)]


async def test_outputs_come_in_job_then_k_order_with_job_positions(
    any_store: ExportStore, tmp_path: Path
) -> None:
    batch = await build_sample(any_store, tmp_path)

    [page] = await outputs_of(any_store, batch.id, 1000)

    assert [(o.ext_id, o.index, o.k, o.outputs_in_job) for o in page] == [
        ("cat-1", 1, 0, 1),
        ("dog-2", 2, 0, 3),
        ("dog-2", 2, 1, 3),
        ("dog-2", 2, 2, 3),
        ("evil", 3, 0, 1),
        ("cat-dup", 4, 0, 1),
    ]
    assert [o.format for o in page[1:4]] == ["png", "png", "jpeg"]


async def test_an_output_carries_its_own_request_and_the_jobs_cost_over_all_attempts(
    any_store: ExportStore, tmp_path: Path
) -> None:
    """cat-1 took two requests: $0.01 charged for a 502, then $0.03 for the image."""
    batch = await build_sample(any_store, tmp_path)

    [page] = await outputs_of(any_store, batch.id, 1000)
    cat = page[0]

    assert (cat.attempts, cat.state, cat.last_outcome) == (2, "succeeded", "ok")
    assert (cat.route, cat.provider, cat.model) == ("sandbox-laozhang", "laozhang", "gpt-image-2")
    assert cat.request_id is not None
    assert cat.provider_request_id == f"prov-{cat.request_id[-6:]}"
    assert cat.gateway_request_id == f"gw-{cat.request_id[-6:]}"
    assert (cat.expected_usd, cat.charge_status) == (0.03, "charged")
    assert cat.job_expected_usd == pytest.approx(0.04)
    assert cat.metadata == {"sku": "SKU-1", "tags": ["cat", "ü"]}
    assert cat.params == {"size": "1024x1024"}


async def test_small_pages_yield_the_same_rows_and_never_split_a_job(
    any_store: ExportStore, tmp_path: Path
) -> None:
    batch = await build_sample(any_store, tmp_path)

    whole = [o for page in await outputs_of(any_store, batch.id, 1000) for o in page]
    pages = await outputs_of(any_store, batch.id, 2)

    assert [o for page in pages for o in page] == whole
    # Pages are pages of jobs: dog-2's three outputs travel together.
    assert [[o.ext_id for o in page] for page in pages] == [
        ["cat-1", "dog-2", "dog-2", "dog-2"],
        ["evil", "cat-dup"],
    ]


async def test_failed_and_unknown_jobs_come_with_their_last_error_and_request(
    any_store: ExportStore, tmp_path: Path
) -> None:
    batch = await build_sample(any_store, tmp_path)

    [broken, limbo] = [j for page in await failed_of(any_store, batch.id, 3) for j in page]

    assert (broken.ext_id, broken.index, broken.state) == ("broken", 5, "failed")
    assert broken.last_outcome == "invalid_request"
    assert broken.last_error == "Invalid size <b>9x9</b> (request id: gw-123)"
    assert broken.request_id is not None
    assert broken.provider_request_id == f"prov-{broken.request_id[-6:]}"
    assert (broken.charge_status, broken.job_expected_usd) == ("not_charged", 0.0)
    assert (limbo.ext_id, limbo.index, limbo.state, limbo.last_outcome) == (
        "limbo",
        6,
        "unknown",
        "lost",
    )
    assert limbo.charge_status == "unknown"


async def test_counts_match_what_the_iterators_yield(
    any_store: ExportStore, tmp_path: Path
) -> None:
    batch = await build_sample(any_store, tmp_path)

    assert await any_store.count_export(batch.id) == 6
    assert await any_store.count_export(batch.id, include_failed=True) == 8


async def test_another_batch_is_not_mixed_in(any_store: ExportStore, tmp_path: Path) -> None:
    first = await build_sample(any_store, tmp_path / "a", name="first")
    second = await build_sample(any_store, tmp_path / "b", name="second")

    [page] = await outputs_of(any_store, second.id, 1000)

    assert {o.job_id for o in page}.isdisjoint(
        {o.job_id for o in (await outputs_of(any_store, first.id, 1000))[0]}
    )
    # Positions count within the batch, not across the database.
    assert [o.index for o in page] == [1, 2, 2, 2, 3, 4]
