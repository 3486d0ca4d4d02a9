"""Real imagerun against the zoo: a route pointed at the server, a run, the money invariants.

A test starts the zoo on one case, points a route (``openai`` by default) at it through
``IMAGERUN_ROUTE_<NAME>_BASE_URL``, submits a manifest, runs it to the end and then holds three
views of what happened against each other: what the server received and billed (its log),
the ledger (job, attempt and output rows), and the image files on disk.
"""

from __future__ import annotations

import io
import json
import os
import sys
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
from PIL import Image

from runner import app
from runner.cli.command import INTERNAL_ERROR
from runner.config import Settings, load_settings
from runner.routes.catalog import env_key
from runner.run.worker import RunOptions
from runner.store import BatchInfo

from ..e2e.harness import Ledger, check_outputs, png, read_ledger, route_config
from .cases import Case
from .server import Seen, Zoo

#: The zoo's image: what every 200 delivers (a size no job asks for unless it means to).
IMAGE_SIZE = (96, 64)
IMAGE = png(*IMAGE_SIZE, colour=(30, 120, 200))
#: Keys of the routes the zoo stands in for (never real ones: loopback only).
API_KEYS = {"openai": ("OPENAI_API_KEY", "sk-zoo"), "laozhang": ("LAOZHANG_API_KEY", "sk-zoo")}
#: Route settings every case starts from: quick, one request at a time (so a second request
#: goes on the first one's connection), few attempts.
ROUTE_DEFAULTS: dict[str, Any] = {
    "timeout": 5.0,
    "connect_timeout": 2.0,
    "max_attempts": 3,
    "rpm": 6000,
    "concurrency": 1,
}
#: A run longer than this is a hang.
RUN_DEADLINE = 15.0


def large_png() -> bytes:
    """A 12 MB PNG (uncompressed noise): more than the socket buffers hold in flight."""
    out = io.BytesIO()
    Image.frombytes("RGB", (2048, 2048), os.urandom(2048 * 2048 * 3)).save(
        out, "PNG", compress_level=0
    )
    return out.getvalue()


@dataclass(slots=True, kw_only=True)
class CaseRun:
    """What one run against the zoo left behind."""

    result: app.RunResult
    ledger: Ledger
    seen: list[Seen]
    downloads: list[Seen]

    @property
    def stopped(self) -> dict[str, str]:
        report = self.result.report
        return dict(report.stopped_routes) if report else {}

    def job_attempts(self, ext_id: str) -> list[dict[str, Any]]:
        return self.ledger.attempts_of(ext_id)

    def only_attempt(self, ext_id: str) -> dict[str, Any]:
        [attempt] = self.ledger.attempts_of(ext_id)
        return attempt


