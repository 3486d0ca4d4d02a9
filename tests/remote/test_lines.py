"""Batch lines: a job's JSONL line, large sources moved to files, result lines classified."""

from __future__ import annotations

import base64
import json

from runner.models import Outcome
from runner.remote.lines import encode_line, plan_line, read_answer
from runner.shapes import LoadedImage, PreparedRequest


def image(data: bytes) -> LoadedImage:
    url = "data:image/png;base64," + base64.b64encode(data).decode()
    return LoadedImage(data=data, mime="image/png", filename="a.png", url=url)


def edit(*images: LoadedImage) -> PreparedRequest:
    body = {
        "model": "gpt-image-2",
        "prompt": "p",
        "images": [{"image_url": i.url} for i in images],
    }
    return PreparedRequest(endpoint="/images/edits", json=body, params_sent={"images": 2})


def test_a_line_carries_our_attempt_id_and_the_versioned_endpoint() -> None:
    prepared = PreparedRequest(endpoint="/images/generations", json={"model": "m", "prompt": "p"})
    planned = plan_line(prepared, [], None, max_line_bytes=10_000)
    line = json.loads(encode_line("ir-1", planned, {}))
    assert line == {
        "custom_id": "ir-1",
        "method": "POST",
        "url": "/v1/images/generations",
        "body": {"model": "m", "prompt": "p"},
    }
    assert planned.size >= len(encode_line("ir-1", planned, {}))


def test_sources_stay_inline_while_the_line_fits() -> None:
    small, big = image(b"a" * 100), image(b"b" * 3000)
    planned = plan_line(edit(small, big), [small, big], None, max_line_bytes=100_000)
    assert planned.uploads == ()
    assert [i["image_url"] for i in planned.body["images"]] == [small.url, big.url]


def test_the_largest_sources_move_to_files_until_the_line_fits() -> None:
    small, big = image(b"a" * 100), image(b"b" * 3000)
    planned = plan_line(edit(small, big), [small, big], None, max_line_bytes=1000)
    (upload,) = planned.uploads
    assert upload.data == b"b" * 3000
    line = json.loads(encode_line("ir-1", planned, {upload.key: "file-9"}))
    assert line["body"]["images"] == [{"image_url": small.url}, {"file_id": "file-9"}]
    assert planned.size <= 1000


def test_an_output_line_is_an_answer_with_its_request_id() -> None:
    raw = {
        "id": "batch_req_1",
        "custom_id": "ir-1",
        "response": {"status_code": 200, "request_id": "req_1", "body": {"data": []}},
        "error": None,
    }
    answer = read_answer(json.dumps(raw).encode())
    assert (answer.custom_id, answer.status, answer.request_id, answer.error) == (
        "ir-1",
        200,
        "req_1",
        None,
    )


def test_an_error_line_is_classified_like_a_synchronous_error() -> None:
    body = {"error": {"code": "moderation_blocked", "message": "no", "type": "x"}}
    raw = {"custom_id": "ir-2", "response": {"status_code": 400, "request_id": "r", "body": body}}
    answer = read_answer(json.dumps(raw).encode())
    assert answer.error is not None
    assert answer.error.outcome is Outcome.MODERATION_BLOCKED
    assert answer.error.provider_request_id == "r"
    server = {"custom_id": "ir-3", "response": {"status_code": 500, "body": {"error": {}}}}
    assert read_answer(json.dumps(server).encode()).error.outcome is Outcome.SERVER_ERROR  # type: ignore[union-attr]


def test_an_expired_line_was_never_run() -> None:
    raw = {
        "custom_id": "ir-4",
        "response": None,
        "error": {"code": "batch_expired", "message": "m"},
    }
    answer = read_answer(json.dumps(raw).encode())
    assert not answer.ran
    assert answer.error is not None
    assert not answer.error.sent
