"""imagerun's exception tree. Everything we raise on purpose derives from ``ImagerunError``.

::

    ImagerunError
    ├── UsageError                 bad command-line use                         (exit 2)
    ├── ConfigError                bad imagerun.toml / environment / route      (exit 2)
    ├── ValidationFailed           a manifest has problems; carries all of them (exit 1)
    ├── NotFound                   unknown batch id or name                     (exit 2)
    ├── StoreError                 the database failed; SQLAlchemy error chained
    └── TransportError             one attempt failed; carries its Outcome class
        (raised inside adapters, turned into a ledger row by the worker; never reaches the CLI)

httpx and SQLAlchemy exceptions never escape their adapter: they are translated here with the
cause chained (``raise ... from exc``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from runner.models import Outcome


class ImagerunError(Exception):
    """Root of every error imagerun raises on purpose."""

    exit_code = 2


class UsageError(ImagerunError):
    """The command was used wrongly."""


class ConfigError(ImagerunError):
    """Configuration (file, environment or route definition) is wrong."""


class NotFound(ImagerunError):
    """A named thing (batch, route) does not exist."""


class StoreError(ImagerunError):
    """The database could not do what was asked."""


@dataclass(frozen=True, slots=True)
class Problem:
    """One problem in a user file: ``FILE:LINE: field: message``."""

    file: str
    line: int
    field: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return (
            f"{where}: {self.field}: {self.message}" if self.field else f"{where}: {self.message}"
        )


class ValidationFailed(ImagerunError):
    """A manifest (or config) has one or more problems; nothing was enqueued."""

    exit_code = 1

    def __init__(self, problems: list[Problem], *, truncated: int = 0) -> None:
        self.problems = problems
        self.truncated = truncated
        more = f" (and {truncated} more)" if truncated else ""
        super().__init__(f"{len(problems) + truncated} problem(s){more}")


class TransportError(ImagerunError):
    """One attempt failed in a classified way.

    Attributes:
        outcome: the outcome class (``rate_limited``, ``timeout``, …).
        status: the HTTP status if a response arrived.
        retry_after: a server-directed delay in seconds, if one was given.
    """

    def __init__(
        self,
        outcome: Outcome,
        message: str,
        *,
        status: int | None = None,
        error_type: str | None = None,
        error_code: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.outcome = outcome
        self.message = message
        self.status = status
        self.error_type = error_type
        self.error_code = error_code
        self.retry_after = retry_after
