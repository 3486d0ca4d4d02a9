"""The sandbox's Files and Batch API through the official ``openai`` SDK, on a real server."""

from __future__ import annotations

import base64
import io
import json
import time
from collections import Counter

import httpx
import openai
import pytest
from openai.types import Batch, FileDeleted, FileObject

from runner.sandbox import SandboxConfig, SandboxHandle
from runner.sandbox.config import FaultKind, FaultRule, Latency

from .batch_helpers import (
    EDITS,
    assert_exact,
    client,
    generation,
    jsonl,
    line,
    result_lines,
    start,
    upload,
    wait,
)
from .helpers import decode_b64, image_of, png_bytes


def _png_of(item: dict[str, object]) -> tuple[int, int]:
    body = item["response"]["body"]  # type: ignore[index]
    image = image_of(decode_b64(body["data"][0]["b64_json"]))
    assert image.format == "PNG"
    return image.size


def test_files_are_uploaded_listed_read_and_deleted_as_the_sdk_types_them(
    live: SandboxHandle,
) -> None:
    sdk = client(live)
    data = jsonl([generation("a", "a cat")])
    first = upload(sdk, data, "one.jsonl")
    second = upload(sdk, png_bytes(8, 8, (1, 2, 3)), "pic.png", purpose="vision")
    for file in (first, second, sdk.files.retrieve(first.id)):
        assert isinstance(file, FileObject)
        assert_exact(file)
    assert (first.bytes, first.filename, first.purpose) == (len(data), "one.jsonl", "batch")
    assert first.id.startswith("file-")
    assert first.expires_at is not None
    assert sdk.files.content(first.id).read() == data

    newest = sdk.files.list()
    for listed in newest.data:
        assert_exact(listed)
    # The SDK's page declares only data and has_more; the rest of the list object, as sent:
    assert (newest.object, newest.first_id, newest.last_id) == ("list", second.id, first.id)
    assert [f.id for f in newest.data] == [second.id, first.id]
    assert [f.id for f in sdk.files.list(purpose="vision").data] == [second.id]
    page = sdk.files.list(limit=1, order="asc")
    assert [f.id for f in page.data] == [first.id]
    assert page.has_more
    assert [f.id for f in sdk.files.list(after=first.id, order="asc").data] == [second.id]

    deleted = sdk.files.delete(first.id)
    assert_exact(deleted)
    assert isinstance(deleted, FileDeleted)
    assert deleted.deleted
    assert deleted.id == first.id
    with pytest.raises(openai.NotFoundError):
        sdk.files.retrieve(first.id)
    assert [f.id for f in sdk.files.list().data] == [second.id]


def test_a_batch_input_must_be_jsonl_and_a_key_is_required(live: SandboxHandle) -> None:
    sdk = client(live)
    with pytest.raises(openai.BadRequestError, match=r"\.jsonl"):
        upload(sdk, b"{}", "input.txt")
    keyless = httpx.get(f"{live.openai_base}/files")
    assert keyless.status_code == 401
    assert sdk.files.list().data == []


def test_a_generation_batch_completes_with_pngs_usage_and_every_timestamp(
    live: SandboxHandle,
) -> None:
    sdk = client(live)
    lines = [generation(f"job-{i}", f"a lighthouse {i}", size="1024x1024") for i in range(4)]
    created = start(sdk, lines)
    assert created.status == "validating"
    assert created.request_counts is not None
    batch = wait(sdk, created.id)
    assert isinstance(batch, Batch)
    assert_exact(batch)
    assert batch.status == "completed"
    assert batch.error_file_id is None
    assert batch.request_counts is not None
    assert (batch.request_counts.total, batch.request_counts.completed) == (4, 4)
    assert batch.model == "gpt-image-2"
    stamps = [batch.created_at, batch.in_progress_at, batch.finalizing_at, batch.completed_at]
    assert all(s is not None for s in stamps)
    assert stamps == sorted(stamps)

    output = result_lines(sdk, batch.output_file_id)
    assert sorted(item["custom_id"] for item in output) == [f"job-{i}" for i in range(4)]
    for item in output:
        assert item["id"].startswith("batch_req_")
        assert item["error"] is None
        response = item["response"]
        assert response["status_code"] == 200
        assert response["request_id"].startswith("req_")
        body = response["body"]
        assert (body["size"], body["output_format"], body["quality"]) == (
            "1024x1024",
            "png",
            "medium",
        )
        assert body["usage"]["output_tokens"] > 0
        assert _png_of(item) == (1024, 1024)
    assert batch.usage is not None
    assert batch.usage.output_tokens == sum(
        item["response"]["body"]["usage"]["output_tokens"] for item in output
    )
    output_file = sdk.files.retrieve(batch.output_file_id or "")
    assert output_file.purpose == "batch_output"


