"""Running work while watching for the client to hang up.

A client that times out closes its connection; the sandbox must notice while it is still
"generating" so the request settles as a ``timeout`` (charged or not per policy) instead of
sleeping on for nobody.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

import anyio
from starlette.types import Receive

T = TypeVar("T")


class ClientGone(Exception):
    """The client disconnected before the answer was ready."""


async def unless_client_leaves(receive: Receive, work: Callable[[], Awaitable[T]]) -> T:
    """Run ``work`` and return its result, cancelling it if the client disconnects first.

    Must be called after the request body has been read, so that ``receive`` only has the
    disconnect left to report.

    Raises:
        ClientGone: the client disconnected first.
        Exception: whatever ``work`` raised (unwrapped from the task group).
    """
    results: list[T] = []
    errors: list[Exception] = []
    gone = False

    async with anyio.create_task_group() as group:

        async def watch() -> None:
            nonlocal gone
            while (await receive())["type"] != "http.disconnect":
                pass
            gone = True
            group.cancel_scope.cancel()

        async def run() -> None:
            try:
                results.append(await work())
            except Exception as exc:  # re-raised below, outside the group's ExceptionGroup
                errors.append(exc)
            group.cancel_scope.cancel()

        group.start_soon(watch)
        group.start_soon(run)
    if gone:
        raise ClientGone
    if errors:
        raise errors[0]
    return results[0]
