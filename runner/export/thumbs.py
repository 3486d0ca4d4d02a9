"""Gallery thumbnails: small WebP images, named by content so they are made only once."""

from __future__ import annotations

import io
import os
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from runner.export.staging import SourceError, temp_beside

#: Longest side of a thumbnail, in pixels.
THUMB_PX = 256


def thumb_name(sha256: str, px: int = THUMB_PX) -> str:
    """The thumbnail's file name: the same image always gets the same thumbnail file."""
    return f"{sha256[:32]}-{px}.webp"


def thumb_size(width: int, height: int, px: int = THUMB_PX) -> tuple[int, int]:
    """The displayed size of a ``width`` × ``height`` image's thumbnail (for layout hints)."""
    scale = min(1.0, px / max(width, height, 1))
    return max(1, round(width * scale)), max(1, round(height * scale))


def make_thumbnail(source: Path | bytes, target: Path, px: int = THUMB_PX) -> bool:
    """Write a WebP thumbnail of ``source`` to ``target`` unless it exists.

    Returns:
        ``True`` when written, ``False`` when ``target`` was already there.

    Raises:
        SourceError: ``source`` is missing or does not decode.
    """
    if target.exists():
        return False
    temp = temp_beside(target)
    try:
        with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as image:
            # Lets JPEG decode at a reduced scale: much faster for large photos.
            image.draft("RGB", (px, px))
            image.thumbnail((px, px), Image.Resampling.LANCZOS)
            mode = "RGBA" if image.has_transparency_data else "RGB"
            web = image if image.mode == mode else image.convert(mode)
            web.save(temp, "WEBP", quality=80, method=4)
        os.replace(temp, target)
    except FileNotFoundError as exc:
        raise SourceError(f"image file is missing: {source!s}") from exc
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        where = "(bytes)" if isinstance(source, bytes) else source
        raise SourceError(f"image does not decode: {where}: {exc}") from exc
    finally:
        temp.unlink(missing_ok=True)
    return True
