"""The ``responses`` shape: ``/responses`` with the ``image_generation`` tool."""

from __future__ import annotations

from dataclasses import replace
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
from runner.shapes.images import images_usage

_TOOL_OPTIONS = (
    "size",
    "quality",
    "output_format",
    "output_compression",
    "background",
    "moderation",
)


class ResponsesAdapter:
    """A mainline model forced to call the image tool once per job."""

    def build(
        self,
        route: Route,
        job: Job,
        images: list[LoadedImage],
        mask: LoadedImage | None,
    ) -> PreparedRequest:
        options = job_options(job)
        tool: dict[str, Any] = {"type": "image_generation", "model": effective_model(route, job)}
        tool.update({k: options[k] for k in _TOOL_OPTIONS if k in options})
        tool["action"] = "edit" if images else "generate"
        if mask is not None:
            tool["input_image_mask"] = {"image_url": mask.url}
        content: list[dict[str, Any]] = [{"type": "input_text", "text": job.prompt}]
        content += [{"type": "input_image", "image_url": img.url} for img in images]
        body = {
            "model": route.mainline_model or "gpt-5.5",
            "input": [{"role": "user", "content": content}],
            "tools": [tool],
            "tool_choice": {"type": "image_generation"},
        }
        sent = {"model": body["model"], "tool": tool, "images": len(images)}
        return PreparedRequest(endpoint="/responses", json=body, params_sent=sent)

    def parse(self, body: Any) -> ParsedResponse:
        output = body.get("output") if isinstance(body, dict) else None
        calls = [
            item
            for item in output or []
            if isinstance(item, dict) and item.get("type") == "image_generation_call"
        ]
        if not calls:
            raise AttemptError(Outcome.BAD_RESPONSE, "response has no image_generation_call")
        images = []
        for call in calls:
            if call.get("status") == "failed" or not call.get("result"):
                error = call.get("error") or {}
                code = error.get("code")
                outcome = (
                    Outcome.MODERATION_BLOCKED
                    if code in ("moderation_blocked", "image_content_policy_violation")
                    else Outcome.BAD_RESPONSE
                )
                raise AttemptError(
                    outcome,
                    error.get("message") or "image generation call returned no image",
                    error_code=code,
                )
            images.append(ImagePayload(b64=call["result"]))
        tool_usage = (body.get("tool_usage") or {}).get("image_gen")
        return ParsedResponse(images=images, usage=_usage(body.get("usage"), tool_usage))


def _usage(mainline: Any, image_gen: Any) -> Usage | None:
    usage = images_usage(image_gen) or Usage()
    if isinstance(mainline, dict):
        usage = replace(
            usage,
            mainline_input_tokens=int(mainline.get("input_tokens", 0)),
            mainline_output_tokens=int(mainline.get("output_tokens", 0)),
        )
    return usage if usage.to_json() else None
