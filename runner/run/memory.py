"""A byte budget for big responses: what bounds a run's memory, whatever its concurrency.

An image comes back as base64 inside JSON, so one 3840x2160 PNG (~20 MB) is held as the
response body, then as the decoded string, then as bytes, then as pixels while it is verified.
Thirty-two of those at once would need gigabytes. Before reading a large body, an attempt
reserves a few times its ``Content-Length`` from this budget, and gives it back once the image
is on disk, so large images queue for memory instead of piling up. Small bodies skip it.
"""

from __future__ import annotations

import anyio

#: Bodies smaller than this are not worth accounting for.
SMALL_BODY = 1024 * 1024
#: Copies of a body alive at the worst moment (JSON text, decoded bytes, pixels).
COPIES = 3
#: Reserved for a large body whose length the server did not announce.
UNKNOWN_LENGTH = 32 * 1024 * 1024


class ByteBudget:
    """A counting semaphore over bytes.

    Args:
        limit: bytes that may be reserved at once. A single reservation larger than the whole
            budget is cut to the budget (it then runs alone rather than never).
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._used = 0
        self._changed = anyio.Condition()

    def cost(self, content_length: int | None) -> int:
        """Bytes to reserve for a body of ``content_length`` (0 for a small one)."""
        if content_length is not None and content_length < SMALL_BODY:
            return 0
        return min(self.limit, COPIES * (content_length or UNKNOWN_LENGTH))

    async def acquire(self, amount: int) -> int:
        """Wait until ``amount`` bytes fit, then hold them; returns what is held.

        A waiter that is cancelled holds nothing.
        """
        if amount <= 0:
            return 0
        async with self._changed:
            while self._used + amount > self.limit:
                await self._changed.wait()
            self._used += amount
        return amount

    async def release(self, amount: int) -> None:
        """Give back ``amount`` held bytes; shielded, so a cancelled holder still returns them."""
        if amount <= 0:
            return
        with anyio.CancelScope(shield=True):
            async with self._changed:
                self._used -= amount
                self._changed.notify_all()
