"""What must hold after jobs went through remote batches, however often the run was killed:
one remote batch on the provider per set of jobs, every line recorded once, every job done
once, and the ledger's total what the sandbox billed."""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

from runner.sandbox import Sandbox
from runner.store import RemoteBatch


def sandbox_batches(sandbox: Sandbox) -> list[Any]:
    """Every batch the sandbox holds, oldest first."""
    found, _ = sandbox.batches.page(after=None, limit=1_000_000)
    return sorted(found, key=lambda b: b.seq)


def check_remote(
    sandbox: Sandbox,
    ours: list[RemoteBatch],
    attempts: list[dict[str, Any]],
    jobs: list[dict[str, Any]],
    outputs: list[dict[str, Any]],
) -> None:
    """The invariants of the module docstring (``attempts``/``jobs``/``outputs``: the rows)."""
    remote = sandbox_batches(sandbox)
    by_ours = Counter((b.metadata or {}).get("imagerun_remote_batch") for b in remote)
    assert all(n == 1 for n in by_ours.values()), f"a remote batch created twice: {by_ours}"
    assert set(by_ours) <= {rb.id for rb in ours}, "a remote batch that is none of ours"
    for rb in ours:
        if rb.remote_id is not None:
            assert by_ours[rb.id] == 1
    # Every line the sandbox ran is one attempt of ours, recorded once.
    lines = [r for r in sandbox.requests() if r.batch_id is not None]
    ids = Counter(a["provider_request_id"] for a in attempts if a["provider_request_id"])
    for line in lines:
        assert ids[line.provider_request_id] == 1, f"line {line.provider_request_id} not once"
    assert {a["state"] for a in attempts} <= {"done"}, "an attempt left sending"
    # Each succeeded job has exactly one ok attempt and its outputs once.
    ok = Counter(a["job_id"] for a in attempts if a["outcome"] == "ok")
    for job in jobs:
        if job["state"] == "succeeded":
            assert ok[job["id"]] == 1, f"job {job['ext_id']} paid {ok[job['id']]} times"
    assert len({(o["job_id"], o["k"]) for o in outputs}) == len(outputs)
    billed = sum(r.charged_usd for r in lines)
    charged = sum(
        a["expected_usd"] or 0
        for a in attempts
        if a["charge_status"] == "charged" and a["remote_batch_id"] is not None
    )
    # The sandbox bills in quota units of $0.000002; we round each line to $0.000001.
    assert math.isclose(charged, billed, abs_tol=2e-6 * max(1, len(lines))), (charged, billed)
