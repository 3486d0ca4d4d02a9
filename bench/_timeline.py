"""Where one start-up of ``imagerun run`` goes, step by step (for ``queue_scale.py``).

``app.run`` runs in this process with every store verb, ``adopt_orphans`` and
``sweep_temporaries`` timed until the first request leaves, and the query plan of every
statement that took over :data:`SLOW_STATEMENT` seconds.
"""

from __future__ import annotations

import functools
import inspect
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anyio
from sqlalchemy import Engine, event

import runner.run.worker
from runner import app
from runner.config import load_settings
from runner.http.client import ApiClient
from runner.run.worker import RunOptions
from runner.store import Store

#: A statement slower than this during start-up gets its query plan reported.
SLOW_STATEMENT = 0.02


class Timeline:
    """Times store verbs, named start-up steps and SQL statements until the first request."""

    def __init__(self) -> None:
        self.origin = time.perf_counter()
        self.steps: list[tuple[str, float, float]] = []
        self.statements: list[tuple[float, str, Any]] = []
        self.first_send: float | None = None
        self.sent = anyio.Event()

    def now(self) -> float:
        return time.perf_counter() - self.origin

    def wrap(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def timed_async(*args: Any, **kwargs: Any) -> Any:
                started = self.now()
                try:
                    return await fn(*args, **kwargs)
                finally:
                    if self.first_send is None:
                        self.steps.append((name, started, self.now() - started))

            return timed_async

        @functools.wraps(fn)
        def timed_sync(*args: Any, **kwargs: Any) -> Any:
            started = self.now()
            try:
                return fn(*args, **kwargs)
            finally:
                if self.first_send is None:
                    self.steps.append((name, started, self.now() - started))

        return timed_sync

    @contextmanager
    def installed(self) -> Iterator[None]:
        missing = object()
        patched: list[tuple[Any, str, Any]] = []

        def patch(owner: Any, attr: str, value: Any) -> None:
            patched.append((owner, attr, vars(owner).get(attr, missing)))
            setattr(owner, attr, value)

        for attr, fn in inspect.getmembers(Store, inspect.iscoroutinefunction):
            if not attr.startswith("_") and attr not in ("open", "close"):
                patch(Store, attr, self.wrap(f"store.{attr}", fn))
        patch(Store, "open", classmethod(self.wrap("store.open", vars(Store)["open"].__func__)))
        for attr in ("adopt_orphans", "sweep_temporaries"):
            patch(runner.run.worker, attr, self.wrap(attr, getattr(runner.run.worker, attr)))
        send = ApiClient.send

        async def first_send(client: ApiClient, *args: Any, **kwargs: Any) -> Any:
            if self.first_send is None:
                self.first_send = self.now()
                self.sent.set()
            return await send(client, *args, **kwargs)

        patch(ApiClient, "send", first_send)
        starts: dict[Any, float] = {}

        def before(conn: Any, cursor: Any, statement: str, params: Any, *_: Any) -> None:
            starts[cursor] = time.perf_counter()

        def after(conn: Any, cursor: Any, statement: str, params: Any, *_: Any) -> None:
            spent = time.perf_counter() - starts.pop(cursor, time.perf_counter())
            if self.first_send is None:
                self.statements.append((spent, statement, params))

        event.listen(Engine, "before_cursor_execute", before)
        event.listen(Engine, "after_cursor_execute", after)
        try:
            yield
        finally:
            event.remove(Engine, "before_cursor_execute", before)
            event.remove(Engine, "after_cursor_execute", after)
            for owner, attr, value in reversed(patched):
                if value is missing:
                    delattr(owner, attr)
                else:
                    setattr(owner, attr, value)


def startup_timeline(env: dict[str, str], db_file: Path) -> dict[str, Any]:
    """One ``app.run`` in this process, timed step by step until its first request leaves."""
    timeline = Timeline()
    settings = timeline.wrap("load_settings", load_settings)(environ=env)

    async def go() -> None:
        async with anyio.create_task_group() as tg:
            holder: list[runner.run.worker.Runner] = []

            async def stop_after_first() -> None:
                await timeline.sent.wait()
                while not holder:
                    await anyio.sleep(0.01)
                holder[0].request_stop()

            tg.start_soon(stop_after_first)
            options = RunOptions(concurrency=8, rpm=100_000_000, handle_signals=False)
            await app.run(settings, [], options, on_start=holder.append)

    with timeline.installed():
        anyio.run(go)
    slow = sorted(timeline.statements, key=lambda s: -s[0])
    plans = []
    with sqlite3.connect(db_file) as db:
        for spent, statement, params in slow:
            if spent < SLOW_STATEMENT:
                break
            if isinstance(params, list):  # executemany
                continue
            plan = [row[3] for row in db.execute(f"EXPLAIN QUERY PLAN {statement}", params)]
            plans.append({"s": round(spent, 3), "sql": " ".join(statement.split()), "plan": plan})
    return {
        "first_request_s": timeline.first_send,
        "steps": [[n, round(at, 3), round(s, 3)] for n, at, s in timeline.steps],
        "slow_statements": plans,
    }
