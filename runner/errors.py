"""imagerun's exception tree. Everything we raise on purpose derives from ``ImagerunError``.

::

    ImagerunError
    ├── UsageError                 bad command-line use                         (exit 2)
    ├── ConfigError                bad imagerun.toml / environment / route      (exit 2)
    ├── ValidationFailed           a manifest has problems; carries all of them (exit 1)
    ├── NotFound                   unknown batch id or name                     (exit 2)
    ├── StoreError                 the database failed; SQLAlchemy error chained
    │   └── StoreUnavailable       the database is away (restart, network, SQLite locked)
    │                              for longer than the run waits it out          (exit 75)
    └── AttemptError               one attempt failed; carries its Outcome class, the status,
        ids and latency the response had, and whether the request left (raised by the wire,
        the shape adapters, the source loader and the image checks; turned into a ledger row
        by the engine; never reaches the CLI)

httpx and SQLAlchemy exceptions never escape their adapter: each is translated with its cause
chained (``raise ... from exc``), httpx's by the tables of ``runner.http.classify``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from types import TracebackType

    from runner.models import Outcome, RateLimits


class Translating:
    """A block that raises, in place of an exception from inside it, what :meth:`translate`
    makes of it (cause chained); an exception it makes nothing of goes through as it is.

    A class, not a ``contextlib.contextmanager`` generator: entering and leaving one costs
    0.2 us instead of 1.1, and the wire and the store enter several a request.
    """

    __slots__ = ()

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if exc is not None and (raised := self.translate(exc)) is not None:
            raise raised from exc

    def translate(self, exc: BaseException) -> BaseException | None:
        """What to raise in place of ``exc``, or ``None`` to let it through."""
        raise NotImplementedError


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


class StoreUnavailable(StoreError):
    """The database cannot be reached for now (a transient failure: trying later may work).

    The store retries it with backoff; raised to the caller once its outage limit passed.
    """

    exit_code = 75  # EX_TEMPFAIL: try again later


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


class AttemptError(ImagerunError):
    """One attempt failed in a classified way; the ledger row is written from it.

    Attributes:
        outcome: the outcome class (``rate_limited``, ``timeout``, …).
        status: the HTTP status if a response arrived.
        retry_after: a server-directed delay in seconds, if one was given (``Retry-After``,
            ``retry-after-ms``, else the longest ``x-ratelimit-reset-*``).
        rate_limits: the answer's ``x-ratelimit-*`` headers, parsed, if it had any.
        provider_request_id: the provider's ``x-request-id``, if a response carried one.
        gateway_request_id: a gateway's own request id (header or error message), if any.
        latency_ms: time from sending to this failure, when it was measured.
        sent: False only when the request provably never reached the server (it could not
            connect, or failed before anything was written): such an attempt costs nothing.
        stops_route: the answer says every request on the route would fail alike (its
            outcome stops the route, or its base URL moved: error code ``redirect``).
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
        provider_request_id: str | None = None,
        gateway_request_id: str | None = None,
        latency_ms: float | None = None,
        sent: bool = True,
        rate_limits: RateLimits | None = None,
        stops_route: bool = False,
    ) -> None:
        super().__init__(message)
        self.outcome = outcome
        self.message = message
        self.status = status
        self.error_type = error_type
        self.error_code = error_code
        self.retry_after = retry_after
        self.provider_request_id = provider_request_id
        self.gateway_request_id = gateway_request_id
        self.latency_ms = latency_ms
        self.sent = sent
        self.rate_limits = rate_limits
        self.stops_route = stops_route or outcome.stops_route

    def seen(
        self,
        *,
        provider_request_id: str | None,
        gateway_request_id: str | None,
        latency_ms: float,
    ) -> AttemptError:
        """This error with what the response told of the request (ids, latency)."""
        self.provider_request_id = provider_request_id or self.provider_request_id
        self.gateway_request_id = gateway_request_id or self.gateway_request_id
        self.latency_ms = latency_ms
        return self
