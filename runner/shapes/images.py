"""The ``images`` shape: ``/images/generations`` (JSON) and ``/images/edits`` (multipart)."""

from __future__ import annotations

from typing import Any

from runner.errors import AttemptError
from runner.models import Job, Outcome, Usage
from runner.routes import Route
from runner.shapes.base import (
    ImagePayload,
    LoadedImage,
    ParsedResponse,
    PreparedRequest,
    effective_model,
    job_options,
)


class ImagesAdapter:
    """OpenAI's Images API and the gateways that copy it."""

    def build(
        self,
        route: Route,
        job: Job,
        images: list[LoadedImage],
        mask: LoadedImage | None,
    ) -> PreparedRequest:
        body = images_body(route, job)
        if not images:
            return PreparedRequest(endpoint="/images/generations", json=body, params_sent=body)
        # One file goes under the route's field name; several always as repeated ``image[]``,
        # which is how the official SDK encodes a list.
        name = route.edit_field if len(images) == 1 else "image[]"
        files = [(name, (img.filename, _bytes(img), img.mime)) for img in images]
        if mask is not None:
            files.append(("mask", (mask.filename, _bytes(mask), mask.mime)))
        sent = {**body, "images": len(images), "mask": mask is not None}
        return PreparedRequest(
            endpoint="/images/edits",
            data={k: _form_value(v) for k, v in body.items()},
            files=files,
            params_sent=sent,
        )

    def parse(self, body: Any) -> ParsedResponse:
        data = body.get("data") if isinstance(body, dict) else None
        if not isinstance(data, list) or not data:
            raise AttemptError(Outcome.BAD_RESPONSE, "response has no images (empty `data`)")
        payloads = []
        for item in data:
            if not isinstance(item, dict) or not (item.get("b64_json") or item.get("url")):
                raise AttemptError(Outcome.BAD_RESPONSE, "image item without b64_json or url")
            payloads.append(ImagePayload(b64=item.get("b64_json"), url=item.get("url")))
        return ParsedResponse(images=payloads, usage=images_usage(body.get("usage")))


def images_body(route: Route, job: Job) -> dict[str, Any]:
    """The Images API fields of ``job`` on ``route``: its model, prompt and options (a
    generation's JSON body; an edit's form fields; a remote batch line's body)."""
    body: dict[str, Any] = {"model": effective_model(route, job), "prompt": job.prompt}
    body.update(job_options(job))
    return body


def images_usage(raw: Any) -> Usage | None:
    """Usage of an ImagesResponse (or a Responses ``tool_usage.image_gen``)."""
    if not isinstance(raw, dict):
        return None
    details_in = raw.get("input_tokens_details") or {}
    details_out = raw.get("output_tokens_details") or {}
    text_in = int(details_in.get("text_tokens", 0))
    image_in = int(details_in.get("image_tokens", 0))
    if not details_in:
        text_in = int(raw.get("input_tokens", 0))
    output = int(raw.get("output_tokens", 0))
    text_out = int(details_out.get("text_tokens", 0))
    cached = int(raw.get("cached_tokens", 0))
    return Usage(
        input_text_tokens=text_in,
        input_image_tokens=image_in,
        cached_tokens=cached,
        output_image_tokens=int(details_out.get("image_tokens", output - text_out)),
        output_text_tokens=text_out,
    )


def _bytes(image: LoadedImage) -> bytes:
    if image.data is None:
        raise ValueError("a multipart upload needs the image bytes")
    return image.data


def _form_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
