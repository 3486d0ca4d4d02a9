"""Size rules: which ``WIDTHxHEIGHT`` values a model (or a gateway route) accepts.

gpt-image-2 takes any size whose edges are multiples of 16 within its pixel and ratio limits;
laozhang's ``gpt-image-2-vip`` takes only its 30 listed sizes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

SizeRuleName = Literal["none", "legacy", "flexible", "vip"]

#: The three sizes every GPT image model accepts, plus ``auto``.
LEGACY_SIZES: tuple[str, ...] = ("1024x1024", "1536x1024", "1024x1536")

#: The 30 explicit sizes of laozhang's ``gpt-image-2-vip`` (1K / 2K / 4K tiers per ratio).
# fmt: off
VIP_SIZES: tuple[str, ...] = (
    # 1:1          2:3          3:2          3:4          4:3
    "1280x1280", "848x1280", "1280x848", "960x1280", "1280x960",
    "2048x2048", "1360x2048", "2048x1360", "1536x2048", "2048x1536",
    "2880x2880", "2336x3520", "3520x2336", "2480x3312", "3312x2480",
    # 4:5          5:4          9:16         16:9         21:9
    "1024x1280", "1280x1024", "720x1280", "1280x720", "1280x544",
    "1632x2048", "2048x1632", "1152x2048", "2048x1152", "2048x864",
    "2560x3216", "3216x2560", "2160x3840", "3840x2160", "3840x1632",
)
# fmt: on

MIN_PIXELS = 655_360
MAX_PIXELS = 8_294_400
MAX_EDGE = 3840
MAX_RATIO = 3.0
EXPERIMENTAL_PIXELS = 2560 * 1440

_SIZE_RE = re.compile(r"^([1-9][0-9]{1,4})x([1-9][0-9]{1,4})$")


@dataclass(frozen=True, slots=True)
class Size:
    """A parsed ``WIDTHxHEIGHT``."""

    width: int
    height: int

    def __str__(self) -> str:
        return f"{self.width}x{self.height}"

    @property
    def pixels(self) -> int:
        return self.width * self.height


def parse_size(value: str) -> Size | None:
    """Parse ``"1536x1024"``; ``None`` when the text is not of that form."""
    match = _SIZE_RE.match(value)
    if match is None:
        return None
    return Size(int(match.group(1)), int(match.group(2)))


def flexible_size_problem(size: Size) -> str | None:
    """Why ``size`` breaks the gpt-image-2 rules, or ``None`` if it is acceptable."""
    if size.width % 16 or size.height % 16:
        return "width and height must be multiples of 16"
    if max(size.width, size.height) > MAX_EDGE:
        return f"the longest edge must be at most {MAX_EDGE} px"
    if max(size.width, size.height) / min(size.width, size.height) > MAX_RATIO:
        return "the long:short ratio must be at most 3:1"
    if not MIN_PIXELS <= size.pixels <= MAX_PIXELS:
        return f"total pixels must be between {MIN_PIXELS:,} and {MAX_PIXELS:,}"
    return None


def size_problem(rule: SizeRuleName, value: str) -> str | None:
    """Check ``value`` against a size rule; return a user-facing reason or ``None``."""
    if rule == "none":
        return "this route does not accept a size"
    if value == "auto":
        return "use one of the explicit sizes; 'auto' is not accepted" if rule == "vip" else None
    if rule == "vip":
        return None if value in VIP_SIZES else "not one of the 30 sizes gpt-image-2-vip accepts"
    if rule == "legacy":
        allowed = ", ".join((*LEGACY_SIZES, "auto"))
        return None if value in LEGACY_SIZES else f"this model accepts only {allowed}"
    size = parse_size(value)
    if size is None:
        return "expected WIDTHxHEIGHT (e.g. 1536x1024) or 'auto'"
    return flexible_size_problem(size)


def resolve_size(value: str | None, default: str = "1024x1024") -> Size:
    """The pixel size an image of requested ``value`` is expected to have (``auto`` → default)."""
    parsed = parse_size(value) if value and value != "auto" else None
    return parsed or parse_size(default) or Size(1024, 1024)
