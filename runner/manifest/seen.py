"""Remember which 32-byte digests a manifest has used, and on which line, in little memory.

A million-line manifest must not keep a million keys (or ids) as Python objects. ``FirstSeen``
keeps only the first 8 bytes of each digest in an open-addressing table of machine integers,
and spills the full digest and its line number to an unnamed temporary file. A hit on the
8-byte prefix is confirmed against the spilled full digest, so answers are exact.

Bound: the table is ``2**k`` slots of 8 + 4 bytes, kept between a quarter and a half full, so
memory is 24–48 bytes per distinct digest (72 for a moment while the table doubles): about
48 MB at worst for a million lines. The spill file takes 40 bytes per digest on disk and is
removed when closed.
"""

from __future__ import annotations

import tempfile
from array import array
from typing import IO

_RECORD = 40  # 32-byte digest + 8-byte line number
_INITIAL_SLOTS = 1 << 12


class FirstSeen:
    """A set of digests that also answers "first seen on which line?"."""

    __slots__ = ("_count", "_mask", "_ordinals", "_prefixes", "_spill", "_spill_at_end")

    def __init__(self) -> None:
        self._prefixes = array("Q", bytes(8 * _INITIAL_SLOTS))  # 0 marks an empty slot
        self._ordinals = array("I", bytes(4 * _INITIAL_SLOTS))
        self._mask = _INITIAL_SLOTS - 1
        self._count = 0
        self._spill: IO[bytes] | None = None
        self._spill_at_end = True

    def __len__(self) -> int:
        return self._count

    def add(self, digest: bytes, line: int) -> int | None:
        """Record ``digest`` (exactly 32 bytes, e.g. a sha256) as seen on ``line``.

        Returns:
            The line it was first seen on if it was already recorded (nothing is recorded
            then), else ``None``.
        """
        prefix = int.from_bytes(digest[:8], "little") or 1
        prefixes = self._prefixes
        slot = prefix & self._mask
        while probe := prefixes[slot]:
            if probe == prefix:
                first = self._confirm(self._ordinals[slot], digest)
                if first is not None:
                    return first
            slot = (slot + 1) & self._mask
        prefixes[slot] = prefix
        self._ordinals[slot] = self._count
        self._append(digest, line)
        self._count += 1
        if 2 * self._count > len(prefixes):
            self._grow()
        return None

    def get(self, digest: bytes) -> int | None:
        """The line ``digest`` was first seen on, or ``None``; records nothing."""
        prefix = int.from_bytes(digest[:8], "little") or 1
        slot = prefix & self._mask
        while probe := self._prefixes[slot]:
            if probe == prefix:
                first = self._confirm(self._ordinals[slot], digest)
                if first is not None:
                    return first
            slot = (slot + 1) & self._mask
        return None

    def close(self) -> None:
        """Drop the spill file."""
        if self._spill is not None:
            self._spill.close()
            self._spill = None

    def _spill_file(self) -> IO[bytes]:
        if self._spill is None:
            # Owned by this object for its whole life; closed in close().
            self._spill = tempfile.TemporaryFile(prefix="imagerun-seen-")  # noqa: SIM115
        return self._spill

    def _append(self, digest: bytes, line: int) -> None:
        spill = self._spill_file()
        if not self._spill_at_end:
            # Only after a confirmation read: sequential appends keep the write buffer intact.
            spill.seek(self._count * _RECORD)
            self._spill_at_end = True
        spill.write(digest + line.to_bytes(8, "little"))

    def _confirm(self, ordinal: int, digest: bytes) -> int | None:
        spill = self._spill_file()
        spill.seek(ordinal * _RECORD)
        self._spill_at_end = False
        record = spill.read(_RECORD)
        if record[:32] != digest:
            return None
        return int.from_bytes(record[32:], "little")

    def _grow(self) -> None:
        old_prefixes, old_ordinals = self._prefixes, self._ordinals
        size = 2 * len(old_prefixes)
        mask = size - 1
        prefixes = array("Q", bytes(8 * size))
        ordinals = array("I", bytes(4 * size))
        for prefix, ordinal in zip(old_prefixes, old_ordinals, strict=True):
            if prefix:
                slot = prefix & mask
                while prefixes[slot]:
                    slot = (slot + 1) & mask
                prefixes[slot] = prefix
                ordinals[slot] = ordinal
        self._prefixes, self._ordinals, self._mask = prefixes, ordinals, mask

    def __enter__(self) -> FirstSeen:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
