"""What the price engine reads of a job: one typed record, read from a job's fields in one place.

A claimed job (:class:`runner.models.Job`) and a validated manifest line
(:class:`runner.models.JobSpec`) carry the same fields (prompt, options, source images, mask);
both become a :class:`PricedJob` through :meth:`PricedJob.from_fields`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from runner.models import Job, JobSpec
from runner.routes.catalog import Route
from runner.routes.sizes import Size, parse_size


@dataclass(frozen=True, slots=True, kw_only=True)
class PricedJob:
    """What a job asks for that moves its price; absent fields take the API defaults.

    Attributes:
        model: the job's model override; ``None`` runs the route's model.
        n: images requested by one attempt (at least 1).
        quality: the quality asked for, as given (``auto`` included); ``None`` when absent.
        size: the size asked for; ``None`` when absent or ``auto``.
        prompt_chars: characters of the prompt, for the text-token estimate.
        input_images: source images plus the mask, each read as input image tokens.
    """

    model: str | None = None
    n: int = 1
    quality: str | None = None
    size: Size | None = None
    prompt_chars: int = 0
    input_images: int = 0

    @classmethod
    def from_job(cls, job: Job) -> PricedJob:
        """What pricing reads of a stored or claimed job."""
        return cls.from_fields(
            prompt=job.prompt, params=job.params, images=len(job.images), mask=job.mask is not None
        )

    @classmethod
    def from_line(cls, line: JobSpec) -> PricedJob:
        """What pricing reads of a validated manifest line."""
        return cls.from_fields(
            prompt=line.prompt,
            params=line.params,
            images=len(line.images),
            mask=line.mask is not None,
        )

    @classmethod
    def from_fields(
        cls, *, prompt: str, params: Mapping[str, Any], images: int = 0, mask: bool = False
    ) -> PricedJob:
        """Read the fields that move a price.

        Args:
            prompt: the prompt text.
            params: the job's options as validated (``size``, ``quality``, ``n``, ``model``, …);
                source images and the mask are not among them.
            images: how many source images the job sends.
            mask: whether it sends a mask.
        """
        size_text = params.get("size")
        quality = params.get("quality")
        model = params.get("model")
        return cls(
            model=str(model) if model else None,
            n=max(1, int(params.get("n") or 1)),
            quality=None if quality is None else str(quality),
            size=parse_size(str(size_text)) if size_text and size_text != "auto" else None,
            prompt_chars=len(prompt),
            # OpenAI bills the mask as input image tokens, as it bills each source image.
            input_images=images + (1 if mask else 0),
        )

    def model_on(self, route: Route) -> str:
        """The image model this job runs on ``route``."""
        return self.model or route.model
