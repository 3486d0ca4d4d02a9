"""The route-adapter interface: one module per wire shape implements :class:`ShapeAdapter`.

An adapter is pure translation. It turns a job (plus its loaded source images) into an HTTP
request and a successful response body into image payloads and usage. It never sends anything,
never touches the store, and never sees the API key: the worker owns all of that.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from runner.models import OPTION_FIELDS, Job, Usage
from runner.routes import Route


@dataclass(frozen=True, slots=True, kw_only=True)
class LoadedImage:
    """A source image ready to send: bytes for multipart, a URL for JSON shapes."""

    data: bytes | None
    mime: str
    filename: str
    #: An ``http(s)://`` or ``data:`` URL usable in JSON bodies.
    url: str


@dataclass(frozen=True, slots=True, kw_only=True)
class PreparedRequest:
    """An HTTP request described as data (relative ``endpoint``, JSON or multipart body)."""

    endpoint: str
    json: dict[str, Any] | None = None
    data: dict[str, str] | None = None
    files: list[tuple[str, tuple[str, bytes, str]]] | None = None
    #: What we record in the ledger: the parameters sent, never bytes or the key.
    params_sent: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class ImagePayload:
    """One image in a response: inline base64 (maybe a data URL) or a URL to fetch at once."""

    b64: str | None = None
    url: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ParsedResponse:
    images: list[ImagePayload]
    usage: Usage | None = None


class ShapeAdapter(Protocol):
    """Translate jobs to requests and responses to payloads for one wire shape."""

    def build(
        self,
        route: Route,
        job: Job,
        images: list[LoadedImage],
        mask: LoadedImage | None,
    ) -> PreparedRequest:
        """The request for ``job`` on ``route``; ``images`` / ``mask`` are already loaded."""
        ...

    def parse(self, body: Any) -> ParsedResponse:
        """Images and usage from a decoded 200 JSON body.

        Raises:
            AttemptError: with outcome ``bad_response`` when the body has no usable image.
        """
        ...


def effective_model(route: Route, job: Job) -> str:
    """The model label a job is sent with: its manifest override or the route's."""
    model = job.params.get("model")
    return str(model) if model else route.model


def job_options(job: Job) -> dict[str, Any]:
    return {k: job.params[k] for k in OPTION_FIELDS if k in job.params}
