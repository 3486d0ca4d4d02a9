"""``imagerun demo``: the whole loop, offline, on the sandbox.

Starts the sandbox on a free loopback port (with a little latency and a few injected faults,
so retries show), submits the example manifests on sandbox routes of every shape (the product
prompts twice: synchronously and through the sandbox's Batch API, its 24 h window compressed
to a few seconds, so the two prices read side by side), runs them,
exports an HTML gallery with an index of the batches, ends with a comparison of two sandbox
routes on the example edits (one told to ignore its source, so a flag shows) and says where
everything is.

The demo is a script over :mod:`runner.app`, as a user at the terminal would type it: it
starts the sandbox and points the sandbox routes at it, then calls ``submit``, ``run``,
``status`` and ``export``; everything that touches the database or the engine happens there.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

import anyio

from runner import app
from runner.config import Settings, load_settings
from runner.routes.catalog import env_key
from runner.run.worker import RunOptions
from runner.sandbox import FaultKind, Latency, SandboxConfig, SandboxHandle, running_sandbox
from runner.store import BatchStatus

if TYPE_CHECKING:
    from runner.run.worker import Runner

#: (batch name, sandbox route, example manifest): every shape, generations and edits.
#: ``demo-batch`` holds the same prompts as ``demo-products``, through the Batch API.
DEMO_BATCHES: tuple[tuple[str, str, str], ...] = (
    ("demo-products", "sandbox-openai", "products.jsonl"),
    ("demo-batch", "sandbox-openai-batch", "products.jsonl"),
    ("demo-edits", "sandbox-openai", "edits.jsonl"),
    ("demo-responses", "sandbox-openai-responses", "ad-variants.csv"),
    ("demo-vip", "sandbox-laozhang-vip", "laozhang-vip.jsonl"),
    ("demo-chat", "sandbox-laozhang-chat", "ad-variants.csv"),
)


def examples_dir() -> Path:
    """The example manifests: packaged in a wheel, or ``jobs/examples`` in a checkout."""
    packaged = Path(str(resources.files("runner"))) / "_examples"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[2] / "jobs" / "examples"


#: The demo batch that runs through the Batch API, and the one with the same prompts that
#: does not.
BATCH_DEMO, SYNC_DEMO = "demo-batch", "demo-products"
#: Seconds standing for the Batch API's 24 h window in the demo.
DEMO_BATCH_WINDOW = 4.0


def demo_sandbox_config(seed: int = 7) -> SandboxConfig:
    """A little latency and a few server errors and 429s, so that retries show; a remote
    batch's 24 h window compressed to a few seconds."""
    return SandboxConfig(
        latency=Latency(mean=0.4, jitter=0.3),
        fault_rates={FaultKind.SERVER_ERROR: 0.08, FaultKind.RATE_LIMIT: 0.04},
        seed=seed,
        batch_window=DEMO_BATCH_WINDOW,
    )


def sandbox_environ(handle: SandboxHandle, base: Mapping[str, str]) -> dict[str, str]:
    """Point every ``sandbox*`` route at ``handle`` through ``IMAGERUN_ROUTE_*_BASE_URL``."""
    env = dict(base)
    for name in load_settings(environ=base).catalog.routes:
        if name == "sandbox" or name.startswith("sandbox-openai"):
            env[env_key(name, "BASE_URL")] = handle.openai_base
        elif name.startswith("sandbox-"):
            env[env_key(name, "BASE_URL")] = handle.laozhang_base
    return env


@dataclass(frozen=True, slots=True, kw_only=True)
class BatchPrice:
    """The Batch API demo batch's cost beside the synchronous one.

    Attributes:
        images: images the batch route delivered; ``usd`` what they cost there.
        synchronous_usd: the same attempts at the synchronous price.
        sync_images / sync_usd: the same prompts run on the synchronous route.
    """

    route: str
    images: int
    usd: float
    synchronous_usd: float
    sync_route: str
    sync_images: int
    sync_usd: float


@dataclass(frozen=True, slots=True, kw_only=True)
class DemoResult:
    """What the demo did: its batches' status, the gallery, and the requests the sandbox saw."""

    workdir: Path
    statuses: list[BatchStatus]
    gallery: Path | None
    #: The comparison page of two sandbox routes.
    comparison: Path | None
    requests_seen: int
    clean: bool
    #: What the Batch API demo batch cost beside the synchronous one.
    batch_price: BatchPrice | None = None

    @property
    def routes(self) -> int:
        """How many sandbox routes the demo's batches ran on."""
        return len({s.batch.route for s in self.statuses})