@dataclass(slots=True, kw_only=True)
class ZooWorld:
    """One test's zoo, directory, database and route."""

    zoo: Zoo
    case: Case
    root: Path
    db_url: str
    route: str = "openai"
    settings_: dict[str, Any] = field(default_factory=dict)
    #: The route's base URL when not the zoo's own (a name only a proxy can reach).
    base_url: str | None = None
    large_source: bytes = b""

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    def settings(self) -> Settings:
        config = self.root / "imagerun.toml"
        config.write_text(route_config(**{self.route: ROUTE_DEFAULTS | self.settings_}), "utf-8")
        key_env, key = API_KEYS[self.route]
        base_url = self.base_url or self.zoo.base_url
        environ = {env_key(self.route, "BASE_URL"): base_url, key_env: key}
        return load_settings(config=config, db=self.db_url, data=self.data_dir, environ=environ)

    def lines(self, jobs: int) -> list[dict[str, Any]]:
        lines: list[dict[str, Any]] = []
        for i in range(jobs):
            line: dict[str, Any] = {"id": f"job-{i}", "prompt": f"a lighthouse at dusk, take {i}"}
            if self.case.size:
                line["size"] = self.case.size
            if self.case.edit:
                line["images"] = ["source.png"]
            lines.append(line)
        return lines

    async def submit(self, jobs: int) -> BatchInfo:
        if self.case.edit:
            source = self.large_source if self.case.large else png(32, 32)
            (self.root / "source.png").write_bytes(source)
        manifest = self.root / "jobs.jsonl"
        manifest.write_text("".join(json.dumps(line) + "\n" for line in self.lines(jobs)), "utf-8")
        result = await app.submit(self.settings(), manifest, self.route, name="zoo")
        assert result.added == jobs
        return result.batch

    async def run_cli(self, jobs: int = 2, *, python_flags: Sequence[str] = ()) -> CaseRun:
        """Submit ``jobs`` lines, then ``imagerun run`` them in a child Python process."""
        batch = await self.submit(jobs)
        settings = self.settings()
        command = [
            sys.executable,
            *python_flags,
            "-m",
            "runner.cli",
            "--db",
            self.db_url,
            "--data",
            str(self.data_dir),
            "--config",
            str(settings.config_path),
            "run",
            batch.id,
        ]
        environ = {**os.environ, **settings.environ}
        with anyio.fail_after(RUN_DEADLINE * 2):
            done = await anyio.run_process(command, env=environ, check=False)
        if done.returncode == INTERNAL_ERROR or not self.zoo.seen():
            # Not an assertion: a run that never started must not pass for an expected failure.
            raise RuntimeError(f"imagerun run did not run: {done.stderr.decode()[-2000:]}")
        async with app.open_store(settings) as store:
            ledger = await read_ledger(store, batch.id)
        return CaseRun(
            result=app.RunResult(report=None, batches=[batch], nothing_to_do=False),
            ledger=ledger,
            seen=self.zoo.seen(),
            downloads=self.zoo.downloads(),
        )

    async def run_case(self, jobs: int = 2, *, deadline: float = RUN_DEADLINE) -> CaseRun:
        """Submit ``jobs`` lines, run them to the end (within ``deadline``), read it all back."""
        batch = await self.submit(jobs)
        options = RunOptions(retry_scale=0.0, handle_signals=False, grace_seconds=2.0)
        with anyio.fail_after(deadline):
            result = await app.run(self.settings(), [batch.id], options)
        async with app.open_store(self.settings()) as store:
            ledger = await read_ledger(store, batch.id)
        return CaseRun(
            result=result, ledger=ledger, seen=self.zoo.seen(), downloads=self.zoo.downloads()
        )


def assert_paid_once(
    world: ZooWorld, out: CaseRun, *, statuses: bool = True, kept: bool = True
) -> None:
    """The money invariants, for any case.

    - Every request the server received has exactly one attempt row (a followed redirect
      re-sends the same ``X-Client-Request-Id``), every row is closed, and a row the server
      never saw is never ``charged``.
    - A request that delivered an image: its row is ``charged`` with a price, its image is
      on disk and decodes, and its job sent nothing after it (no re-buy).
    - A request the server billed without delivering: ``charged`` or ``unknown``, never
      ``not_charged``. One it did not bill is never ``charged``.
    - The row carries the status and the ``x-request-id`` the server wrote (``statuses``).
    - A job's attempt count is its number of attempt rows.

    ``kept=False`` is the fallback for an answer no transport can read: a delivered image
    need not be kept, but its row must still say it may have been paid for, and the job must
    not have bought it again.
    """
    ledger = out.ledger
    by_id: dict[str, list[Seen]] = defaultdict(list)
    for seen in out.seen:
        assert seen.client_request_id, f"request {seen.number} came without X-Client-Request-Id"
        by_id[seen.client_request_id].append(seen)
    rows = {a["id"]: a for a in ledger.attempts}
    missing = set(by_id) - set(rows)
    assert not missing, f"requests the server received that the ledger lacks: {missing}"
    for attempt_id, row in rows.items():
        assert row["state"] == "done", f"attempt left open: {brief(row)}"
        if attempt_id not in by_id:
            assert row["charge_status"] != "charged", f"charged, never received: {brief(row)}"
    for attempt_id, group in by_id.items():
        _check_attempt(rows[attempt_id], group, statuses=statuses, kept=kept)
        assert all(s.status in (301, 302, 303, 307, 308) for s in group[:-1]), (
            f"one request id sent twice without a redirect: {group}"
        )
    delivered = {i for i, group in by_id.items() if any(s.delivered for s in group)}
    if kept:
        on_disk = {o["attempt_id"] for o in ledger.outputs}
        assert delivered <= on_disk, f"delivered images not kept: {delivered - on_disk}"
    for job in ledger.jobs:
        attempts = ledger.attempts_of(job["ext_id"])
        assert job["attempts"] == len(attempts), (job, attempts)
        numbers = [a["number"] for a in attempts if a["id"] in delivered]
        assert len(numbers) <= 1, f"{job['ext_id']}: an image bought {len(numbers)} times"
        if numbers:
            assert attempts[-1]["number"] == numbers[0], (
                f"{job['ext_id']}: re-sent after attempt {numbers[0]} delivered its image"
            )
    check_outputs(world, ledger)  # type: ignore[arg-type]


