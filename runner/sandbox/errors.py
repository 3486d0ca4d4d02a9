"""API errors the sandbox answers with, and their bodies per profile.

Official bodies are ``{"error": {"message", "type", "param", "code"}}`` with null param/code
as OpenAI sends them. The gateway writes the same shape the way new-api does:
``param``/``code`` are strings (empty when unset) and the message ends with
`` (request id: <X-Oneapi-Request-Id>)``.
"""

from __future__ import annotations

from typing import Any

from runner.models import Outcome
from runner.sandbox.config import Profile

#: An edge proxy's 502 page: not JSON, as real 502s often are not.
BAD_GATEWAY_HTML = (
    "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    "<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n"
    "</body>\r\n</html>\r\n"
)


class ApiError(Exception):
    """An error response, with the outcome class the sandbox files it under.

    Attributes:
        status: HTTP status.
        message: ``error.message`` (without the gateway's request-id suffix).
        type: ``error.type``.
        code: ``error.code`` or ``None``.
        param: ``error.param`` or ``None``.
        outcome: the class the failure-charge policy looks up.
        headers: extra response headers (``Retry-After`` …).
        html: when set, the body is this HTML instead of JSON.
    """

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str,
        outcome: Outcome,
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
        html: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.code = code
        self.param = param
        self.outcome = outcome
        self.headers = dict(headers or {})
        self.html = html

    def body(self, profile: Profile, request_id: str) -> dict[str, Any]:
        """The JSON body as ``profile`` writes it."""
        if profile is Profile.OPENAI:
            error = {"message": self.message, "type": self.type, "param": self.param}
            return {"error": {**error, "code": self.code}}
        return {
            "error": {
                "message": f"{self.message} (request id: {request_id})",
                "type": self.type,
                "param": self.param or "",
                "code": self.code or "",
            }
        }


def invalid_request(message: str, *, param: str | None = None, code: str | None = None) -> ApiError:
    """400 ``invalid_request_error``."""
    return ApiError(
        400,
        message,
        type="invalid_request_error",
        code=code,
        param=param,
        outcome=Outcome.INVALID_REQUEST,
    )


def unknown_parameter(name: str) -> ApiError:
    """400 for a parameter the endpoint does not know (e.g. ``response_format`` on GPT models)."""
    return invalid_request(f"Unknown parameter: '{name}'.", param=name, code="unknown_parameter")


def invalid_value(param: str, message: str) -> ApiError:
    """400 for a known parameter with a value the model does not accept."""
    return invalid_request(message, param=param, code="invalid_value")


def missing_parameter(param: str) -> ApiError:
    """400 for a required parameter that is absent."""
    return invalid_request(
        f"Missing required parameter: '{param}'.", param=param, code="missing_required_parameter"
    )


def unsupported_parameter(param: str, model: str, group: str) -> ApiError:
    """400 for a parameter a gateway group's route does not take (e.g. ``size`` on default)."""
    return invalid_request(
        f"Unsupported parameter: '{param}' is not supported by model {model} in group {group}.",
        param=param,
        code="unsupported_parameter",
    )


def model_not_found(profile: Profile, model: str, group: str) -> ApiError:
    """Unknown model: 404 on OpenAI, 503 "no available channel" on new-api."""
    if profile is Profile.OPENAI:
        return ApiError(
            404,
            f"The model `{model}` does not exist or you do not have access to it.",
            type="invalid_request_error",
            code="model_not_found",
            outcome=Outcome.INVALID_REQUEST,
        )
    return ApiError(
        503,
        f"No available channel for model {model} under group {group} (distributor)",
        type="new_api_error",
        code="model_not_found",
        outcome=Outcome.INVALID_REQUEST,
    )


def bad_key(profile: Profile, key: str | None) -> ApiError:
    """401 for a missing or refused key."""
    if profile is Profile.LAOZHANG:
        return ApiError(401, "Invalid token", type="new_api_error", outcome=Outcome.AUTH)
    if not key:
        message = (
            "You didn't provide an API key. You need to provide your API key in an "
            "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
        )
        return ApiError(401, message, type="invalid_request_error", outcome=Outcome.AUTH)
    shown = f"{key[:3]}*****{key[-4:]}" if len(key) > 8 else "*****"
    return ApiError(
        401,
        f"Incorrect API key provided: {shown}. You can find your API key at "
        "https://platform.openai.com/account/api-keys.",
        type="invalid_request_error",
        code="invalid_api_key",
        outcome=Outcome.AUTH,
    )