async def run_demo(
    workdir: Path,
    environ: Mapping[str, str],
    *,
    on_start: Callable[[Runner], None] | None = None,
    config: SandboxConfig | None = None,
) -> DemoResult:
    """Run the demo in ``workdir`` (created afresh) and return what happened."""
    await anyio.to_thread.run_sync(_fresh_dir, workdir)
    examples = examples_dir()
    with running_sandbox(config or demo_sandbox_config()) as handle:
        settings = load_settings(
            db=f"sqlite+aiosqlite:///{workdir / 'imagerun.db'}",
            data=workdir / "data",
            environ=sandbox_environ(handle, environ),
        )
        for name, route, manifest in DEMO_BATCHES:
            await app.submit(settings, examples / manifest, route, name=name)
        names = [name for name, _, _ in DEMO_BATCHES]
        result = await app.run(
            settings,
            names,
            RunOptions(concurrency=8, retry_scale=0.2, handle_signals=True, grace_seconds=5),
            on_start=on_start,
        )
        statuses = (await app.status(settings, names)).batches
        price = await _batch_price(settings, statuses)
        gallery = await _gallery(settings, workdir, statuses)
        comparison = await _comparison(settings, workdir, examples)
        seen = len(handle.sandbox.requests())
    return DemoResult(
        workdir=workdir,
        statuses=statuses,
        gallery=gallery,
        comparison=comparison,
        requests_seen=seen,
        clean=result.report is not None and result.report.clean,
        batch_price=price,
    )


def _fresh_dir(path: Path) -> None:
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)


async def _batch_price(settings: Settings, statuses: list[BatchStatus]) -> BatchPrice | None:
    """The Batch API batch's spend, at its price and at the synchronous one, beside the
    synchronous batch of the same prompts."""
    by_name = {s.batch.name: s for s in statuses}
    batch, sync = by_name.get(BATCH_DEMO), by_name.get(SYNC_DEMO)
    if batch is None or sync is None:
        return None
    report = await app.costs(settings, batch.batch.id)
    spend = next((r for r in report.routes if r.route == batch.batch.route), None)
    if spend is None:
        return None
    return BatchPrice(
        route=batch.batch.route,
        images=batch.outputs,
        usd=batch.spent_usd,
        synchronous_usd=spend.synchronous_usd or batch.spent_usd,
        sync_route=sync.batch.route,
        sync_images=sync.outputs,
        sync_usd=sync.spent_usd,
    )


async def _gallery(settings: Settings, workdir: Path, statuses: list[BatchStatus]) -> Path:
    from runner.export.batches_index import batch_card, render_index

    out = workdir / "gallery"
    cards = []
    for status in statuses:
        report = await app.export(
            settings, status.batch.id, out_dir=out, formats=["html", "files"], include_failed=True
        )
        cards.append(batch_card(report, status, out))
    index = out / "index.html"
    await anyio.Path(index).write_text(render_index("imagerun demo galleries", cards), "utf-8")
    return index


async def _comparison(settings: Settings, workdir: Path, examples: Path) -> Path | None:
    """The example edits on two sandbox routes, one edit told to ignore its source."""
    from runner.compare import ComparisonOptions, ComparisonReport, FitChoice

    lines = (await anyio.Path(examples / "edits.jsonl").read_text("utf-8")).splitlines()
    fitted = [json.loads(line) for line in lines if line.strip()]
    fitted[-1]["prompt"] += " #IGNORE_SOURCE#"
    for line in fitted:
        line["images"] = [str(examples / ref) for ref in line["images"]]
        if "mask" in line:
            line["mask"] = str(examples / line["mask"])
    manifest = workdir / "compare-edits.jsonl"
    text = "".join(json.dumps(line) + "\n" for line in fitted)
    await anyio.Path(manifest).write_text(text, "utf-8")
    how = ComparisonOptions(
        name="demo-compare",
        out_dir=workdir / "compare",
        choices={"sandbox-laozhang-vip": FitChoice.ADAPT},
        run=RunOptions(concurrency=8, retry_scale=0.2, handle_signals=True, grace_seconds=5),
    )
    routes = ("sandbox-openai", "sandbox-laozhang-vip")
    report = await app.compare(settings, manifest, routes, how)
    return report.page if isinstance(report, ComparisonReport) else None
