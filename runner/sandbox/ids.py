"""Identifiers in the formats the emulated providers use.

Random parts come from a per-request ``random.Random`` (:func:`request_rng`); the sandbox
salts the one for ids per run (``Sandbox.id_rng``), so ids never repeat across runs, while
fault and latency draws stay reproducible from the seed.
"""

from __future__ import annotations

import random
import string
from datetime import UTC, datetime

_ALNUM = string.ascii_letters + string.digits
_HEX = "0123456789abcdef"


def request_rng(seed: int, seq: int, purpose: str) -> random.Random:
    """A generator private to one request and one purpose (ids, faults, latency)."""
    return random.Random(f"{seed}:{seq}:{purpose}")


def build_hash(seed: int) -> str:
    """The 8-hex build hash a new-api binary puts in every request id."""
    return "".join(random.Random(f"{seed}:build").choices(_HEX, k=8))


def openai_request_id(rng: random.Random) -> str:
    """An ``x-request-id`` value: ``req_`` and 32 hex digits."""
    return "req_" + "".join(rng.choices(_HEX, k=32))


def oneapi_request_id(rng: random.Random, wall_ns: int, build: str) -> str:
    """An ``X-Oneapi-Request-Id``: UTC ``yyyyMMddHHmmss`` + nanoseconds + build hash + 8 chars.

    The nanoseconds are zero-padded to 9 digits so every id has the same length.
    """
    seconds, nanos = divmod(wall_ns, 1_000_000_000)
    stamp = datetime.fromtimestamp(seconds, UTC).strftime("%Y%m%d%H%M%S")
    return f"{stamp}{nanos:09d}{build}{''.join(rng.choices(_ALNUM, k=8))}"


def object_id(rng: random.Random, prefix: str, length: int = 24) -> str:
    """An object id such as ``ig_…``, ``resp_…``, ``msg_…`` or ``chatcmpl-…``."""
    return prefix + "".join(rng.choices(_HEX, k=length))


def alnum_id(rng: random.Random, prefix: str, length: int = 22) -> str:
    """An object id with a base-62 tail, as OpenAI's ``file-…`` ids have."""
    return prefix + "".join(rng.choices(_ALNUM, k=length))