def brief(row: Mapping[str, Any]) -> str:
    """An attempt row in one line: what a failing assertion needs to show."""
    message = (row["error_message"] or "")[:160]
    return (
        f"attempt {row['number']} {row['outcome']} http={row['http_status']} "
        f"{row['charge_status']} ${row['expected_usd']} id={row['provider_request_id']} {message!r}"
    )


def briefs(out: CaseRun) -> list[str]:
    return [brief(a) for a in sorted(out.ledger.attempts, key=lambda a: (a["job_id"], a["number"]))]


def _check_attempt(
    row: dict[str, Any], group: Sequence[Seen], *, statuses: bool, kept: bool
) -> None:
    final = group[-1]
    charge = row["charge_status"]
    if kept and any(s.delivered for s in group):
        assert charge == "charged", f"delivered, yet {brief(row)}"
        assert (row["expected_usd"] or 0) > 0, f"delivered, priced at nothing: {brief(row)}"
    elif any(s.billed for s in group):
        assert charge in ("charged", "unknown"), f"billed by the server, yet {brief(row)}"
    else:
        assert charge != "charged", f"never billed, yet {brief(row)}"
    if statuses and final.status is not None:
        assert row["http_status"] == final.status, f"server wrote {final.status}: {brief(row)}"
        assert row["provider_request_id"] == final.request_id, (
            f"server sent x-request-id {final.request_id}: {brief(row)}"
        )


def assert_all_kept(world: ZooWorld, out: CaseRun, jobs: int) -> None:
    """Every job succeeded at its first attempt with the zoo's image, one request each.

    Where the case closes connections unannounced (``Case.racy``), a request written on a
    connection the server had just closed may fail before it reaches the server; a retry of
    that one is allowed, as long as the server never saw it and it is not recorded charged.
    """
    assert out.ledger.states() == {"succeeded": jobs}, briefs(out)
    assert len({s.client_request_id for s in out.seen}) == jobs
    seen = {s.client_request_id for s in out.seen}
    for job in out.ledger.jobs:
        *before, attempt = out.job_attempts(job["ext_id"])
        assert (attempt["outcome"], attempt["charge_status"]) == ("ok", "charged"), briefs(out)
        if world.case.racy:
            assert all(a["id"] not in seen for a in before), briefs(out)
            assert all(a["charge_status"] != "charged" for a in before), briefs(out)
        else:
            assert not before, briefs(out)
    assert [(o["width"], o["height"]) for o in out.ledger.outputs] == [IMAGE_SIZE] * jobs