def moderation_blocked(request_id: str) -> ApiError:
    """400 ``image_generation_user_error`` / ``moderation_blocked`` (GPT image models)."""
    return ApiError(
        400,
        "Your request was rejected by the safety system. If you believe this is an error, "
        f"contact us at help.openai.com and include the request ID {request_id}. "
        "safety_violations=[sandbox].",
        type="image_generation_user_error",
        code="moderation_blocked",
        outcome=Outcome.MODERATION_BLOCKED,
    )


def insufficient_quota(profile: Profile, status: int, remaining: int, needed: int) -> ApiError:
    """No money: 429 ``insufficient_quota`` (OpenAI) or ``insufficient_user_quota`` (new-api)."""
    if profile is Profile.OPENAI:
        return ApiError(
            429,
            "You exceeded your current quota, please check your plan and billing details. "
            "For more information on this error, read the docs: "
            "https://platform.openai.com/docs/guides/error-codes/api-errors.",
            type="insufficient_quota",
            code="insufficient_quota",
            outcome=Outcome.QUOTA_EXHAUSTED,
        )
    return ApiError(
        status,
        f"user [1] quota [{remaining}] preConsumedQuota [{needed}] is not enough",
        type="new_api_error",
        code="insufficient_user_quota",
        outcome=Outcome.QUOTA_EXHAUSTED,
    )


def server_error() -> ApiError:
    """500 ``server_error``."""
    return ApiError(
        500,
        "The server had an error while processing your request. Sorry about that!",
        type="server_error",
        outcome=Outcome.SERVER_ERROR,
    )


def overloaded() -> ApiError:
    """503 ``server_is_overloaded``."""
    return ApiError(
        503,
        "The engine is currently overloaded, please try again later.",
        type="service_unavailable_error",
        code="server_is_overloaded",
        outcome=Outcome.SERVER_ERROR,
    )


def bad_gateway() -> ApiError:
    """502 with an HTML body: the gateway gave up on an upstream that may have done the work."""
    return ApiError(
        502, "Bad Gateway", type="server_error", outcome=Outcome.TIMEOUT, html=BAD_GATEWAY_HTML
    )


def shutting_down() -> ApiError:
    """503 for a request cut short because the sandbox is stopping."""
    return ApiError(
        503,
        "The sandbox is shutting down; the request was not completed.",
        type="service_unavailable_error",
        code="server_shutting_down",
        outcome=Outcome.SERVER_ERROR,
    )


def gateway_timeout() -> ApiError:
    """504 after a hang the client sat through."""
    return ApiError(
        504,
        "The server did not finish generating the image in time.",
        type="server_error",
        code="timeout",
        outcome=Outcome.TIMEOUT,
    )


def not_found(method: str, path: str) -> ApiError:
    """404 for a path the profile does not serve."""
    return ApiError(
        404,
        f"Invalid URL ({method} {path})",
        type="invalid_request_error",
        outcome=Outcome.INVALID_REQUEST,
    )


def rate_limited(
    *, metric: str, limit: int, model: str, retry_after_s: float, headers: dict[str, str]
) -> ApiError:
    """429 ``rate_limit_exceeded`` in OpenAI's wording (a gateway relays it as is)."""
    unit = "requests per min (RPM)" if metric == "requests" else "images per min (IPM)"
    return ApiError(
        429,
        f"Rate limit reached for {model} in organization org-sandbox on {unit}: "
        f"Limit {limit}, Used {limit}, Requested 1. Please try again in {retry_after_s:.3g}s. "
        "Visit https://platform.openai.com/account/rate-limits to learn more.",
        type=metric,
        code="rate_limit_exceeded",
        outcome=Outcome.RATE_LIMITED,
        headers=headers,
    )
