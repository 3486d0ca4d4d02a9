"""Manifest lines as the price engine reads them, for the pricing tests."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from runner.models import JobSpec, SourceImage
from runner.pricing import PricedJob

#: Fields of a line that are not options (``params``) once the line is validated.
_NOT_OPTIONS = frozenset({"id", "prompt", "images", "mask", "metadata"})


def line(fields: Mapping[str, Any]) -> PricedJob:
    """``fields`` (one JSONL object) as a validated line, read by :meth:`PricedJob.from_line`.

    A lone string in ``images`` is one image, as the manifest reads it.
    """
    refs = fields.get("images") or ()
    mask = fields.get("mask")
    spec = JobSpec(
        key="",
        ext_id=str(fields.get("id", "")),
        line=1,
        prompt=str(fields.get("prompt", "")),
        params={k: v for k, v in fields.items() if k not in _NOT_OPTIONS},
        images=tuple(_source(r) for r in ([refs] if isinstance(refs, str) else refs)),
        mask=_source(mask) if mask else None,
    )
    return PricedJob.from_line(spec)


def _source(ref: str) -> SourceImage:
    return SourceImage(kind="url" if ref.startswith("https://") else "path", ref=ref)
