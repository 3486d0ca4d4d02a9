"""Edit fidelity: how much of an edit's first source image survives in its output.

The score is the structural similarity (SSIM, Wang et al. 2004) of the two images as
aligned grayscale downscales: the source is centre-cropped to the output's aspect ratio (as
providers fit a source to the size asked for), both are reduced to :data:`EDGE` pixels on
the long side, and SSIM over 7 × 7 windows is averaged with each window weighted by the
source's local variance. A real edit keeps the source's structure; a fresh generation that
merely shares the prompt does not; a source sent back as it was scores 1.

On the sandbox's edits (a 35 % tint, a frame and a caption over the source; a masked edit
tints only the mask) the score runs 0.73-0.98; its source-ignoring edits (a fresh picture of
the prompt) -0.02-0.54; a source sent back 0.998-1. :class:`FidelityThresholds` defaults sit
in those gaps. (Two sandbox pictures both large enough for its caption band share that band's
structure and score up to 0.74 whatever their prompts: a sandbox picture is no fair source for
a source-ignoring test.)

Pillow and numpy only: scikit-image's ``structural_similarity`` computes the same quantity
but brings scipy, networkx, imageio and tifffile (~52 MB of wheels) for one function.
Everything here is blocking; callers run it in a worker thread.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import numpy as np
import numpy.typing as npt
from PIL import Image, UnidentifiedImageError

from runner.errors import ImagerunError

#: Long side of the aligned grayscale downscales, in pixels.
EDGE = 128
#: Side of the square SSIM window.
WINDOW = 7
_C1 = (0.01 * 255) ** 2
_C2 = (0.03 * 255) ** 2

_Array = npt.NDArray[np.float64]


class EditFlag(StrEnum):
    """What an edit's score says about it."""

    OK = "ok"
    #: The output does not resemble its source: likely a fresh generation.
    IGNORED_SOURCE = "ignored_source"
    #: The source came back (next to) unchanged.
    UNCHANGED = "unchanged"


@dataclass(frozen=True, slots=True, kw_only=True)
class FidelityThresholds:
    """Where a score stops being an edit.

    Attributes:
        ignored_below: a score under this flags ``ignored_source``.
        unchanged_above: a score at or over this flags ``unchanged``.
    """

    ignored_below: float = 0.6
    unchanged_above: float = 0.995

    def __post_init__(self) -> None:
        if not -1.0 <= self.ignored_below < self.unchanged_above <= 1.0:
            raise ValueError(
                "fidelity thresholds need -1 <= ignored_below < unchanged_above <= 1, "
                f"not {self.ignored_below} and {self.unchanged_above}"
            )

    def flag(self, score: float) -> EditFlag:
        """The flag of a score."""
        if score >= self.unchanged_above:
            return EditFlag.UNCHANGED
        if score < self.ignored_below:
            return EditFlag.IGNORED_SOURCE
        return EditFlag.OK


@dataclass(frozen=True, slots=True, kw_only=True)
class Fidelity:
    """An edit output's score and flag."""

    score: float
    flag: EditFlag


class FidelityError(ImagerunError):
    """A source or output that cannot be read or decoded; the message says which."""


def _small_size(width: int, height: int) -> tuple[int, int]:
    scale = EDGE / max(width, height, 1)
    return max(WINDOW, round(width * scale)), max(WINDOW, round(height * scale))


def _fit_box(width: int, height: int, ratio: float) -> tuple[float, float, float, float]:
    """The centred crop of a ``width`` × ``height`` image with aspect ``ratio`` (as
    ``ImageOps.fit`` takes it)."""
    if width / height > ratio:
        kept = height * ratio
        return (width - kept) / 2, 0.0, (width + kept) / 2, float(height)
    kept = width / ratio
    return 0.0, (height - kept) / 2, float(width), (height + kept) / 2


def _gray(image: Image.Image, size: tuple[int, int]) -> _Array:
    small = image.convert("L").resize(size, Image.Resampling.BOX)
    return np.asarray(small, dtype=np.float64)


def _aligned(source: Image.Image, output: Image.Image) -> tuple[_Array, _Array]:
    size = _small_size(output.width, output.height)
    box = _fit_box(source.width, source.height, output.width / max(output.height, 1))
    # The source is fitted to the output's size as providers (and Pillow's ImageOps.fit) do
    # it, bicubic, then reduced like the output: any other resampling would show as change.
    # In grayscale, one channel: a 4K pair costs a few milliseconds.
    fitted = source.convert("L").resize(output.size, Image.Resampling.BICUBIC, box=box)
    return _gray(fitted, size), _gray(output, size)


def _window_means(values: _Array) -> _Array:
    """The mean of every ``WINDOW`` × ``WINDOW`` window (valid positions only)."""
    summed: _Array = np.pad(values, ((1, 0), (1, 0))).cumsum(0).cumsum(1)
    w = WINDOW
    total: _Array = summed[w:, w:] - summed[:-w, w:] - summed[w:, :-w] + summed[:-w, :-w]
    return total / (w * w)


def ssim(source: _Array, output: _Array) -> float:
    """SSIM of two equally sized grayscale arrays (values 0-255), weighted by the source.

    Each window counts by the source's local variance (plus the SSIM constant, so a flat
    source still scores): the structure of the source is what an edit keeps, while flat
    areas of two unrelated pictures agree by accident.
    """
    mu_a, mu_b = _window_means(source), _window_means(output)
    # Sample (co)variances, as the SSIM paper computes them.
    n = WINDOW * WINDOW
    correction = n / (n - 1)
    var_a = (_window_means(source * source) - mu_a * mu_a) * correction
    var_b = (_window_means(output * output) - mu_b * mu_b) * correction
    cov = (_window_means(source * output) - mu_a * mu_b) * correction
    top = (2 * mu_a * mu_b + _C1) * (2 * cov + _C2)
    bottom = (mu_a * mu_a + mu_b * mu_b + _C1) * (var_a + var_b + _C2)
    weight = np.maximum(var_a, 0.0) + _C2
    return float(np.sum(top / bottom * weight) / np.sum(weight))


def _open(data: bytes | Path, what: str) -> Image.Image:
    try:
        with Image.open(io.BytesIO(data) if isinstance(data, bytes) else data) as image:
            # JPEG decodes at a reduced scale: only a downscale is compared.
            image.draft("RGB", (EDGE * 4, EDGE * 4))
            image.load()
            return image if image.mode == "L" else image.convert("RGB")
    except FileNotFoundError as exc:
        raise FidelityError(f"{what} image is missing: {data!s}") from exc
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        where = "bytes" if isinstance(data, bytes) else str(data)
        raise FidelityError(f"{what} image does not decode ({where}): {exc}") from exc


def edit_score(source: bytes | Path, output: bytes | Path) -> float:
    """How much of ``source`` survives in ``output``: 1 for the same picture, near 0 for another.

    Raises:
        FidelityError: either image is missing or does not decode.
    """
    first, second = _aligned(_open(source, "source"), _open(output, "output"))
    return round(ssim(first, second), 4)


def edit_fidelity(
    source: bytes | Path, output: bytes | Path, thresholds: FidelityThresholds
) -> Fidelity:
    """The score of an edit output against its first source, and the flag it earns.

    Raises:
        FidelityError: either image is missing or does not decode.
    """
    score = edit_score(source, output)
    return Fidelity(score=score, flag=thresholds.flag(score))
