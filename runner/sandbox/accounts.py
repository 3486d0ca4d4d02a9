"""Balance and call-log endpoints, new-api style (``/api/user/self``, ``/api/log/self``).

Served under both profiles. On ``/laozhang`` they mirror new-api; on ``/openai`` they are a
sandbox convenience only: OpenAI itself has no per-request call log API, so a client must
not expect these paths on the real ``api.openai.com``.

- ``GET /api/usage/token``: raw quota units (500,000 = $1) of the calling key.
- ``GET /api/log/token``: the key's consume rows, newest first (at most 1,000).
- ``GET /v1/dashboard/billing/subscription``: total granted, in dollars.
- ``GET /v1/dashboard/billing/usage``: total used, in cents.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from runner.sandbox.config import Profile
from runner.sandbox.groups import OPENAI_GROUP, group_for_key, is_rejected_key
from runner.sandbox.ledger import Account
from runner.sandbox.plain import PlainRequest
from runner.sandbox.prices import to_usd
from runner.sandbox.state import Sandbox


def _account(sandbox: Sandbox, request: Request, profile: Profile) -> Account | None:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    key = value.strip() if scheme.lower() == "bearer" else header.strip()
    if not key or is_rejected_key(key):
        return None
    group = OPENAI_GROUP if profile is Profile.OPENAI else group_for_key(key).name
    return sandbox.ledger.account(profile, key, group)


def _sandbox(request: Request) -> Sandbox:
    sandbox: Sandbox = request.app.state.sandbox
    return sandbox


def _respond(
    plain: PlainRequest, account: Account | None, body: dict[str, Any], *, api: bool
) -> Response:
    if account is None:
        refusal: dict[str, Any]
        if api:
            refusal = {"success": False, "message": "Invalid token"}
        else:
            refusal = {"error": {"message": "Invalid token", "type": "new_api_error"}}
        return plain.finish(JSONResponse(refusal, status_code=401))
    return plain.finish(JSONResponse(body), group=account.group)


async def token_usage(request: Request, profile: Profile) -> Response:
    """``GET /api/usage/token``."""
    sandbox = _sandbox(request)
    plain = PlainRequest(sandbox, request, profile, "account")
    account = _account(sandbox, request, profile)
    data = {}
    if account is not None:
        data = {
            "object": "token_usage",
            "name": account.token_name,
            "total_granted": account.granted,
            "total_used": account.used,
            "total_available": account.remaining,
            "unlimited_quota": False,
            "model_limits": {},
            "model_limits_enabled": False,
            "expires_at": 0,
        }
    return _respond(plain, account, {"code": True, "message": "ok", "data": data}, api=True)


async def token_logs(request: Request, profile: Profile) -> Response:
    """``GET /api/log/token``."""
    sandbox = _sandbox(request)
    plain = PlainRequest(sandbox, request, profile, "account")
    account = _account(sandbox, request, profile)
    rows = [row.to_json() for row in sandbox.ledger.logs(account)] if account else []
    return _respond(plain, account, {"success": True, "message": "", "data": rows}, api=True)


async def billing_subscription(request: Request, profile: Profile) -> Response:
    """``GET /v1/dashboard/billing/subscription``: the granted total (remain + used), in USD."""
    sandbox = _sandbox(request)
    plain = PlainRequest(sandbox, request, profile, "account")
    account = _account(sandbox, request, profile)
    total = to_usd(account.granted) if account else 0.0
    body = {
        "object": "billing_subscription",
        "has_payment_method": True,
        "soft_limit_usd": total,
        "hard_limit_usd": total,
        "system_hard_limit_usd": total,
        "access_until": 0,
    }
    return _respond(plain, account, body, api=False)


async def billing_usage(request: Request, profile: Profile) -> Response:
    """``GET /v1/dashboard/billing/usage``: all-time use in cents (date parameters ignored)."""
    sandbox = _sandbox(request)
    plain = PlainRequest(sandbox, request, profile, "account")
    account = _account(sandbox, request, profile)
    cents = to_usd(account.used) * 100 if account else 0.0
    return _respond(plain, account, {"object": "list", "total_usage": cents}, api=False)