def test_batch_lines_cost_half_of_the_same_synchronous_requests(live: SandboxHandle) -> None:
    sdk = client(live)
    prompt = "a red bicycle leaning on a wall"
    sdk.images.generate(model="gpt-image-2", prompt=prompt, size="1024x1024", quality="high")
    batch = wait(sdk, start(sdk, [generation("x", prompt, size="1024x1024", quality="high")]).id)
    assert batch.status == "completed"
    sync, batched = live.sandbox.requests()
    assert sync.batch_id is None
    assert batched.batch_id == batch.id
    assert batched.charged_quota > 0
    assert batched.charged_quota == pytest.approx(sync.charged_quota / 2, abs=1)
    assert live.sandbox.charged_usd() == pytest.approx(sync.charged_usd * 1.5, abs=1e-5)


def test_an_edit_batch_takes_data_urls_and_uploaded_file_ids(live: SandboxHandle) -> None:
    sdk = client(live)
    source = png_bytes(256, 256, (200, 30, 30))
    mask = png_bytes(256, 256, (0, 0, 0, 0), mode="RGBA")
    data_url = "data:image/png;base64," + base64.b64encode(source).decode()
    image_file = upload(sdk, source, "source.png", purpose="vision")
    mask_file = upload(sdk, mask, "mask.png", purpose="user_data")
    lines = [
        line(
            "by-url",
            {"model": "gpt-image-2", "prompt": "add a hat", "images": [{"image_url": data_url}]},
            EDITS,
        ),
        line(
            "by-file",
            {
                "model": "gpt-image-2",
                "prompt": "add a scarf",
                "images": [{"file_id": image_file.id}],
                "mask": {"file_id": mask_file.id},
            },
            EDITS,
        ),
    ]
    batch = wait(sdk, start(sdk, lines, endpoint=EDITS).id)
    assert batch.status == "completed", batch
    output = {item["custom_id"]: item for item in result_lines(sdk, batch.output_file_id)}
    assert set(output) == {"by-url", "by-file"}
    for item in output.values():
        assert _png_of(item) == (1024, 1024)  # size auto draws a square
        assert item["response"]["body"]["usage"]["input_tokens_details"]["image_tokens"] > 0


def test_a_batch_file_cannot_be_an_image_input(live: SandboxHandle) -> None:
    sdk = client(live)
    wrong = upload(sdk, png_bytes(64, 64, (1, 1, 1)), "x.jsonl")
    body = {"model": "gpt-image-2", "prompt": "p", "images": [{"file_id": wrong.id}]}
    batch = wait(sdk, start(sdk, [line("bad", body, EDITS)], endpoint=EDITS).id)
    assert batch.status == "completed"
    assert batch.output_file_id is None
    (error,) = result_lines(sdk, batch.error_file_id)
    assert error["response"]["status_code"] == 400
    assert "purpose 'vision' or 'user_data'" in error["response"]["body"]["error"]["message"]


def test_failed_lines_go_to_the_error_file_with_the_sync_error_bodies(
    live: SandboxHandle,
) -> None:
    rule = FaultRule(match="#BOOM#", kind=FaultKind.SERVER_ERROR)
    live.sandbox.reset(SandboxConfig(tiny=True, fault_rules=(rule,)))
    sdk = client(live)
    lines = [
        generation("fine", "a tree"),
        generation("boom", "a tree #BOOM#"),
        generation("blocked", "something forbidden"),
        generation("bad-size", "a tree", size="13x7"),
    ]
    batch = wait(sdk, start(sdk, lines).id)
    assert batch.status == "completed"
    assert batch.request_counts is not None
    assert (batch.request_counts.completed, batch.request_counts.failed) == (1, 3)
    assert [item["custom_id"] for item in result_lines(sdk, batch.output_file_id)] == ["fine"]
    errors = {item["custom_id"]: item for item in result_lines(sdk, batch.error_file_id)}
    assert set(errors) == {"boom", "blocked", "bad-size"}
    statuses = {k: v["response"]["status_code"] for k, v in errors.items()}
    assert statuses == {"boom": 500, "blocked": 400, "bad-size": 400}
    codes = {k: v["response"]["body"]["error"]["code"] for k, v in errors.items()}
    assert codes["blocked"] == "moderation_blocked"
    assert all(v["error"] is None for v in errors.values())


