"""Where output images live under the data directory, and what they are called.

One batch, one folder; one image, one file named after its job and its place in the
response: ``<batch_id>/<job_id>-<k>.<format>``. :func:`output_path` writes that name and
:func:`parse_output_name` reads it back (orphan adoption finds a file's job by its name).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_NAME = re.compile(r"^(\d+)-(\d+)\.(png|jpeg|webp|gif)$")


@dataclass(frozen=True, slots=True, kw_only=True)
class OutputName:
    """The parts of an output file's name."""

    batch_id: str
    job_id: int
    #: The image's index in its response (``n`` > 1 returns several).
    k: int
    format: str

    @property
    def path(self) -> str:
        """The file's path relative to the data directory."""
        return output_path(self.batch_id, self.job_id, self.k, self.format)


def output_path(batch_id: str, job_id: int, k: int, fmt: str) -> str:
    """The path, relative to the data directory, of image ``k`` of job ``job_id``."""
    return f"{batch_id}/{job_id}-{k}.{fmt}"


def parse_output_name(batch_id: str, name: str) -> OutputName | None:
    """Read a file name in ``batch_id``'s folder; ``None`` when it is not an output's."""
    match = _NAME.match(name)
    if match is None:
        return None
    return OutputName(batch_id=batch_id, job_id=int(match[1]), k=int(match[2]), format=match[3])
