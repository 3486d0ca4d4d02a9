"""Bookkeeping for the simple GET endpoints (file downloads, balance and call-log reads).

They are recorded in the request log too ("every request it receives"), under their own
kind, and carry the profile's request-id header like any other answer.
"""

from __future__ import annotations

from datetime import UTC, datetime

from starlette.requests import Request
from starlette.responses import Response

from runner.sandbox.config import Profile
from runner.sandbox.ids import oneapi_request_id, openai_request_id
from runner.sandbox.records import RecordKind, RequestRecord
from runner.sandbox.state import Sandbox


class PlainRequest:
    """One GET request: numbered on arrival, recorded when :meth:`finish` is called."""

    def __init__(
        self, sandbox: Sandbox, request: Request, profile: Profile, kind: RecordKind
    ) -> None:
        self.sandbox = sandbox
        self.request = request
        self.profile = profile
        self.kind = kind
        self.seq = sandbox.next_seq()
        self.run_id = sandbox.run_id
        self.started = sandbox.clock()
        wall_ns = sandbox.wall_ns()
        self.arrived = datetime.fromtimestamp(wall_ns / 1e9, UTC)
        ids = sandbox.id_rng(self.seq)
        if profile is Profile.OPENAI:
            self.request_id = openai_request_id(ids)
        else:
            self.request_id = oneapi_request_id(ids, wall_ns, sandbox.build)

    def finish(self, response: Response, *, group: str | None = None) -> Response:
        """Stamp the request id on ``response`` and record the request."""
        header = "x-request-id" if self.profile is Profile.OPENAI else "X-Oneapi-Request-Id"
        response.headers[header] = self.request_id
        if self.run_id != self.sandbox.run_id:
            return response  # the sandbox was reset meanwhile: not part of the new run
        self.sandbox.log.add(
            RequestRecord(
                seq=self.seq,
                time=self.arrived,
                profile=self.profile,
                kind=self.kind,
                method=self.request.method,
                path=self.request.url.path,
                client_request_id=self.request.headers.get("x-client-request-id"),
                group=group,
                status=response.status_code,
                provider_request_id=self.request_id,
                duration_ms=(self.sandbox.clock() - self.started) * 1000,
            )
        )
        return response
