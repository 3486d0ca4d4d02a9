"""The ``batch`` shape: one job as the JSON body of a line of an OpenAI remote batch.

A batch line's ``body`` is what the Images API takes as JSON: a generation's body is the
``images`` shape's own; an edit's is the JSON edit form, its source images (and mask) as
references, ``{"image_url": <https or data URL>}`` here and ``{"file_id": …}`` once
:mod:`runner.remote.lines` moved a large one into an uploaded file. Its answers are
ImagesResponses, parsed as the ``images`` shape parses them.
"""

from __future__ import annotations

from typing import Any

from runner.models import Job
from runner.routes import Route
from runner.shapes.base import (
    LoadedImage,
    ParsedResponse,
    PreparedRequest,
)
from runner.shapes.images import ImagesAdapter, images_body

GENERATIONS = "/images/generations"
EDITS = "/images/edits"


class BatchAdapter:
    """Builds a remote batch line's body; parses its answer like the Images API's."""

    _images = ImagesAdapter()

    def build(
        self,
        route: Route,
        job: Job,
        images: list[LoadedImage],
        mask: LoadedImage | None,
    ) -> PreparedRequest:
        body = images_body(route, job)
        if not images:
            return PreparedRequest(endpoint=GENERATIONS, json=body, params_sent=dict(body))
        sent = {**body, "images": len(images), "mask": mask is not None}
        body["images"] = [{"image_url": image.url} for image in images]
        if mask is not None:
            body["mask"] = {"image_url": mask.url}
        return PreparedRequest(endpoint=EDITS, json=body, params_sent=sent)

    def parse(self, body: Any) -> ParsedResponse:
        return self._images.parse(body)
