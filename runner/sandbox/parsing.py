"""Request bodies of every endpoint, read into one shape: :class:`ImageCall`.

Parsing only reads what the client sent (the prompt, the model, the other fields as given,
source images as bytes or references); whether the values are acceptable is decided in
:mod:`runner.sandbox.validation`, per profile and group.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from starlette.datastructures import FormData, UploadFile
from starlette.requests import Request

from runner.sandbox.errors import ApiError, invalid_request, invalid_value, missing_parameter


@dataclass(frozen=True, slots=True)
class FileRef:
    """A source image given as the id of a file uploaded through the Files API."""

    file_id: str


#: A source image: uploaded bytes, a URL / data URL, or a Files API file, still to be loaded.
SourceRef = bytes | str | FileRef

MAX_SOURCE_IMAGES = 16
#: Multipart image parts may be this large (GPT image models: < 50 MB each).
MAX_IMAGE_BYTES = 50 * 1024 * 1024


class Endpoint(StrEnum):
    """The endpoint a request hit."""

    GENERATIONS = "images/generations"
    EDITS = "images/edits"
    RESPONSES = "responses"
    CHAT = "chat/completions"


@dataclass(frozen=True, slots=True, kw_only=True)
class ImageCall:
    """One image request, whatever its wire shape.

    Attributes:
        endpoint: where it arrived.
        model: the image model named (the tool's model on Responses); ``None`` if absent.
        prompt: the prompt text (the user's text on Responses and chat).
        params: every other field as sent (multipart values are strings).
        sources: source images in order.
        mask: the mask, if any.
        form: the body was multipart (values need coercing from text).
        json_edit: an Images edit sent as JSON (its ``size`` is a closed enum).
        mainline_model: the Responses top-level model.
    """

    endpoint: Endpoint
    model: str | None
    prompt: str
    params: Mapping[str, Any] = field(default_factory=dict)
    sources: tuple[SourceRef, ...] = ()
    mask: SourceRef | None = None
    form: bool = False
    json_edit: bool = False
    mainline_model: str | None = None


async def read_json(request: Request) -> dict[str, Any]:
    """The JSON object body.

    Raises:
        ApiError: 400 when the body is not a JSON object.
    """
    raw = await request.body()
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        body = None
    if not isinstance(body, dict):
        raise invalid_request(
            "We could not parse the JSON body of your request. (HINT: This likely means you "
            "aren't using your HTTP library correctly. The OpenAI API expects a JSON payload.)"
        )
    return body


def fields_except(body: Mapping[str, Any], taken: tuple[str, ...]) -> dict[str, Any]:
    """The body's other fields; ``null`` ones are left out, as the API treats them as absent."""
    return {k: v for k, v in body.items() if k not in taken and v is not None}


def _prompt(body: Mapping[str, Any]) -> str:
    prompt = body.get("prompt")
    if prompt is None:
        raise missing_parameter("prompt")
    if not isinstance(prompt, str) or not prompt:
        raise invalid_value("prompt", "Invalid 'prompt': expected a non-empty string.")
    return prompt


def _model(body: Mapping[str, Any]) -> str | None:
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise invalid_value("model", "Invalid 'model': expected a string.")
    return model


def parse_generation(body: dict[str, Any]) -> ImageCall:
    """``POST /images/generations`` (JSON)."""
    params = fields_except(body, ("prompt", "model"))
    return ImageCall(
        endpoint=Endpoint.GENERATIONS, model=_model(body), prompt=_prompt(body), params=params
    )


def _reference(item: Any, param: str) -> str | FileRef:
    if isinstance(item, Mapping) and isinstance(item.get("image_url"), str):
        return str(item["image_url"])
    if isinstance(item, Mapping) and isinstance(item.get("file_id"), str):
        return FileRef(str(item["file_id"]))
    raise invalid_value(
        param, f"Invalid '{param}': expected objects with an 'image_url' or a 'file_id'."
    )


def parse_json_edit(body: dict[str, Any]) -> ImageCall:
    """``POST /images/edits`` with a JSON body (``images: [{image_url} | {file_id}]``, official
    only; ``mask`` in the same form)."""
    images = body.get("images")
    if images is None:
        raise missing_parameter("images")
    if not isinstance(images, list) or not 1 <= len(images) <= MAX_SOURCE_IMAGES:
        raise invalid_value("images", f"Invalid 'images': expected 1 to {MAX_SOURCE_IMAGES} items.")
    mask = body.get("mask")
    params = fields_except(body, ("prompt", "model", "images", "mask"))
    return ImageCall(
        endpoint=Endpoint.EDITS,
        model=_model(body),
        prompt=_prompt(body),
        params=params,
        sources=tuple(_reference(item, "images") for item in images),
        mask=_reference(mask, "mask") if mask is not None else None,
        json_edit=True,
    )


async def _file_bytes(value: str | UploadFile, name: str) -> bytes:
    if not isinstance(value, UploadFile):
        raise invalid_value(name, f"Invalid '{name}': expected a file upload.")
    data = await value.read()
    if len(data) > MAX_IMAGE_BYTES:
        raise invalid_request(f"'{name}' is larger than 50 MB.", param=name, code="image_too_large")
    return data


async def parse_multipart_edit(form: FormData) -> ImageCall:
    """``POST /images/edits`` multipart: ``image`` once or ``image[]`` repeated, ``mask``."""
    uploads = [*form.getlist("image"), *form.getlist("image[]")]
    if not uploads:
        raise missing_parameter("image")
    if len(uploads) > MAX_SOURCE_IMAGES:
        raise invalid_value("image", f"Invalid 'image': at most {MAX_SOURCE_IMAGES} images.")
    sources = tuple([await _file_bytes(u, "image") for u in uploads])
    mask_part = form.get("mask")
    mask = await _file_bytes(mask_part, "mask") if mask_part is not None else None
    params: dict[str, Any] = {}
    for key, value in form.multi_items():
        if key in ("image", "image[]", "mask", "prompt", "model"):
            continue
        if isinstance(value, UploadFile):
            raise unknown_file(key)
        params[key] = value
    fields = {k: v for k, v in form.items() if isinstance(v, str)}
    return ImageCall(
        endpoint=Endpoint.EDITS,
        model=_model(fields),
        prompt=_prompt(fields),
        params=params,
        sources=sources,
        mask=mask,
        form=True,
    )


def unknown_file(name: str) -> ApiError:
    """400 for a file part the endpoint does not take."""
    return invalid_request(f"Unknown parameter: '{name}'.", param=name, code="unknown_parameter")
