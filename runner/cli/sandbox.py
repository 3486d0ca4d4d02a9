"""The local provider emulator: ``sandbox`` serves it, ``demo`` runs the whole loop on it."""

from __future__ import annotations

import os
from pathlib import Path

import anyio
import click

from runner.cli.batch_status import status_table
from runner.cli.command import async_command
from runner.cli.demo import DemoResult, run_demo
from runner.cli.output import console, money, say, warn
from runner.cli.progress import with_progress
from runner.sandbox import DEFAULT_MODERATION_WORD, FaultKind

_KINDS = ", ".join(k.value for k in FaultKind)

_SANDBOX_EPILOG = f"""\b
Triggers in a prompt:
  {DEFAULT_MODERATION_WORD!r}, in any case: blocked by moderation (HTTP 400, outcome
      moderation_blocked); --moderation-word changes the word, "" turns it off.
  A --rule MARKER, anywhere in the prompt (case-sensitive): the fault KIND, for
      the first TIMES such requests (default: every one), on one profile only
      with @openai or @laozhang. Example: --rule '#RESET#:reset:2'
      --rule '#BUSY#:unavailable@laozhang'.
  #IGNORE_SOURCE# in an edit's prompt: the source is ignored and a fresh
      picture drawn (imagerun compare flags it ignored_source); #SAME_SOURCE#:
      the source comes back unchanged (flagged unchanged).

Fault kinds (--rule KIND, --faults KIND=RATE): {_KINDS}.

\b
Batch API (/openai/v1/files, /openai/v1/batches): each line runs like a
synchronous request (the triggers above strike per line) at half price; the
24 h window is --batch-window seconds, lines not started by then expire.

\b
Keys: any sk-... key works; one containing "invalid" gets 401. On /laozhang
the prefix picks the token group: sk-default-, sk-sora2official-,
sk-enterprise-.
"""


@click.command(epilog=_SANDBOX_EPILOG)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", "-p", default=8765, show_default=True, type=int)
@click.option("--latency", default=0.0, show_default=True, help="Mean seconds per image.")
@click.option("--jitter", default=0.0, show_default=True)
@click.option("--rpm", type=int, help="Requests/min per key, enforced with 429s.")
@click.option("--ipm", type=int, help="Images/min per key.")
@click.option(
    "--limiter",
    type=click.Choice(["bucket", "strict", "window", "sliding"]),
    default="bucket",
    show_default=True,
    help="How --rpm/--ipm are measured: token bucket, one per 60/R s, fixed or sliding window.",
)
@click.option("--burst", type=click.IntRange(1), help="Back-to-back requests (bucket, strict).")
@click.option(
    "--limiter-window",
    type=click.FloatRange(min=0.001),
    default=1.0,
    show_default=True,
    help="Seconds of a window or sliding limiter.",
)
@click.option("--no-limit-headers", is_flag=True, help="Send no x-ratelimit-* headers.")
@click.option("--faults", help='Fault rates, e.g. "server_error=0.05,reset=0.01".')
@click.option(
    "--rule",
    "rules",
    multiple=True,
    help='Scripted fault "MARKER:KIND[:TIMES][@PROFILE]" for prompts containing MARKER.',
)
@click.option(
    "--moderation-word",
    default=DEFAULT_MODERATION_WORD,
    show_default=True,
    help='Prompts containing it (any case) are blocked by moderation; "" turns it off.',
)
@click.option(
    "--policy",
    default="new-api",
    show_default=True,
    help="Failure-charge policy: none, new-api, all, or outcome classes.",
)
@click.option("--balance", default=100.0, show_default=True, help="Starting USD per key.")
@click.option("--hang", default=30.0, show_default=True, help="Seconds a hang fault holds.")
@click.option("--seed", default=0, show_default=True)
@click.option("--tiny", is_flag=True, help="64x64 images whatever the size (benchmarks).")
@click.option("--grain", is_flag=True, help="Photo-like, barely compressible images.")
@click.option(
    "--batch-window",
    type=click.FloatRange(min=0.001),
    default=5.0,
    show_default=True,
    help="Seconds that stand for a batch's 24 h window; lines not done by then expire.",
)
@click.option("--batch-validating", type=click.FloatRange(min=0), default=0.1, show_default=True)
@click.option("--batch-finalizing", type=click.FloatRange(min=0), default=0.1, show_default=True)
@click.option(
    "--batch-concurrency",
    type=click.IntRange(1),
    default=8,
    show_default=True,
    help="Lines of one batch generated at the same time.",
)
@click.option(
    "--file-create-delay",
    type=click.FloatRange(min=0),
    default=0.0,
    help="Seconds POST /v1/files waits after storing the file, before answering.",
)
@click.option(
    "--batch-create-delay",
    type=click.FloatRange(min=0),
    default=0.0,
    help="Seconds POST /v1/batches waits after creating the batch, before answering.",
)
def sandbox(host: str, port: int, **options: object) -> None:
    """Run the local provider emulator (official profile /openai/v1, gateway /laozhang/v1)."""
    from runner.sandbox import config_from_options, serve

    try:
        config = config_from_options(**options)  # type: ignore[arg-type]
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    warn(
        f"sandbox: http://{host}:{port}/openai/v1 (official) and "
        f"http://{host}:{port}/laozhang/v1 (gateway); Ctrl-C stops it"
    )
    serve(config, host, port)


@async_command()
@click.option(
    "--dir",
    "workdir",
    type=click.Path(path_type=Path),
    default=Path("imagerun-demo"),
    show_default=True,
    help="Where the demo's database, outputs and gallery go (recreated).",
)
async def demo(ctx: click.Context, workdir: Path) -> int:
    """The whole loop offline: sandbox, submit the examples, run, export a gallery."""
    target = Path(await anyio.Path(workdir).resolve())
    result = await with_progress(
        lambda on_start: run_demo(target, dict(os.environ), on_start=on_start)
    )
    print_demo(result)
    return 0 if result.clean else 1


def print_demo(result: DemoResult) -> None:
    """The demo's batches, how many images and requests, and where everything is."""
    console.print(status_table(result.statuses))
    total = sum(s.outputs for s in result.statuses)
    spent = sum(s.spent_usd for s in result.statuses)
    say(
        f"{total} images from {len(result.statuses)} batches on {result.routes} sandbox routes; "
        f"{result.requests_seen} requests reached the sandbox; expected spend {money(spent)} "
        "(sandbox money)."
    )
    if (price := result.batch_price) is not None:
        say(
            f"Batch API ({price.route}): {price.images} images for {money(price.usd)}, "
            f"{money(price.synchronous_usd)} at the synchronous price."
        )
        same = f"{price.sync_images} images for {money(price.sync_usd)}"
        say(f"Same prompts on {price.sync_route}: {same}.")
    say(f"Database and outputs: {result.workdir}")
    if result.gallery:
        say(f"Gallery: {result.gallery}")
    if result.comparison:
        say(f"Comparison: {result.comparison}")
