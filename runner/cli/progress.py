"""Live progress of a run: a Rich display on a terminal, periodic plain lines otherwise."""

from __future__ import annotations

import sys
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, TypeVar

import anyio
from rich.live import Live
from rich.text import Text

from runner.cli.output import err, money
from runner.run.stats import Paced, RemoteProgress, RoutePause, RunStats

if TYPE_CHECKING:
    from runner.run.worker import Runner

T = TypeVar("T")

#: A route's pause shows on the line once it has more than this left (seconds).
PAUSE_SHOWN_S = 3.0


async def with_progress(work: Callable[[Callable[[Runner], None]], Awaitable[T]]) -> T:
    """Await ``work(on_start)``, showing the progress of the runner it hands to ``on_start``."""
    started: list[Runner] = []
    async with anyio.create_task_group() as tg:
        tg.start_soon(show_progress, lambda: started[0].stats if started else None)
        result = await work(started.append)
        tg.cancel_scope.cancel()
    return result


def describe(stats: RunStats, now: float) -> str:
    """One line: done/failed/in flight, rate, ETA, spend so far."""
    elapsed = max(1e-6, now - stats.started)
    done = stats.finished
    rate = done / elapsed
    remaining = max(0, stats.total - stats.done_before - done - stats.released)
    eta = f"{remaining / rate:,.0f}s" if rate > 0 and remaining else "-"
    pct = 100 * (stats.done_before + done) / stats.total if stats.total else 100.0
    parts = [
        f"{stats.done_before + done}/{stats.total} ({pct:.0f}%)",
        f"ok {stats.succeeded}",
        f"failed {stats.failed}",
        f"in flight {stats.in_flight}",
        f"retrying {stats.retries_scheduled}",
        f"{rate:,.1f} jobs/s",
        f"ETA {eta}",
        f"spent {money(stats.spent_usd)}",
    ]
    parts += [
        pace_text(route, gate, named=len(stats.gates) > 1) for route, gate in stats.gates.items()
    ]
    parts += [
        pause_text(route, pause, now, named=len(stats.gates) > 1)
        for route, pause in shown_pauses(stats, now).items()
    ]
    parts += [remote_text(rb_id, rb, now) for rb_id, rb in sorted(stats.remote.items())]
    if stats.stopping:
        parts.append("stopping…")
    return " | ".join(parts)


def remote_text(rb_id: str, rb: RemoteProgress, now: float) -> str:
    """A remote batch: its status, lines done of all, how long it has waited."""
    done = rb.completed + rb.failed
    return f"{rb_id} {rb.status} {done}/{rb.lines} ({now - rb.since:,.0f}s)"


def pace_text(route: str, gate: Paced, *, named: bool) -> str:
    """``pace 294/min (from headers)``, the route's name first when the run has several."""
    text = f"pace {gate.pace.rpm:,.0f}/min ({gate.pace.reason})"
    return f"{route} {text}" if named else text


def shown_pauses(stats: RunStats, now: float) -> dict[str, RoutePause]:
    """Each route's pause with more than ``PAUSE_SHOWN_S`` left: the one this process's
    answers gave it, else one its gate took from another worker (a shared PostgreSQL gate)."""
    shown = {r: p for r, p in stats.pauses.items() if p.left(now) > PAUSE_SHOWN_S}
    for route, gate in stats.gates.items():
        if route not in shown and gate.paused_for > PAUSE_SHOWN_S:
            shown[route] = RoutePause(until=now + gate.paused_for, reason="another worker's 429")
    return shown


def pause_text(route: str, pause: RoutePause, now: float, *, named: bool) -> str:
    """``paused 4m05s (429 Retry-After)``: what is left of a route's pause, and why."""
    left = round(pause.left(now))
    if left < 120:
        clock = f"{left}s"
    elif left < 7200:
        clock = f"{left // 60}m{left % 60:02d}s"
    else:
        clock = f"{left // 3600}h{left % 3600 // 60:02d}m"
    text = f"paused {clock} ({pause.reason})"
    return f"{route} {text}" if named else text


async def show_progress(get_stats: Callable[[], RunStats | None], *, interval: float = 5.0) -> None:
    """Render progress until cancelled."""
    if sys.stderr.isatty():
        with Live(Text("starting…"), console=err, refresh_per_second=4, transient=True) as live:
            while True:
                if (stats := get_stats()) is not None:
                    live.update(Text(describe(stats, anyio.current_time())))
                await anyio.sleep(0.25)
    else:
        last = time.monotonic()
        while True:
            await anyio.sleep(0.5)
            if time.monotonic() - last >= interval and (stats := get_stats()) is not None:
                last = time.monotonic()
                err.print(describe(stats, anyio.current_time()), markup=False, highlight=False)
