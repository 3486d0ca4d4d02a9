"""The Batch API's knobs, its other endpoints, limits, and file ids in synchronous edits."""

from __future__ import annotations

import base64

import httpx
import openai
import pytest
from click.testing import CliRunner

from runner.cli.sandbox import sandbox as sandbox_command
from runner.sandbox import SandboxConfig, SandboxHandle, batch_runner, config_from_options, file_api

from .batch_helpers import (
    client,
    generation,
    jsonl,
    line,
    result_lines,
    start,
    upload,
    wait,
)
from .helpers import OPENAI_KEY, auth, decode_b64, image_of, png_bytes


def test_the_admin_api_sets_the_batch_knobs_by_their_names(live: SandboxHandle) -> None:
    patch = {"batch_window": 0.5, "batch_concurrency": 2, "batch_validating": 0.0}
    answer = httpx.post(f"{live.url}/_sandbox/config", json=patch)
    assert answer.status_code == 200
    assert {k: answer.json()[k] for k in patch} == patch
    config = live.sandbox.config
    assert (config.batch_window, config.batch_concurrency, config.batch_validating) == (
        0.5,
        2,
        0.0,
    )
    refused = httpx.post(f"{live.url}/_sandbox/config", json={"batch_window": 0})
    assert refused.status_code == 400
    assert "batch_window" in refused.json()["error"]["message"]


def test_the_cli_flags_are_the_same_knobs() -> None:
    config = config_from_options(batch_window=2.5, batch_create_delay=1.0, batch_concurrency=3)
    assert (config.batch_window, config.batch_create_delay, config.batch_concurrency) == (
        2.5,
        1.0,
        3,
    )
    with pytest.raises(ValueError, match="batch_windw"):
        config_from_options(batch_windw=1.0)
    shown = CliRunner().invoke(sandbox_command, ["--help"]).output
    for flag in ("--batch-window", "--batch-validating", "--batch-finalizing"):
        assert flag in shown
    for flag in ("--batch-concurrency", "--file-create-delay", "--batch-create-delay"):
        assert flag in shown


def test_a_cancel_while_validating_runs_no_line(live: SandboxHandle) -> None:
    live.sandbox.reset(SandboxConfig(tiny=True, batch_validating=5.0))
    sdk = client(live)
    created = start(sdk, [generation("a", "x")])
    assert sdk.batches.cancel(created.id).status == "cancelling"
    batch = wait(sdk, created.id, timeout=3)
    assert batch.status == "cancelled"
    assert (batch.output_file_id, batch.error_file_id, batch.in_progress_at) == (None, None, None)
    assert live.sandbox.requests() == []


def test_responses_lines_run_and_unemulated_endpoints_answer_404_per_line(
    live: SandboxHandle,
) -> None:
    live.sandbox.reset(SandboxConfig(tiny=True))
    sdk = client(live)
    tool = {"type": "image_generation"}
    body = {"model": "gpt-5.5", "input": "draw a fox", "tools": [tool]}
    batch = wait(sdk, start(sdk, [line("r", body, "/v1/responses")], "/v1/responses").id)
    (item,) = result_lines(sdk, batch.output_file_id)
    output = item["response"]["body"]["output"]
    call = next(part for part in output if part["type"] == "image_generation_call")
    assert image_of(decode_b64(call["result"])).size == (64, 64)

    chat = {"model": "gpt-5.5", "messages": [{"role": "user", "content": "hi"}]}
    url = "/v1/chat/completions"
    batch = wait(sdk, start(sdk, [line("c", chat, url)], url).id)
    assert batch.status == "completed"
    (error,) = result_lines(sdk, batch.error_file_id)
    assert error["response"]["status_code"] == 404
    assert url in error["response"]["body"]["error"]["message"]


def test_an_upload_over_the_limit_is_refused_and_not_kept(
    live: SandboxHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(file_api, "MAX_BATCH_FILE_BYTES", 1000)
    sdk = client(live)
    with pytest.raises(openai.BadRequestError) as refused:
        upload(sdk, jsonl([generation(f"{i}", "a long prompt " * 5) for i in range(20)]))
    assert refused.value.code == "file_too_large"
    assert sdk.files.list().data == []
    assert upload(sdk, jsonl([generation("1", "short")])).bytes < 1000


def test_a_synchronous_json_edit_takes_a_file_id_too(live: SandboxHandle) -> None:
    sdk = client(live)
    source = upload(sdk, png_bytes(128, 128, (10, 200, 10)), "green.png", purpose="vision")
    answer = httpx.post(
        f"{live.openai_base}/images/edits",
        headers=auth(OPENAI_KEY),
        json={"model": "gpt-image-2", "prompt": "a hat", "images": [{"file_id": source.id}]},
        timeout=30,
    )
    assert answer.status_code == 200, answer.text
    image = image_of(base64.b64decode(answer.json()["data"][0]["b64_json"]))
    assert image.format == "PNG"
    missing = httpx.post(
        f"{live.openai_base}/images/edits",
        headers=auth(OPENAI_KEY),
        json={"model": "gpt-image-2", "prompt": "a hat", "images": [{"file_id": "file-nope"}]},
    )
    assert missing.status_code == 400
    assert missing.json()["error"]["code"] == "invalid_file_id"


def test_a_sandbox_bug_fails_the_batch_instead_of_leaving_it_running(
    live: SandboxHandle, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(*_: object) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(batch_runner, "check_input", broken)
    sdk = client(live)
    batch = wait(sdk, start(sdk, [generation("a", "x")]).id, timeout=5)
    assert batch.status == "failed"
    assert batch.errors is not None
    assert [e.code for e in batch.errors.data or []] == ["server_error"]
    assert "crashed" in caplog.text
