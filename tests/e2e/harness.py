"""A small world for end-to-end tests: the sandbox as a real server, a SQLite file, a runner.

A test writes a manifest, submits it on a ``sandbox-*`` route, runs it to the end and then
compares three views of what happened: the job rows, the ledger (attempt rows) and the
sandbox's own request log, plus the image files on disk.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
from PIL import Image
from sqlalchemy import select

from runner import app
from runner.cli.demo import sandbox_environ
from runner.config import Settings, load_settings
from runner.files.images import EXTENSIONS
from runner.run.worker import RunOptions
from runner.sandbox import RequestRecord, SandboxHandle
from runner.store import BatchInfo, Store
from runner.store.tables import attempts, jobs, outputs

#: Longest a test's run may take: past this it is a failure (a hang), not a slow pass.
RUN_DEADLINE = 30.0
#: A rate told far above what the sandbox serves, for runs that test something other than
#: pacing: a sandbox route nobody gave a rate starts at 150 a minute and doubles every 2 s.
TOLD_RPM = 60_000

Row = dict[str, Any]


def png(width: int, height: int, colour: tuple[int, int, int] = (200, 40, 40)) -> bytes:
    """A solid PNG to use as a source image."""
    out = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(out, "PNG")
    return out.getvalue()


def route_config(**routes: Mapping[str, Any]) -> str:
    """``imagerun.toml`` text overriding settings of some routes."""
    lines = []
    for name, table in routes.items():
        lines.append(f'[routes."{name}"]')
        lines += [f"{key} = {json.dumps(value)}" for key, value in table.items()]
    return "\n".join(lines) + "\n"


@dataclass(slots=True, kw_only=True)
class World:
    """One test's directory, database and sandbox."""

    handle: SandboxHandle
    root: Path
    db_url: str
    env: dict[str, str] = field(default_factory=dict)
    config_text: str = ""

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    def settings(self) -> Settings:
        config = None
        if self.config_text:
            config = self.root / "imagerun.toml"
            config.write_text(self.config_text, "utf-8")
        return load_settings(
            config=config,
            db=self.db_url,
            data=self.data_dir,
            # The test's own variables win, so a test can point a route elsewhere.
            environ={**sandbox_environ(self.handle, self.env), **self.env},
        )

    def manifest(self, lines: Sequence[Mapping[str, Any]], name: str = "jobs") -> Path:
        path = self.root / f"{name}.jsonl"
        path.write_text("".join(json.dumps(dict(line)) + "\n" for line in lines), "utf-8")
        return path

    def source(self, name: str, data: bytes) -> Path:
        path = self.root / name
        path.write_bytes(data)
        return path

    async def submit(
        self, lines: Sequence[Mapping[str, Any]], route: str, name: str = "jobs"
    ) -> BatchInfo:
        result = await app.submit(self.settings(), self.manifest(lines, name), route, name=name)
        assert result.added == len(lines)
        return result.batch

    async def run(self, batches: Sequence[str] = (), **options: Any) -> app.RunResult:
        defaults: dict[str, Any] = {"retry_scale": 0.0, "handle_signals": False}
        return await app.run(self.settings(), batches, RunOptions(**(defaults | options)))

    async def rows(self, batch: BatchInfo) -> Ledger:
        async with app.open_store(self.settings()) as store:
            return await read_ledger(store, batch.id)

    def requests(self) -> list[RequestRecord]:
        """The image API calls the sandbox saw, in arrival order."""
        return self.handle.sandbox.requests()

    async def settled_requests(self, expected: int, timeout: float = 10.0) -> list[RequestRecord]:
        """The sandbox log once (at least) ``expected`` requests have settled there.

        A request the client abandoned (a timeout) settles on the server a moment after the
        client moved on, so the log is polled, with a deadline, until it has them all.
        """
        with anyio.fail_after(timeout):
            while len(seen := self.requests()) < expected:
                await anyio.sleep(0.01)
        return seen


@dataclass(frozen=True, slots=True, kw_only=True)
class Ledger:
    jobs: list[Row]
    attempts: list[Row]
    outputs: list[Row]

    def job(self, ext_id: str) -> Row:
        [row] = [j for j in self.jobs if j["ext_id"] == ext_id]
        return row

    def attempts_of(self, ext_id: str) -> list[Row]:
        job_id = self.job(ext_id)["id"]
        return sorted(
            (a for a in self.attempts if a["job_id"] == job_id), key=lambda a: a["number"]
        )

    def states(self) -> Counter[str]:
        return Counter(j["state"] for j in self.jobs)


async def read_ledger(store: Store, batch_id: str) -> Ledger:
    async with store.engine.connect() as conn:

        async def rows(table: Any) -> list[Row]:
            result = await conn.execute(select(table).where(table.c.batch_id == batch_id))
            return [dict(r._mapping) for r in result]

        return Ledger(
            jobs=await rows(jobs), attempts=await rows(attempts), outputs=await rows(outputs)
        )


def assert_log_matches_ledger(ledger: Ledger, seen: Sequence[RequestRecord]) -> None:
    """Every request the sandbox saw has exactly one attempt row, and every sent row was seen.

    Attempts that provably never left (a connect failure, recorded ``not_charged`` with no
    HTTP status) are the only rows allowed to be missing from the sandbox's log.
    """
    seen_ids = Counter(r.client_request_id for r in seen)
    assert None not in seen_ids, "a request reached the sandbox without X-Client-Request-Id"
    twice = {i: n for i, n in seen_ids.items() if n > 1}
    assert not twice, f"requests recorded twice by the sandbox: {twice}"
    ours = {a["id"]: a for a in ledger.attempts}
    unrecorded = set(seen_ids) - set(ours)
    assert not unrecorded, f"requests the sandbox saw that the ledger lacks: {unrecorded}"
    unseen = [a for a in ours.values() if a["id"] not in seen_ids and not _never_sent(a)]
    assert not unseen, f"attempts recorded as sent that never reached the sandbox: {unseen}"
    assert all(a["state"] == "done" for a in ledger.attempts), "an attempt row was left open"
    by_id = {r.client_request_id: r for r in seen}
    for attempt_id, record in by_id.items():
        row = ours[attempt_id]
        if record.status is not None and record.status != 499:
            assert row["http_status"] == record.status, (row, record)


def assert_charges_agree(ledger: Ledger, seen: Sequence[RequestRecord]) -> None:
    """Where the ledger claims to know whether an attempt was charged, the sandbox agrees."""
    by_id = {r.client_request_id: r for r in seen}
    for attempt in ledger.attempts:
        record = by_id.get(attempt["id"])
        charged = record is not None and record.charged_usd > 0
        if attempt["charge_status"] == "charged":
            assert charged, (attempt, record)
        elif attempt["charge_status"] == "not_charged":
            assert not charged, (attempt, record)


def _never_sent(attempt: Row) -> bool:
    return (
        attempt["outcome"] == "network"
        and attempt["http_status"] is None
        and (attempt["charge_status"] == "not_charged")
    )


def check_outputs(world: World, ledger: Ledger) -> None:
    """Every output file exists, decodes, matches its recorded sha256, size and format."""
    for out in ledger.outputs:
        path = world.data_dir / out["path"]
        data = path.read_bytes()
        assert hashlib.sha256(data).hexdigest() == out["sha256"]
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            assert (image.width, image.height) == (out["width"], out["height"])
            assert EXTENSIONS[image.format or ""] == out["format"]
        assert len(data) == out["bytes"]
