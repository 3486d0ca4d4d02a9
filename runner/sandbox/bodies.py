"""Success bodies of the three shapes: Images (``data[]``), Responses (``output[]``), chat.

The gateway's quirk lives here too: its ``b64_json`` is a ``data:image/…;base64,`` URL with
the ``=`` padding stripped (seeds: "remove the prefix first, then pad with = before decoding").
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from typing import Any

from runner.sandbox.config import Profile
from runner.sandbox.render import MIME_TYPES
from runner.sandbox.tokens import ImageUsage
from runner.sandbox.validation import Resolved

#: What the assistant says next to its image on Responses.
IMAGE_TEXT = "Here is the image you asked for."
#: What an assistant says when a fault leaves a chat or Responses answer without an image.
NO_IMAGE_TEXT = "I'm sorry, I couldn't create that image this time."


def b64_value(data: bytes, profile: Profile, fmt: str) -> str:
    """The ``b64_json`` value as ``profile`` writes it."""
    encoded = base64.b64encode(data).decode("ascii")
    if profile is Profile.OPENAI:
        return encoded
    return f"data:{MIME_TYPES[fmt]};base64,{encoded.rstrip('=')}"


def corrupt_b64(value: str) -> str:
    """A base64 value no decoder accepts, padding restored or not.

    Cutting the payload to one character past a multiple of four leaves a quantum that no
    padding can complete, so both plain decoders and "strip prefix, re-pad" clients fail.
    """
    head, sep, payload = value.rpartition(",")
    payload = payload.rstrip("=")
    keep = max(1, len(payload) - len(payload) % 4 - 3)
    return f"{head}{sep}{payload[:keep]}"


def _size(resolved: Resolved) -> str:
    return f"{resolved.width}x{resolved.height}"


def images_body(
    *,
    resolved: Resolved,
    items: Sequence[Mapping[str, str]],
    usage: ImageUsage | None,
    created: int,
) -> dict[str, Any]:
    """An ImagesResponse; ``usage`` ``None`` gives the bare gateway web-route shape."""
    body: dict[str, Any] = {"created": created, "data": list(items)}
    if usage is not None:
        body |= {
            "background": resolved.background,
            "output_format": resolved.fmt,
            "quality": resolved.quality,
            "size": _size(resolved),
            "usage": usage.to_openai(),
        }
    return body


def revised_prompt(prompt: str) -> str:
    """What the emulated mainline model makes of the prompt."""
    return f"{prompt.strip()}, rendered as a clean, detailed illustration"


def _image_call(call_id: str, resolved: Resolved, prompt: str, result: str) -> dict[str, Any]:
    return {
        "type": "image_generation_call",
        "id": call_id,
        "status": "completed",
        "action": "edit" if resolved.edit else "generate",
        "background": resolved.background,
        "output_format": resolved.fmt,
        "quality": resolved.quality,
        "size": _size(resolved),
        "revised_prompt": revised_prompt(prompt),
        "result": result,
    }


def _message(message_id: str, text: str) -> dict[str, Any]:
    return {
        "type": "message",
        "id": message_id,
        "status": "completed",
        "role": "assistant",
        "content": [{"type": "output_text", "text": text, "annotations": []}],
    }


def responses_body(
    *,
    ids: Mapping[str, str],
    mainline_model: str,
    resolved: Resolved,
    results: Sequence[str],
    usage: ImageUsage,
    mainline: tuple[int, int],
    prompt: str,
    tool: Mapping[str, Any],
    created: int,
) -> dict[str, Any]:
    """A completed Response: one ``image_generation_call`` per result, then a message.

    ``usage`` counts the mainline model's tokens; the image tokens are in
    ``tool_usage.image_gen``.
    """
    output = [_image_call(ids["call"], resolved, prompt, result) for result in results]
    output.append(_message(ids["message"], IMAGE_TEXT if results else NO_IMAGE_TEXT))
    tokens_in, tokens_out = mainline
    return {
        "id": ids["response"],
        "object": "response",
        "created_at": created,
        "status": "completed",
        "error": None,
        "incomplete_details": None,
        "instructions": None,
        "metadata": {},
        "model": mainline_model,
        "output": output,
        "parallel_tool_calls": True,
        "previous_response_id": None,
        "temperature": 1.0,
        "top_p": 1.0,
        "tool_choice": "auto",
        "tools": [dict(tool)],
        "usage": {
            "input_tokens": tokens_in,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": tokens_out,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": tokens_in + tokens_out,
        },
        "tool_usage": {"image_gen": usage.to_openai()},
    }


def chat_body(
    *, chat_id: str, model: str, urls: Sequence[str], prompt_tokens: int, created: int
) -> dict[str, Any]:
    """A chat completion whose content is Markdown image links (or an apology without one)."""
    content = "\n\n".join(f"![image]({url})" for url in urls) if urls else NO_IMAGE_TEXT
    completion_tokens = max(1, len(content) // 4)
    return {
        "id": chat_id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }
