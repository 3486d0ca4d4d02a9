"""The stable job key: what makes two manifest lines "the same job".

Recipe (version ``imagerun.job.v1``): sha256 of the canonical JSON (sorted keys, no spaces,
ASCII) of the list::

    ["imagerun.job.v1", route name, effective model, prompt, params without "model",
     [source token, …], mask token or null, explicit id or null]

where a source token is ``"sha256:<hex>"`` for a local file or data URL (the *content*, so
moving the manifest folder keeps keys) and ``"url:<url>"`` for a URL. The id takes part only
when the user wrote one, so inserting a line does not change the keys of lines below it, and
re-submitting the same manifest yields the same keys. ``metadata`` is not part of the key:
it is carried along, not sent.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from typing import Any

from runner.models import SourceImage

KEY_VERSION = "imagerun.job.v1"

_CANONICAL = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
)


def source_token(source: SourceImage) -> str:
    """What a source contributes to the key: its content hash, or its URL if unhashed."""
    return f"sha256:{source.sha256}" if source.sha256 else f"url:{source.ref}"


def job_digest(
    *,
    route: str,
    model: str,
    prompt: str,
    params: Mapping[str, Any],
    images: Iterable[SourceImage],
    mask: SourceImage | None,
    explicit_id: str | None,
) -> bytes:
    """The 32-byte job key digest (``.hex()`` of it is ``JobSpec.key``)."""
    options = params
    if "model" in params:
        options = {name: value for name, value in params.items() if name != "model"}
    material = [
        KEY_VERSION,
        route,
        model,
        prompt,
        options,
        [source_token(image) for image in images],
        source_token(mask) if mask is not None else None,
        explicit_id,
    ]
    text = _CANONICAL.encode(material)
    return hashlib.sha256(text.encode("ascii")).digest()
