"""Every built-in route, through its ``sandbox-*`` mirror on a real server, generates and edits."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from runner.sandbox import Profile

from .conftest import MakeWorld
from .harness import RUN_DEADLINE, TOLD_RPM, assert_log_matches_ledger, check_outputs, png

#: Per route: the extra options of the generation job and of the edit job. A size is asked for
#: wherever the route takes one (the smallest its rule allows, to keep rendering cheap).
CASES: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "sandbox-openai": ({"size": "1024x640", "n": 2}, {"size": "1024x640", "quality": "low"}),
    "sandbox-openai-responses": ({"size": "1024x640", "quality": "low"}, {"size": "1024x640"}),
    "sandbox-laozhang": ({}, {}),
    "sandbox-laozhang-vip": ({"size": "1280x544"}, {"size": "1280x544"}),
    "sandbox-laozhang-chat": ({}, {}),
    "sandbox-laozhang-official": ({"size": "1024x640", "n": 2}, {"size": "1024x640"}),
    "sandbox-laozhang-enterprise": ({"size": "1024x640"}, {"size": "1024x640"}),
}


@pytest.mark.anyio
@pytest.mark.parametrize("route_name", sorted(CASES))
async def test_route_generates_and_edits(world: MakeWorld, route_name: str) -> None:
    """Outputs land on disk, decode at the asked size, match their sha256; ids are recorded."""
    w = world()
    route = w.settings().catalog.get(route_name)
    gen, edit = CASES[route_name]
    w.source("source.png", png(96, 64))
    lines: list[dict[str, Any]] = [{"id": "gen", "prompt": "a red kite over a beach", **gen}]
    if route.accepts_edits:
        lines.append({"id": "edit", "prompt": "make it blue", "images": ["source.png"], **edit})
    batch = await w.submit(lines, route_name)

    with anyio.fail_after(RUN_DEADLINE):
        result = await w.run([batch.id], rpm=TOLD_RPM)

    assert result.report is not None
    assert result.report.clean
    ledger = await w.rows(batch)
    seen = w.requests()
    assert ledger.states() == {"succeeded": len(lines)}
    assert len(ledger.attempts) == len(seen) == len(lines)
    assert_log_matches_ledger(ledger, seen)
    check_outputs(w, ledger)

    records = {r.client_request_id: r for r in seen}
    for line in lines:
        job = ledger.job(line["id"])
        [attempt] = ledger.attempts_of(line["id"])
        outputs = [o for o in ledger.outputs if o["job_id"] == job["id"]]
        assert len(outputs) == line.get("n", 1)
        if "size" in line:
            width, height = map(int, line["size"].split("x"))
            assert {(o["width"], o["height"]) for o in outputs} == {(width, height)}
        record = records[attempt["id"]]
        assert record.n_sources == len(line.get("images", []))
        if route.shape == "images":
            expected = "/images/edits" if line.get("images") else "/images/generations"
            assert attempt["endpoint"] == expected
            assert record.path.endswith(expected)
        if record.profile is Profile.OPENAI:
            assert attempt["provider_request_id"] == record.provider_request_id
            assert attempt["provider_request_id"].startswith("req_")
        else:
            assert attempt["gateway_request_id"] == record.provider_request_id
        if route.mirrors in ("laozhang-official", "laozhang-enterprise"):
            # Official forwarding through the gateway also relays the upstream's x-request-id.
            assert attempt["provider_request_id"]
        # What the ledger expects to pay is what the sandbox charged (to its quota unit).
        assert attempt["charge_status"] == "charged"
        assert attempt["expected_usd"] == pytest.approx(record.charged_usd, abs=1e-5)


@pytest.mark.anyio
@pytest.mark.parametrize("route_name", ["sandbox-laozhang-vip", "sandbox-laozhang-chat"])
async def test_url_results_are_downloaded_at_once(world: MakeWorld, route_name: str) -> None:
    """A gateway's URL result (``response_format=url``, a chat Markdown link) is fetched."""
    w = world()
    extra = {"size": "1280x544", "response_format": "url"} if route_name.endswith("vip") else {}
    lines = [{"id": f"u{i}", "prompt": f"poster number {i}", **extra} for i in range(3)]
    batch = await w.submit(lines, route_name)

    with anyio.fail_after(RUN_DEADLINE):
        await w.run([batch.id], rpm=TOLD_RPM)

    ledger = await w.rows(batch)
    assert ledger.states() == {"succeeded": 3}
    check_outputs(w, ledger)
    files = w.handle.sandbox.requests("file")
    # One GET per image, each served while its link was fresh, and nothing fetched twice.
    assert len(files) == len(ledger.outputs) == 3
    assert {f.status for f in files} == {200}
    assert len({f.path for f in files}) == 3
    # "At once": each image was fetched while its job's attempt was still open.
    for attempt in ledger.attempts:
        during = [f for f in files if attempt["started_at"] <= f.time <= attempt["finished_at"]]
        assert len(during) >= 1, attempt
    assert_log_matches_ledger(ledger, w.requests())
    if extra:
        assert {(o["width"], o["height"]) for o in ledger.outputs} == {(1280, 544)}
