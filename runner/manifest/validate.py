"""Check one manifest line against a route: every field, the relations between fields, and the
source images. Ids and duplicates are the scanner's business (they need the whole file).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from runner.errors import Problem
from runner.manifest.fields import (
    ALPHA_FORMATS,
    COMPRESSIBLE_FORMATS,
    DEFAULT_FORMAT,
    MAX_IMAGES,
    RouteRules,
    is_known,
    metadata_problem,
    model_problem,
    prompt_problem,
    type_name,
    unknown_field_message,
)
from runner.manifest.sources import ImageFacts, Resolved, SourceResolver, show_ref
from runner.models import Shape, SourceImage

#: Fields of a streamed answer, which a line of a remote batch (shape ``batch``) cannot carry.
STREAMING = frozenset({"stream", "partial_images"})


class Fields(NamedTuple):
    """The validated content of a line (everything but its id)."""

    prompt: str
    model: str
    params: dict[str, Any]
    images: tuple[SourceImage, ...]
    mask: SourceImage | None
    metadata: dict[str, Any]


def images_problem(value: Any) -> str | None:
    """Check the shape of ``images``: a list of 1–16 strings (a lone string is one image)."""
    if isinstance(value, str):
        return None
    if not isinstance(value, list):
        return f"expected a list of image references, found {type_name(value)}"
    if not value:
        return "is empty; leave the field out for a generation"
    if len(value) > MAX_IMAGES:
        return f"has {len(value)} images; the limit is {MAX_IMAGES}"
    for item in value:
        if not isinstance(item, str):
            return f"expected image references as strings, found {type_name(item)}"
    return None


def mask_problem(value: Any) -> str | None:
    """Check the shape of ``mask``: one image reference."""
    return None if isinstance(value, str) else f"expected a string, found {type_name(value)}"


def _accept(value: Any) -> str | None:
    return None


#: Checks of single values that need no route knowledge (``id`` belongs to the scanner).
_VALUE_CHECKS: dict[str, Callable[[Any], str | None]] = {
    "prompt": prompt_problem,
    "images": images_problem,
    "mask": mask_problem,
    "model": model_problem,
    "metadata": metadata_problem,
    "id": _accept,
}


class LineChecker:
    """Checks lines of one manifest for one route."""

    def __init__(self, file: str, rules: RouteRules, sources: SourceResolver) -> None:
        """Args:
        file: the manifest's name as shown in problems.
        rules: what the route accepts.
        sources: resolver (and cache) for the manifest's source images.
        """
        self._file = file
        self._rules = rules
        self._sources = sources

    def check(self, line: int, data: dict[str, Any], problems: list[Problem]) -> Fields | None:
        """Check ``data`` (line ``line``); append every problem found to ``problems``.

        Returns:
            The validated fields, or ``None`` when this line added a problem.
        """
        start = len(problems)
        rules, file = self._rules, self._file
        model = default_model = rules.route.model
        if "model" in data and model_problem(data["model"]) is None:
            model = data["model"]
        params: dict[str, Any] = {}
        for name, value in data.items():
            if name not in rules.accepted:
                known = is_known(name)
                message = f"this route does not accept {name}" if known else None
                if name in STREAMING and rules.route.shape is Shape.BATCH:
                    message = f"a remote batch line cannot stream: {rules.route.name} refuses it"
                problems.append(Problem(file, line, name, message or unknown_field_message(name)))
                continue
            check = _VALUE_CHECKS.get(name)
            message = check(value) if check else rules.option_problem(name, value, model)
            if message is not None:
                problems.append(Problem(file, line, name, message))
            elif check is None:
                params[name] = value
        bad = {p.field for p in problems[start:]} if len(problems) > start else set()
        if "prompt" not in data:
            problems.append(Problem(file, line, "prompt", "missing; every line needs a prompt"))
        self._relations(line, data, params, problems)
        if model != default_model:
            params["model"] = model
        images: tuple[SourceImage, ...] = ()
        mask: SourceImage | None = None
        if "images" in data or "mask" in data:
            images, mask = self._sources_of(line, data, bad, problems)
        if len(problems) > start:
            return None
        metadata = data.get("metadata")
        return Fields(data["prompt"], model, params, images, mask, metadata or {})

    def _relations(
        self, line: int, data: dict[str, Any], params: dict[str, Any], problems: list[Problem]
    ) -> None:
        """Checks that involve two fields (each reported on the field that must change)."""
        file = self._file
        if "moderation" in params and data.get("images") and self._rules.route.shape == "images":
            # The multipart /images/edits body has no moderation field.
            message = "not accepted on edits (the /images/edits endpoint has no such field)"
            problems.append(Problem(file, line, "moderation", message))
        if "output_compression" not in params and "background" not in params:
            return
        if "output_format" in data and "output_format" not in params:
            return  # a bad output_format is already reported; don't guess what was meant
        fmt = params.get("output_format", DEFAULT_FORMAT)
        if "output_compression" in params and fmt not in COMPRESSIBLE_FORMATS:
            message = f"applies only to output_format jpeg or webp, not {fmt}"
            problems.append(Problem(file, line, "output_compression", message))
        if params.get("background") == "transparent" and fmt not in ALPHA_FORMATS:
            message = f"transparent needs output_format png or webp, not {fmt}"
            problems.append(Problem(file, line, "background", message))

    def _sources_of(
        self, line: int, data: dict[str, Any], bad: set[str], problems: list[Problem]
    ) -> tuple[tuple[SourceImage, ...], SourceImage | None]:
        """Resolve ``images`` and ``mask``; report unusable references."""
        images: list[SourceImage] = []
        first: ImageFacts | None = None
        raw = data.get("images")
        if raw is not None and "images" not in bad:
            for index, ref in enumerate([raw] if isinstance(raw, str) else raw):
                resolved = self._resolve(line, "images", ref, problems)
                if resolved is not None:
                    images.append(resolved.source)
                    first = resolved.facts if index == 0 else first
        mask_ref = data.get("mask")
        if mask_ref is None or "mask" in bad:
            return tuple(images), None
        if raw is None:
            message = "needs images: a mask marks the area to edit in the first source image"
            problems.append(Problem(self._file, line, "mask", message))
        mask = self._resolve(line, "mask", mask_ref, problems)
        if mask is None:
            return tuple(images), None
        if mask.facts is not None:
            self._check_mask(line, mask_ref, mask.facts, first, problems)
        return tuple(images), mask.source

    def _resolve(self, line: int, field: str, ref: str, problems: list[Problem]) -> Resolved | None:
        resolved = self._sources.resolve(ref)
        if isinstance(resolved, str):
            problems.append(Problem(self._file, line, field, f"{show_ref(ref)}: {resolved}"))
            return None
        return resolved

    def _check_mask(
        self,
        line: int,
        ref: str,
        mask: ImageFacts,
        image: ImageFacts | None,
        problems: list[Problem],
    ) -> None:
        """A mask needs an alpha channel and the first image's dimensions, as OpenAI requires."""
        where = show_ref(ref)
        if not mask.alpha:
            message = f"{where}: a mask needs an alpha channel (transparent = area to edit)"
            problems.append(Problem(self._file, line, "mask", message))
        if image is not None and (mask.width, mask.height) != (image.width, image.height):
            message = (
                f"{where}: mask is {mask.width}x{mask.height} but the first image is "
                f"{image.width}x{image.height}; they must match"
            )
            problems.append(Problem(self._file, line, "mask", message))
