"""Emulated token counts: what the sandbox reports in ``usage`` (and bills token routes by).

The only table of token numbers in the sandbox. OpenAI publishes no gpt-image-2 token table;
the output counts below are derived from its published per-image prices at $30 per
million output image tokens. They are for emulation, not for estimating real bills.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

#: Output image tokens per image by quality: (square 1024x1024, non-square 1536x1024 or
#: 1024x1536). Other sizes scale by pixel area from the row of their shape.
OUTPUT_IMAGE_TOKENS: Mapping[str, tuple[int, int]] = MappingProxyType(
    {"low": (200, 167), "medium": (1767, 1367), "high": (7033, 5500)}
)
SQUARE_REFERENCE_PIXELS = 1024 * 1024
NON_SQUARE_REFERENCE_PIXELS = 1536 * 1024

#: What ``quality: auto`` (or none) resolves to, and reports back in the response.
AUTO_QUALITY = "medium"
#: Qualities without a row (gpt-image-2.5's ``xhigh``/``max``) are counted as this row.
UNLISTED_QUALITY_ROW = "high"

#: Rough English tokenisation: one token per four characters, at least one token.
CHARS_PER_TEXT_TOKEN = 4

#: Input image tokens, counted the GPT-4o way (fit in 2048², short side 768, 512 px tiles):
#: a 1024x1024 source costs 85 + 4 x 170 = 765 tokens.
IMAGE_BASE_TOKENS = 85
IMAGE_TILE_TOKENS = 170
IMAGE_TILE = 512
IMAGE_FIT = 2048
IMAGE_SHORT_SIDE = 768

#: Responses shape: mainline tokens on top of the prompt (instructions and tool definition),
#: and what the mainline model writes besides the revised prompt.
MAINLINE_INPUT_OVERHEAD = 60
MAINLINE_OUTPUT_OVERHEAD = 20


@dataclass(frozen=True, slots=True, kw_only=True)
class ImageUsage:
    """Token usage of one image call (all images of it)."""

    text_in: int
    image_in: int
    image_out: int

    @property
    def input_tokens(self) -> int:
        """Text plus image input tokens."""
        return self.text_in + self.image_in

    @property
    def total_tokens(self) -> int:
        """Input plus output tokens."""
        return self.input_tokens + self.image_out

    def to_openai(self) -> dict[str, object]:
        """The ``usage`` object of an Images API response (and ``tool_usage.image_gen``)."""
        return {
            "input_tokens": self.input_tokens,
            "input_tokens_details": {"text_tokens": self.text_in, "image_tokens": self.image_in},
            "output_tokens": self.image_out,
            "output_tokens_details": {"image_tokens": self.image_out, "text_tokens": 0},
            "total_tokens": self.total_tokens,
        }


def quality_row(quality: str) -> str:
    """The table row a requested quality is counted as."""
    if quality == "auto":
        return AUTO_QUALITY
    return quality if quality in OUTPUT_IMAGE_TOKENS else UNLISTED_QUALITY_ROW


def output_image_tokens(width: int, height: int, quality: str) -> int:
    """Output tokens for one image of ``width`` x ``height`` at ``quality``."""
    square, non_square = OUTPUT_IMAGE_TOKENS[quality_row(quality)]
    if width == height:
        return round(square * width * height / SQUARE_REFERENCE_PIXELS)
    return round(non_square * width * height / NON_SQUARE_REFERENCE_PIXELS)


def text_tokens(text: str) -> int:
    """Tokens of a prompt or message text."""
    return max(1, math.ceil(len(text) / CHARS_PER_TEXT_TOKEN))


def input_image_tokens(width: int, height: int) -> int:
    """Input tokens for one source image (or mask) of the given size."""
    scale = min(1.0, IMAGE_FIT / max(width, height))
    w, h = width * scale, height * scale
    scale = min(1.0, IMAGE_SHORT_SIDE / min(w, h))
    w, h = w * scale, h * scale
    tiles = math.ceil(w / IMAGE_TILE) * math.ceil(h / IMAGE_TILE)
    return IMAGE_BASE_TOKENS + IMAGE_TILE_TOKENS * tiles


def image_usage(
    prompt: str, source_sizes: tuple[tuple[int, int], ...], out: tuple[int, int, str], n: int
) -> ImageUsage:
    """Usage of a call that writes ``n`` images of ``out`` = (width, height, quality)."""
    width, height, quality = out
    return ImageUsage(
        text_in=text_tokens(prompt),
        image_in=sum(input_image_tokens(w, h) for w, h in source_sizes),
        image_out=n * output_image_tokens(width, height, quality),
    )


def mainline_usage(prompt: str, revised_prompt: str, image_in: int) -> tuple[int, int]:
    """(input, output) tokens of the Responses mainline model around one image call."""
    return (
        MAINLINE_INPUT_OVERHEAD + text_tokens(prompt) + image_in,
        MAINLINE_OUTPUT_OVERHEAD + text_tokens(revised_prompt),
    )
