"""Downloading a URL: a source image given by URL, or an image a provider returned by URL."""

from __future__ import annotations

import ssl

import anyio
import httpx

from runner.errors import AttemptError
from runner.http.transport import Transport
from runner.models import Outcome

#: Seconds one download may take, start to end.
DOWNLOAD_TIMEOUT = 60.0


def fetch_client(
    tls: ssl.SSLContext, limits: httpx.Limits | None, timeout: httpx.Timeout
) -> httpx.AsyncClient:
    """A client without credentials for source and result URLs, on the API calls' transport."""
    return httpx.AsyncClient(transport=Transport(tls, limits), timeout=timeout)


async def download(
    client: httpx.AsyncClient, url: str, *, limit: int, deadline: float | None = None
) -> bytes:
    """Fetch ``url`` with size and time limits; redirects are followed but only over http(s).

    Args:
        client: carries no provider credentials (the URL may be on any host).
        url: an ``http(s)://`` URL.
        limit: the most bytes accepted.
        deadline: when (on ``anyio.current_time()``'s clock) the download must be over, if
            sooner than ``DOWNLOAD_TIMEOUT`` from now: the attempt's own deadline, for an image
            a provider returned by URL.

    Raises:
        AttemptError: ``download_failed`` on any failure.
    """
    if httpx.URL(url).scheme not in ("http", "https"):
        raise AttemptError(Outcome.DOWNLOAD_FAILED, f"{url!r}: only http(s) URLs are fetched")
    until = anyio.current_time() + DOWNLOAD_TIMEOUT
    try:
        with anyio.fail_at(until if deadline is None else min(until, deadline)):
            async with client.stream("GET", url, follow_redirects=True) as response:
                response.raise_for_status()
                chunks, total = [], 0
                async for chunk in response.aiter_bytes():
                    total += len(chunk)
                    if total > limit:
                        raise AttemptError(
                            Outcome.DOWNLOAD_FAILED, f"{url}: larger than {limit:,} bytes"
                        )
                    chunks.append(chunk)
                return b"".join(chunks)
    except TimeoutError as exc:
        raise AttemptError(Outcome.DOWNLOAD_FAILED, f"{url}: download timed out") from exc
    except httpx.HTTPError as exc:
        raise AttemptError(Outcome.DOWNLOAD_FAILED, f"{url}: {exc}") from exc
