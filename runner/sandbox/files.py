"""Images the gateway hands out by URL, each downloadable until its time-to-live runs out.

The laozhang chat route (and ``response_format=url``) returns a link instead of bytes; the
link expires, which is why a client must download at once.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True, kw_only=True)
class StoredFile:
    """One served image."""

    data: bytes
    mime: str
    expires_at: float


class FileStore:
    """Expiring in-memory files, keyed by name (``<id>.<ext>``).

    Args:
        clock: monotonic seconds; injected so tests can step past the expiry.
        max_files: oldest files are dropped beyond this, bounding memory in long runs.
    """

    def __init__(self, clock: Callable[[], float], max_files: int = 2000) -> None:
        self._clock = clock
        self._max_files = max_files
        self._files: OrderedDict[str, StoredFile] = OrderedDict()

    def put(self, name: str, data: bytes, mime: str, ttl: float) -> None:
        """Serve ``data`` under ``name`` for ``ttl`` seconds."""
        self._files[name] = StoredFile(data=data, mime=mime, expires_at=self._clock() + ttl)
        while len(self._files) > self._max_files:
            self._files.popitem(last=False)

    def get(self, name: str) -> StoredFile | None:
        """The file, or ``None`` if it never existed or has expired (and is then forgotten)."""
        stored = self._files.get(name)
        if stored is None:
            return None
        if self._clock() >= stored.expires_at:
            del self._files[name]
            return None
        return stored

    def clear(self) -> None:
        """Forget every file."""
        self._files.clear()

    def __len__(self) -> int:
        return len(self._files)
