"""FirstSeen: exact first-line answers from 8-byte prefixes plus a spill file."""

from __future__ import annotations

import hashlib

from runner.manifest.seen import FirstSeen


def _digest(i: int) -> bytes:
    return hashlib.sha256(str(i).encode()).digest()


def test_first_line_is_remembered_through_growth() -> None:
    with FirstSeen() as seen:
        for line in range(1, 20_001):
            assert seen.add(_digest(line), line) is None
        assert len(seen) == 20_000
        assert seen.add(_digest(7), 30_000) == 7
        assert seen.get(_digest(19_999)) == 19_999
        assert seen.get(_digest(-1)) is None
        # Appends after a confirmation read land in the right place.
        assert seen.add(_digest(-1), 30_001) is None
        assert seen.get(_digest(-1)) == 30_001


def test_a_prefix_collision_is_not_a_duplicate() -> None:
    """Two digests sharing their first 8 bytes are told apart by the full digest."""
    a = b"\x01" * 8 + b"A" * 24
    b = b"\x01" * 8 + b"B" * 24
    with FirstSeen() as seen:
        assert seen.add(a, 1) is None
        assert seen.add(b, 2) is None
        assert seen.add(b, 3) == 2
        assert seen.add(a, 4) == 1
        assert len(seen) == 2


def test_zero_prefix_is_stored() -> None:
    """An all-zero prefix (the empty-slot marker) still works."""
    zero = bytes(32)
    with FirstSeen() as seen:
        assert seen.add(zero, 9) is None
        assert seen.add(zero, 10) == 9
