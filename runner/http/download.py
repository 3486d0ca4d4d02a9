"""Downloading a URL: a source image given by URL, or an image a provider returned by URL."""

from __future__ import annotations

import anyio
import httpx

from runner.errors import AttemptError
from runner.models import Outcome

#: Seconds one download may take, start to end.
DOWNLOAD_TIMEOUT = 60.0


async def download(client: httpx.AsyncClient, url: str, *, limit: int) -> bytes:
    """Fetch ``url`` with size and time limits; redirects are followed but only over http(s).

    Args:
        client: carries no provider credentials (the URL may be on any host).
        url: an ``http(s)://`` URL.
        limit: the most bytes accepted.

    Raises:
        AttemptError: ``download_failed`` on any failure.
    """
    if httpx.URL(url).scheme not in ("http", "https"):
        raise AttemptError(Outcome.DOWNLOAD_FAILED, f"{url!r}: only http(s) URLs are fetched")
    try:
        with anyio.fail_after(DOWNLOAD_TIMEOUT):
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