def test_an_invalid_input_file_fails_the_batch_naming_each_line(live: SandboxHandle) -> None:
    sdk = client(live)
    good = json.dumps(generation("a", "x")).encode()
    wrong_url = json.dumps(line("b", {"prompt": "x"}, "/v1/images/edits")).encode()
    data = b"\n".join([good, b"{not json", wrong_url, good]) + b"\n"
    file = upload(sdk, data)
    created = sdk.batches.create(
        input_file_id=file.id, endpoint="/v1/images/generations", completion_window="24h"
    )
    batch = wait(sdk, created.id)
    assert batch.status == "failed"
    assert batch.failed_at is not None
    assert_exact(batch)
    assert batch.errors is not None
    assert batch.errors.data is not None
    found = {(e.line, e.code) for e in batch.errors.data}
    assert found == {
        (2, "invalid_json_line"),
        (3, "mismatched_endpoint"),
        (4, "duplicate_custom_id"),
    }
    assert batch.output_file_id is None
    assert live.sandbox.requests() == []


def test_more_than_50000_lines_fail_validation(live: SandboxHandle) -> None:
    sdk = client(live)
    row = b'{"custom_id":"%d","method":"POST","url":"/v1/images/generations","body":{}}\n'
    data = b"".join(row % i for i in range(50_001))
    batch = wait(sdk, start_raw(sdk, data).id)
    assert batch.status == "failed"
    assert batch.errors is not None
    assert batch.errors.data
    assert [e.code for e in batch.errors.data] == ["too_many_requests"]


def start_raw(sdk: openai.OpenAI, data: bytes) -> Batch:
    file = upload(sdk, data)
    return sdk.batches.create(
        input_file_id=file.id, endpoint="/v1/images/generations", completion_window="24h"
    )


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"endpoint": "/v1/audio/speech"}, "endpoint"),
        ({"completion_window": "1h"}, "24h"),
        ({"metadata": {f"k{i}": "v" for i in range(17)}}, "metadata"),
        ({"input_file_id": "file-missing"}, "No such File"),
    ],
)
def test_create_refuses_what_openai_refuses(
    live: SandboxHandle, change: dict[str, object], match: str
) -> None:
    sdk = client(live)
    file = upload(sdk, jsonl([generation("a", "x")]))
    params: dict[str, object] = {
        "input_file_id": file.id,
        "endpoint": "/v1/images/generations",
        "completion_window": "24h",
    } | change
    with pytest.raises((openai.BadRequestError, openai.NotFoundError), match=match):
        sdk.batches.create(**params)  # type: ignore[arg-type]
    assert sdk.batches.list().data == []


def test_a_non_batch_file_is_no_batch_input(live: SandboxHandle) -> None:
    sdk = client(live)
    file = upload(sdk, jsonl([generation("a", "x")]), purpose="user_data")
    with pytest.raises(openai.BadRequestError, match="purpose 'batch'"):
        sdk.batches.create(
            input_file_id=file.id, endpoint="/v1/images/generations", completion_window="24h"
        )


def test_batches_list_newest_first_in_pages(live: SandboxHandle) -> None:
    sdk = client(live)
    file = upload(sdk, jsonl([generation("a", "x")]))
    made = [
        sdk.batches.create(
            input_file_id=file.id,
            endpoint="/v1/images/generations",
            completion_window="24h",
            metadata={"n": str(i)},
        )
        for i in range(5)
    ]
    newest = [b.id for b in reversed(made)]
    page = sdk.batches.list(limit=2)
    assert [b.id for b in page.data] == newest[:2]
    assert page.has_more
    assert (page.first_id, page.last_id) == (newest[0], newest[1])
    rest = sdk.batches.list(limit=10, after=newest[1])
    assert [b.id for b in rest.data] == newest[2:]
    assert not rest.has_more
    assert [b.metadata for b in rest.data] == [{"n": "2"}, {"n": "1"}, {"n": "0"}]
    assert [b.id for b in sdk.batches.list(limit=2)] == newest  # the SDK follows the pages
    for batch in page.data:
        assert_exact(batch)


