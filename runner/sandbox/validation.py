"""Parameter rules per profile and group: an :class:`ImageCall` becomes a :class:`Resolved` call.

Official (and the gateway's official-forwarding groups, which relay to OpenAI): unknown
fields are refused (``unknown_parameter``; so is ``response_format`` on GPT image models),
sizes follow the model's rule from ``runner.routes`` (``flexible`` gpt-image-2 rules or the
legacy three), qualities the model's list. The gateway's default group takes no ``size`` or
``quality`` on ``gpt-image-2`` and only the 30 sizes on ``gpt-image-2-vip``: the sandbox
refuses the parameters it does not take with 400 ``unsupported_parameter`` rather than ignore
them silently, so a client that sends them learns at once.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, cast

from runner.routes import Catalog
from runner.routes.sizes import LEGACY_SIZES, parse_size, resolve_size, size_problem
from runner.sandbox.config import Profile
from runner.sandbox.errors import (
    invalid_value,
    missing_parameter,
    model_not_found,
    unknown_parameter,
    unsupported_parameter,
)
from runner.sandbox.groups import Group
from runner.sandbox.parsing import Endpoint, ImageCall
from runner.sandbox.prices import MAINLINE_MODELS
from runner.sandbox.render import ImageFormat
from runner.sandbox.tokens import AUTO_QUALITY

#: Model used when an official request names none (the tool default on Responses too).
DEFAULT_IMAGE_MODEL = "gpt-image-2"
MAX_N = 10

_COMMON = frozenset({"quality", "size", "output_format", "output_compression", "background"})
_STREAMING = frozenset({"stream", "partial_images"})
#: Fields each official endpoint knows, besides prompt/model/images/mask (S1, S3 schemas).
OFFICIAL_FIELDS: Mapping[Endpoint, frozenset[str]] = {
    Endpoint.GENERATIONS: _COMMON
    | _STREAMING
    | {"n", "moderation", "style", "user", "safety_identifier"},
    Endpoint.EDITS: _COMMON | _STREAMING | {"n", "input_fidelity", "user", "safety_identifier"},
    Endpoint.RESPONSES: _COMMON | {"moderation", "action", "partial_images", "input_fidelity"},
    Endpoint.CHAT: frozenset(),
}
_JSON_EDIT_EXTRA = frozenset({"moderation"})
_FORMATS = ("png", "jpeg", "webp")


@dataclass(frozen=True, slots=True, kw_only=True)
class Resolved:
    """An accepted call with every value decided."""

    model: str
    width: int
    height: int
    quality: str
    fmt: ImageFormat
    compression: int
    background: Literal["opaque", "transparent"]
    n: int
    images_out: int
    response_format: Literal["b64_json", "url"]
    edit: bool


def _int(call: ImageCall, name: str, default: int, low: int, high: int) -> int:
    value: Any = call.params.get(name, default)
    if call.form and isinstance(value, str) and value.strip().lstrip("-").isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise invalid_value(name, f"Invalid '{name}': expected an integer from {low} to {high}.")
    return value


def _choice(call: ImageCall, name: str, default: str, allowed: tuple[str, ...]) -> str:
    value = call.params.get(name, default)
    if value not in allowed:
        listed = ", ".join(f"'{a}'" for a in allowed)
        raise invalid_value(name, f"Invalid value: '{value}'. Supported values are: {listed}.")
    return str(value)


def _streaming(call: ImageCall) -> None:
    if call.params.get("stream") in (True, "true", "True"):
        raise invalid_value("stream", "The sandbox does not emulate streaming; send stream=false.")


def _size(call: ImageCall, model: str, catalog: Catalog) -> tuple[int, int]:
    value = call.params.get("size", "auto")
    if not isinstance(value, str):
        raise invalid_value("size", "Invalid 'size': expected a string such as '1024x1024'.")
    if call.json_edit:
        allowed = (*LEGACY_SIZES, "auto")
        problem = None if value in allowed else "JSON edits take one of " + ", ".join(allowed)
    else:
        problem = size_problem(catalog.caps(model).sizes, value)
    if problem:
        raise invalid_value("size", f"Invalid size '{value}': {problem}.")
    size = resolve_size(value)
    return size.width, size.height


def _image_models(catalog: Catalog) -> frozenset[str]:
    # The models the route catalog describes are the image models the sandbox knows.
    return frozenset(name for name in catalog.models if name != "*")


def check_official_model(call: ImageCall, catalog: Catalog) -> str:
    """The image model of an official call (and the Responses mainline model's validity)."""
    known = _image_models(catalog)
    if call.endpoint is Endpoint.RESPONSES:
        mainline = call.mainline_model or ""
        if mainline in known:
            raise invalid_value(
                "model",
                f"The model '{mainline}' cannot be the Responses model: choose a mainline "
                "model and put the image model in the image_generation tool.",
            )
        if mainline not in MAINLINE_MODELS:
            raise model_not_found(Profile.OPENAI, mainline, "")
    model = call.model or DEFAULT_IMAGE_MODEL
    if model not in known:
        raise model_not_found(Profile.OPENAI, model, "")
    return model


def resolve_official(call: ImageCall, catalog: Catalog, *, allow_url: bool = False) -> Resolved:
    """Check an official (or official-forwarding) call and decide every value.

    Args:
        call: the parsed request.
        catalog: model capabilities (size rule, qualities) from ``runner.routes``.
        allow_url: accept ``response_format`` (the gateway handles it before relaying).

    Raises:
        ApiError: 400/404 naming the offending parameter.
    """
    model = check_official_model(call, catalog)
    known = OFFICIAL_FIELDS[call.endpoint] | (_JSON_EDIT_EXTRA if call.json_edit else set())
    for name in call.params:
        if name not in known and not (allow_url and name == "response_format"):
            prefix = "tools[0]." if call.endpoint is Endpoint.RESPONSES else ""
            raise unknown_parameter(prefix + name)
    _streaming(call)
    width, height = _size(call, model, catalog)
    quality = _choice(call, "quality", "auto", catalog.caps(model).qualities or ("auto",))
    fmt = cast(ImageFormat, _choice(call, "output_format", "png", _FORMATS))
    background = _choice(call, "background", "auto", ("transparent", "opaque", "auto"))
    if background == "transparent" and fmt == "jpeg":
        raise invalid_value("background", "Transparent backgrounds need png or webp output.")
    _choice(call, "moderation", "auto", ("low", "auto"))
    n = 1 if call.endpoint is Endpoint.RESPONSES else _int(call, "n", 1, 1, MAX_N)
    edit = _is_edit(call)
    return Resolved(
        model=model,
        width=width,
        height=height,
        quality=AUTO_QUALITY if quality == "auto" else quality,
        fmt=fmt,
        compression=_int(call, "output_compression", 100, 0, 100),
        background="transparent" if background == "transparent" else "opaque",
        n=n,
        images_out=n,
        response_format=_response_format(call) if allow_url else "b64_json",
        edit=edit,
    )


def _is_edit(call: ImageCall) -> bool:
    action = call.params.get("action", "auto")
    if call.endpoint is not Endpoint.RESPONSES:
        return call.endpoint is Endpoint.EDITS
    if action not in ("generate", "edit", "auto"):
        raise invalid_value("tools[0].action", "Invalid 'action': generate, edit or auto.")
    if action == "edit" and not call.sources:
        raise invalid_value("tools[0].action", "action 'edit' needs an input image.")
    return action == "edit" or (action == "auto" and bool(call.sources))


def _response_format(call: ImageCall) -> Literal["b64_json", "url"]:
    value = _choice(call, "response_format", "b64_json", ("b64_json", "url"))
    return "url" if value == "url" else "b64_json"


def resolve_gateway(call: ImageCall, group: Group, catalog: Catalog) -> Resolved:
    """Check a gateway call against its token group's route rules.

    Raises:
        ApiError: 400 for a parameter the route does not take, 503 for a model the group
            has no channel for.
    """
    if not call.model:
        raise missing_parameter("model")
    rules = group.models.get(call.model)
    if rules is None:
        raise model_not_found(Profile.LAOZHANG, call.model, group.name)
    if call.endpoint is Endpoint.CHAT:
        _streaming(call)
        return _per_call(call, 1024, 1024, n=1)
    if rules.sizes == "model":
        return resolve_official(call, catalog, allow_url=True)
    if "quality" in call.params:
        raise unsupported_parameter("quality", call.model, group.name)
    if rules.sizes == "none" and "size" in call.params:
        raise unsupported_parameter("size", call.model, group.name)
    width, height = 1024, 1024
    if "size" in call.params:
        value = str(call.params["size"])
        if problem := size_problem("vip", value):
            raise invalid_value("size", f"Invalid size '{value}': {problem}.")
        size = parse_size(value)
        if size is not None:
            width, height = size.width, size.height
    return _per_call(call, width, height, n=_int(call, "n", 1, 1, MAX_N))


def _per_call(call: ImageCall, width: int, height: int, *, n: int) -> Resolved:
    # The web routes return one PNG whatever n says, but new-api bills the per-call price
    # times n.
    return Resolved(
        model=call.model or DEFAULT_IMAGE_MODEL,
        width=width,
        height=height,
        quality=AUTO_QUALITY,
        fmt="png",
        compression=100,
        background="opaque",
        n=n,
        images_out=1,
        response_format="url" if call.endpoint is Endpoint.CHAT else _response_format(call),
        edit=bool(call.sources),
    )
