"""``imagerun cancel`` for remote batches: each unfinished one is cancelled on the provider.

Lines the provider finished anyway are kept and paid when the remote batch is applied (by the
run driving it, or the next run); the rest are then cancelled, never re-sent.
"""

from __future__ import annotations

from collections.abc import Mapping

import httpx

from runner.abc import RemoteBatches
from runner.errors import AttemptError
from runner.http.client import ApiClient
from runner.remote.client import TERMINAL, RemoteClient
from runner.routes import Route


async def cancel_remote(
    store: RemoteBatches, route: Route, batch_id: str, environ: Mapping[str, str]
) -> int:
    """Mark the batch's unfinished remote batches cancelled and cancel those on the provider;
    returns how many were asked to stop (one the provider refuses to cancel is left as it is:
    its lines are applied as they come).
    """
    marked = await store.request_remote_cancel(batch_id)
    live = [rb for rb in marked if rb.remote_id and rb.status not in TERMINAL]
    key = route.api_key(environ)
    if not live or key is None:
        return len(marked)
    timeout = httpx.Timeout(route.timeout, connect=route.connect_timeout)
    async with ApiClient(route.base_url, api_key=key, timeout=timeout) as api:
        remote = RemoteClient(api)
        for rb in live:
            assert rb.remote_id is not None
            try:
                await remote.cancel(rb.remote_id)
            except AttemptError:
                continue  # it ended meanwhile, or the provider is away: applied as it ends
    return len(marked)
