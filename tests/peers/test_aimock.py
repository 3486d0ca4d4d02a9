"""imagerun's ``openai`` route against aimock, an OpenAI-compatible mock we did not write.

What is asserted is money: every job ends with its image and the provider's request id, every
request aimock received (faults included) has exactly one ledger row, no delivered image is
bought twice, and an attempt whose connection was cut is never called free.
"""

from __future__ import annotations

import io
import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from runner import app
from runner.config import Settings, load_settings
from runner.run.worker import RunOptions
from tests.e2e.harness import Ledger, png, read_ledger, route_config
from tests.peers.aimock import Aimock, image_fixture, running_aimock

pytestmark = pytest.mark.anyio

CHAOS = {"ratelimit": 0.1, "drop": 0.1, "malformed": 0.05, "disconnect": 0.05}


def _settings(tmp_path: Path, server: Aimock) -> Settings:
    config = tmp_path / "imagerun.toml"
    # Generous attempts: a fault on ~30% of requests must not exhaust a job by bad luck.
    config.write_text(
        route_config(openai={"rpm": 6000, "concurrency": 8, "max_attempts": 15, "timeout": 20.0})
    )
    return load_settings(
        config=config,
        db=f"sqlite+aiosqlite:///{tmp_path / 'imagerun.db'}",
        data=tmp_path / "data",
        environ={"IMAGERUN_ROUTE_OPENAI_BASE_URL": server.base_url, "OPENAI_API_KEY": "sk-peer"},
    )


def _manifest(tmp_path: Path, count: int, size: str) -> Path:
    source = tmp_path / "source.png"
    source.write_bytes(png(64, 64, (20, 120, 220)))
    lines: list[dict[str, Any]] = []
    for i in range(count):
        line: dict[str, Any] = {"id": f"j{i:02d}", "prompt": f"a lamp, variant {i}", "size": size}
        if i % 2:
            line["images"] = [source.name]
        lines.append(line)
    path = tmp_path / "jobs.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines), "utf-8")
    return path


async def _run(settings: Settings, manifest: Path) -> Ledger:
    submitted = await app.submit(settings, manifest, "openai", name="peer")
    await app.run(settings, [], RunOptions(retry_scale=0.0, handle_signals=False))
    async with app.open_store(settings) as store:
        return await read_ledger(store, submitted.batch.id)


def _by_client_id(journal: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    entries = {e["headers"].get("x-client-request-id"): e for e in journal}
    assert None not in entries, "a request reached aimock without X-Client-Request-Id"
    assert len(entries) == len(journal), "one client request id was sent twice"
    return entries


@pytest.mark.timeout(180)
async def test_every_job_finishes_once_through_aimock_chaos(tmp_path: Path) -> None:
    """Rate limits, 500s, malformed 200s and cut connections: 40 jobs, each image bought once."""
    fixture = image_fixture(tmp_path / "fixture.json", png(1024, 1024))
    with running_aimock(fixture, CHAOS) as server:
        ledger = await _run(_settings(tmp_path, server), _manifest(tmp_path, 40, "1024x1024"))
        journal = server.journal()

    assert ledger.states() == Counter({"succeeded": 40})
    seen = _by_client_id(journal)
    # Every request aimock received has its row, and every row was received.
    assert set(seen) == {a["id"] for a in ledger.attempts}
    assert all(a["state"] == "done" for a in ledger.attempts)
    # The faults really happened, or this test proves nothing.
    faults = Counter(a for e in journal if (a := e["response"].get("chaosAction")))
    assert faults.total() >= 5, faults
    assert len(faults) >= 2, faults
    # Paid once: aimock delivered exactly one image per job, and each was kept.
    delivered = [
        e
        for e in journal
        if e["response"]["status"] == 200 and not e["response"].get("chaosAction")
    ]
    assert len(delivered) == 40
    ok = [a for a in ledger.attempts if a["outcome"] == "ok"]
    assert len(ok) == 40
    for attempt in ok:
        assert attempt["provider_request_id"] == seen[attempt["id"]]["headers"]["x-request-id"]
    for attempt in ledger.attempts:
        entry = seen[attempt["id"]]
        if entry["response"].get("chaosAction") == "disconnect":
            assert attempt["charge_status"] != "not_charged", attempt
    assert len(ledger.outputs) == 40
    for out in ledger.outputs:
        with Image.open(tmp_path / "data" / out["path"]) as image:
            assert image.size == (1024, 1024)


@pytest.mark.timeout(120)
async def test_an_image_of_another_size_is_kept_and_not_bought_again(tmp_path: Path) -> None:
    """aimock answers 1024x1024 requests with a 96x64 image: a paid success, recorded as such."""
    fixture = image_fixture(tmp_path / "fixture.json", png(96, 64))
    with running_aimock(fixture) as server:
        ledger = await _run(_settings(tmp_path, server), _manifest(tmp_path, 10, "1024x1024"))
        journal = server.journal()

    assert ledger.states() == Counter({"succeeded": 10})
    assert len(journal) == 10, "a delivered image was bought again"
    assert len(ledger.attempts) == 10
    assert all(a["charge_status"] == "charged" for a in ledger.attempts)
    assert len(ledger.outputs) == 10
    for out in ledger.outputs:
        data = (tmp_path / "data" / out["path"]).read_bytes()
        with Image.open(io.BytesIO(data)) as image:
            assert image.size == (96, 64)