def test_an_expired_batch_keeps_what_finished_and_lists_the_rest(live: SandboxHandle) -> None:
    live.sandbox.reset(
        SandboxConfig(tiny=True, latency=Latency(mean=0.2), batch_window=1.0, batch_concurrency=1)
    )
    sdk = client(live)
    batch = wait(sdk, start(sdk, [generation(f"j{i}", "a boat") for i in range(20)]).id)
    assert batch.status == "expired"
    assert batch.expired_at is not None
    assert_exact(batch)
    done = result_lines(sdk, batch.output_file_id)
    expired = result_lines(sdk, batch.error_file_id)
    assert 1 <= len(done) < 20
    assert len(done) + len(expired) == 20
    assert batch.request_counts is not None
    assert (batch.request_counts.completed, batch.request_counts.failed) == (len(done), 0)
    assert {e["error"]["code"] for e in expired} == {"batch_expired"}
    assert all(e["response"] is None for e in expired)
    assert {i["custom_id"] for i in done + expired} == {f"j{i}" for i in range(20)}
    charged = [r for r in live.sandbox.requests() if r.charged_quota > 0]
    assert len(charged) == len(done)


def _completed(sdk: openai.OpenAI, batch_id: str) -> int:
    counts = sdk.batches.retrieve(batch_id).request_counts
    return counts.completed if counts else 0


def test_a_cancelled_batch_keeps_the_lines_done_before_the_cancel(live: SandboxHandle) -> None:
    live.sandbox.reset(
        SandboxConfig(tiny=True, latency=Latency(mean=0.1), batch_window=60, batch_concurrency=1)
    )
    sdk = client(live)
    created = start(sdk, [generation(f"j{i}", "a kite") for i in range(40)])
    while _completed(sdk, created.id) < 2:
        time.sleep(0.02)
    cancelling = sdk.batches.cancel(created.id)
    assert cancelling.status == "cancelling"
    assert cancelling.cancelling_at is not None
    batch = wait(sdk, created.id)
    assert batch.status == "cancelled"
    assert batch.cancelled_at is not None
    done = result_lines(sdk, batch.output_file_id)
    skipped = result_lines(sdk, batch.error_file_id)
    assert 2 <= len(done) < 40
    assert len(done) + len(skipped) == 40
    assert {e["error"]["code"] for e in skipped} == {"batch_cancelled"}
    with pytest.raises(openai.ConflictError):
        sdk.batches.cancel(created.id)


def test_a_response_held_after_creation_leaves_the_batch_running(live: SandboxHandle) -> None:
    live.sandbox.reset(SandboxConfig(tiny=True, batch_create_delay=2.0, file_create_delay=2.0))
    impatient = client(live, timeout=0.5)
    with pytest.raises(openai.APITimeoutError):
        impatient.files.create(
            file=("in.jsonl", io.BytesIO(jsonl([generation("a", "x")]))), purpose="batch"
        )
    sdk = client(live)
    (file,) = sdk.files.list(purpose="batch").data
    with pytest.raises(openai.APITimeoutError):
        impatient.batches.create(
            input_file_id=file.id, endpoint="/v1/images/generations", completion_window="24h"
        )
    (batch,) = sdk.batches.list().data
    assert batch.input_file_id == file.id
    assert wait(sdk, batch.id).status == "completed"


@pytest.mark.timeout(360)
def test_ten_thousand_lines_in_one_batch(live: SandboxHandle) -> None:
    # The window stands for 24 h: it is long enough for 10,000 lines on a loaded machine (at
    # 60 s the batch once expired under load), since expiry is not what is tested here.
    live.sandbox.reset(SandboxConfig(tiny=True, batch_window=300))
    sdk = client(live)
    ids = [f"line-{i:05d}" for i in range(10_000)]
    batch = wait(sdk, start(sdk, [generation(i, f"tile {i}") for i in ids]).id, timeout=300)
    assert batch.status == "completed"
    assert batch.request_counts is not None
    assert batch.request_counts.completed == 10_000
    output = result_lines(sdk, batch.output_file_id)
    got = [item["custom_id"] for item in output]
    assert Counter(got) == Counter(ids)
    assert got != ids
    assert _png_of(output[0]) == (64, 64)
    assert len(live.sandbox.requests()) == 10_000
