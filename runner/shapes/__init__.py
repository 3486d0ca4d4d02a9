"""Wire shapes: one adapter per protocol, all behind :class:`ShapeAdapter`."""

from runner.models import Shape
from runner.shapes.base import (
    ImagePayload,
    LoadedImage,
    ParsedResponse,
    PreparedRequest,
    ShapeAdapter,
)
from runner.shapes.batch import BatchAdapter
from runner.shapes.chat import ChatAdapter
from runner.shapes.images import ImagesAdapter
from runner.shapes.responses import ResponsesAdapter

ADAPTERS: dict[Shape, ShapeAdapter] = {
    Shape.IMAGES: ImagesAdapter(),
    Shape.RESPONSES: ResponsesAdapter(),
    Shape.CHAT: ChatAdapter(),
    Shape.BATCH: BatchAdapter(),
}

__all__ = [
    "ADAPTERS",
    "ImagePayload",
    "LoadedImage",
    "ParsedResponse",
    "PreparedRequest",
    "ShapeAdapter",
]
