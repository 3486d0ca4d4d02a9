"""Conversation-shaped requests: the Responses ``input`` and chat ``messages``, as an ImageCall.

Both carry the prompt as user text and source images as content parts: ``input_image``
(Responses) or ``image_url`` (chat), each an http(s) URL or a data URL.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from runner.sandbox.errors import invalid_request, invalid_value, missing_parameter
from runner.sandbox.parsing import Endpoint, ImageCall, SourceRef, fields_except

_TOOL_FIELDS_NOT_PARAMS = ("type", "model", "input_image_mask")


def _image_ref(part: Mapping[str, Any], param: str) -> str:
    ref = part.get("image_url")
    if isinstance(ref, Mapping):  # chat: {"image_url": {"url": ...}}
        ref = ref.get("url")
    if isinstance(ref, str) and ref:
        return ref
    if part.get("file_id"):
        raise invalid_value(param, "The sandbox has no Files API: give images as image_url.")
    raise invalid_value(param, f"Invalid '{param}': an image part needs an image_url.")


def _user_content(content: Any, param: str) -> tuple[list[str], list[SourceRef]]:
    if isinstance(content, str):
        return [content], []
    if not isinstance(content, list):
        raise invalid_value(param, f"Invalid '{param}': content must be a string or a list.")
    texts: list[str] = []
    images: list[SourceRef] = []
    for part in content:
        if not isinstance(part, Mapping):
            raise invalid_value(param, f"Invalid '{param}': content parts must be objects.")
        kind = part.get("type")
        if kind in ("input_text", "text") and isinstance(part.get("text"), str):
            texts.append(part["text"])
        elif kind in ("input_image", "image_url"):
            images.append(_image_ref(part, param))
    return texts, images


def _responses_input(value: Any) -> tuple[str, tuple[SourceRef, ...]]:
    if isinstance(value, str):
        return value, ()
    if not isinstance(value, list):
        raise missing_parameter("input")
    texts: list[str] = []
    images: list[SourceRef] = []
    for item in value:
        # Earlier image_generation_call items and assistant turns carry no new input.
        if isinstance(item, Mapping) and item.get("role") == "user":
            more_texts, more_images = _user_content(item.get("content"), "input")
            texts += more_texts
            images += more_images
    return "\n".join(texts), tuple(images)


def parse_responses(body: Mapping[str, Any]) -> ImageCall:
    """``POST /responses`` with the ``image_generation`` tool."""
    mainline = body.get("model")
    if not isinstance(mainline, str) or not mainline:
        raise missing_parameter("model")
    tools = body.get("tools") or []
    tool = next(
        (t for t in tools if isinstance(t, Mapping) and t.get("type") == "image_generation"), None
    )
    if tool is None:
        raise invalid_request(
            "The sandbox emulates /v1/responses only with the image_generation tool: "
            'add tools=[{"type": "image_generation"}].',
            param="tools",
        )
    prompt, images = _responses_input(body.get("input"))
    if not prompt:
        raise missing_parameter("input")
    mask = tool.get("input_image_mask")
    model = tool.get("model")
    return ImageCall(
        endpoint=Endpoint.RESPONSES,
        model=model if isinstance(model, str) else None,
        prompt=prompt,
        params=fields_except(tool, _TOOL_FIELDS_NOT_PARAMS),
        sources=images,
        mask=_image_ref(mask, "input_image_mask") if isinstance(mask, Mapping) else None,
        mainline_model=mainline,
    )


def parse_chat(body: Mapping[str, Any]) -> ImageCall:
    """``POST /chat/completions`` to an image model: the last user message is the request."""
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise missing_parameter("model")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise missing_parameter("messages")
    users = [m for m in messages if isinstance(m, Mapping) and m.get("role") == "user"]
    if not users:
        raise invalid_value("messages", "Invalid 'messages': no user message.")
    texts, images = _user_content(users[-1].get("content"), "messages")
    prompt = "\n".join(texts).strip()
    if not prompt:
        raise invalid_value("messages", "Invalid 'messages': the user message has no text.")
    params = fields_except(body, ("model", "messages"))
    return ImageCall(
        endpoint=Endpoint.CHAT, model=model, prompt=prompt, params=params, sources=tuple(images)
    )
