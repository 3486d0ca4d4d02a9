"""The sandbox as an ASGI app: both profiles' routes, served files and the admin API.

Paths (``P`` is ``/openai`` or ``/laozhang``):

=========================================  =============================================
``POST P/v1/images/generations``           both profiles
``POST P/v1/images/edits``                 multipart on both; JSON body on ``/openai``
``POST /openai/v1/responses``              the ``image_generation`` tool
``POST /laozhang/v1/chat/completions``     Markdown image link answers
``POST /openai/v1/files``                  upload (multipart ``file``, ``purpose``)
``GET  /openai/v1/files[/{id}[/content]]`` list, retrieve, download (streamed)
``DELETE /openai/v1/files/{id}``           delete
``POST /openai/v1/batches``                create a batch from an uploaded JSONL file
``GET  /openai/v1/batches[/{id}]``         list (newest first, ``after``, ``limit``), retrieve
``POST /openai/v1/batches/{id}/cancel``    cancel (lines already done are kept)
``GET  P/files/<name>``                    images handed out by URL (expire)
``GET  P/api/usage/token``, ``P/api/log/token``, ``P[/v1]/dashboard/billing/…``
``… /_sandbox/…``                          admin API (:mod:`runner.sandbox.admin`)
=========================================  =============================================
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from runner.sandbox import accounts, admin, batch_api, file_api
from runner.sandbox.config import Profile, SandboxConfig
from runner.sandbox.errors import not_found
from runner.sandbox.parsing import Endpoint
from runner.sandbox.pipeline import handle
from runner.sandbox.plain import PlainRequest
from runner.sandbox.state import Clock, Sandbox, WallClock

Handler = Callable[[Request], Awaitable[Response]]
ProfileHandler = Callable[[Request, Profile], Awaitable[Response]]

#: Endpoints each profile serves (the reference documents no others per provider).
PROFILE_ENDPOINTS: dict[Profile, tuple[Endpoint, ...]] = {
    Profile.OPENAI: (Endpoint.GENERATIONS, Endpoint.EDITS, Endpoint.RESPONSES),
    Profile.LAOZHANG: (Endpoint.GENERATIONS, Endpoint.EDITS, Endpoint.CHAT),
}


def _sandbox(request: Request) -> Sandbox:
    sandbox: Sandbox = request.app.state.sandbox
    return sandbox


def _image_endpoint(profile: Profile, endpoint: Endpoint) -> Handler:
    async def image_endpoint(request: Request) -> Response:
        return await handle(_sandbox(request), request, profile, endpoint)

    return image_endpoint


def _bound(handler: ProfileHandler, profile: Profile) -> Handler:
    async def bound(request: Request) -> Response:
        return await handler(request, profile)

    return bound


async def _download(request: Request, profile: Profile) -> Response:
    sandbox = _sandbox(request)
    plain = PlainRequest(sandbox, request, profile, "file")
    stored = sandbox.files.get(request.path_params["name"])
    if stored is None:
        return plain.finish(PlainTextResponse("404 page not found", status_code=404))
    return plain.finish(Response(stored.data, media_type=stored.mime))


async def _unknown(request: Request, profile: Profile) -> Response:
    sandbox = _sandbox(request)
    plain = PlainRequest(sandbox, request, profile, "image")
    path = request.url.path.removeprefix(f"/{profile.value}")
    error = not_found(request.method, path)
    body = error.body(profile, plain.request_id)
    return plain.finish(JSONResponse(body, status_code=error.status))


def _batch_routes() -> list[BaseRoute]:
    root = f"/{Profile.OPENAI.value}/v1"
    return [
        Route(f"{root}/files", file_api.create_file, methods=["POST"]),
        Route(f"{root}/files", file_api.list_files, methods=["GET"]),
        Route(f"{root}/files/{{file_id}}", file_api.retrieve_file, methods=["GET"]),
        Route(f"{root}/files/{{file_id}}", file_api.delete_file, methods=["DELETE"]),
        Route(f"{root}/files/{{file_id}}/content", file_api.file_content, methods=["GET"]),
        Route(f"{root}/batches", batch_api.create_batch, methods=["POST"]),
        Route(f"{root}/batches", batch_api.list_batches, methods=["GET"]),
        Route(f"{root}/batches/{{batch_id}}", batch_api.retrieve_batch, methods=["GET"]),
        Route(f"{root}/batches/{{batch_id}}/cancel", batch_api.cancel_batch, methods=["POST"]),
    ]


def _profile_routes(profile: Profile) -> list[BaseRoute]:
    root = f"/{profile.value}"
    routes: list[BaseRoute] = [
        Route(f"{root}/v1/{endpoint.value}", _image_endpoint(profile, endpoint), methods=["POST"])
        for endpoint in PROFILE_ENDPOINTS[profile]
    ]
    billing = {
        "/api/usage/token": accounts.token_usage,
        "/api/log/token": accounts.token_logs,
        "/v1/dashboard/billing/subscription": accounts.billing_subscription,
        "/v1/dashboard/billing/usage": accounts.billing_usage,
        "/dashboard/billing/subscription": accounts.billing_subscription,
        "/dashboard/billing/usage": accounts.billing_usage,
    }
    routes += [
        Route(root + path, _bound(fn, profile), methods=["GET"]) for path, fn in billing.items()
    ]
    routes.append(Route(f"{root}/files/{{name}}", _bound(_download, profile), methods=["GET"]))
    methods = ["GET", "POST", "PUT", "PATCH", "DELETE"]
    routes.append(Route(f"{root}/v1/{{rest:path}}", _bound(_unknown, profile), methods=methods))
    return routes


def create_app(
    config: SandboxConfig | None = None,
    *,
    clock: Clock | None = None,
    wall_ns: WallClock | None = None,
) -> Starlette:
    """The sandbox app; its live state is ``app.state.sandbox`` (a :class:`Sandbox`).

    Args:
        config: the knobs (default: ``SandboxConfig()``).
        clock: monotonic seconds for rate limits and URL expiry (tests may step a fake one).
        wall_ns: wall-clock nanoseconds for timestamps and request ids.
    """
    sandbox = Sandbox(config or SandboxConfig(), clock=clock, wall_ns=wall_ns)
    routes: list[BaseRoute] = [
        Route("/_sandbox/requests", admin.requests_log, methods=["GET"]),
        Route("/_sandbox/state", admin.state, methods=["GET"]),
        Route("/_sandbox/config", admin.config, methods=["GET", "POST"]),
        Route("/_sandbox/reset", admin.reset, methods=["POST"]),
    ]
    routes += _batch_routes()
    for profile in Profile:
        routes += _profile_routes(profile)
    app = Starlette(routes=routes)
    app.state.sandbox = sandbox
    return app
