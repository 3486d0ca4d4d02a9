"""The ``chat`` shape: ``/chat/completions`` answering with a Markdown image link."""

from __future__ import annotations

import re
from typing import Any

from runner.errors import AttemptError
from runner.models import Job, Outcome
from runner.routes import Route
from runner.shapes.base import (
    ImagePayload,
    LoadedImage,
    ParsedResponse,
    PreparedRequest,
    effective_model,
)

#: ``![alt](https://host/path.png)``; the URL ends at whitespace or the closing parenthesis.
_MARKDOWN_IMAGE = re.compile(r"!\[[^\]]*\]\((https?://[^)\s]+)\)")


class ChatAdapter:
    """Gateways that generate images behind a chat model (laozhang ``/chat/completions``)."""

    def build(
        self,
        route: Route,
        job: Job,
        images: list[LoadedImage],
        mask: LoadedImage | None,
    ) -> PreparedRequest:
        content: str | list[dict[str, Any]] = job.prompt
        if images:
            content = [{"type": "text", "text": job.prompt}]
            content += [{"type": "image_url", "image_url": {"url": img.url}} for img in images]
        body = {
            "model": effective_model(route, job),
            "messages": [{"role": "user", "content": content}],
            "stream": False,
        }
        sent = {"model": body["model"], "images": len(images)}
        return PreparedRequest(endpoint="/chat/completions", json=body, params_sent=sent)

    def parse(self, body: Any) -> ParsedResponse:
        try:
            content = body["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError):
            raise AttemptError(Outcome.BAD_RESPONSE, "no choices[0].message.content") from None
        urls = _MARKDOWN_IMAGE.findall(content or "")
        if not urls:
            excerpt = (content or "")[:200]
            raise AttemptError(Outcome.BAD_RESPONSE, f"no image link in the reply: {excerpt!r}")
        return ParsedResponse(images=[ImagePayload(url=u) for u in urls])
