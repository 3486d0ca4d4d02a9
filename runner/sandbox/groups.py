"""Gateway token groups (laozhang): which key reaches which route, with which rules and price.

On laozhang the token group, not the model name, picks the route:
the same ``gpt-image-2`` is a $0.03 web route in the ``default`` group and token-billed
official forwarding in ``Sora2Official`` (x1) and ``GPTImage2 Enterprise`` (x1.2). In the
sandbox the group is read from the key's prefix.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from types import MappingProxyType
from typing import Literal

#: Size rule of a gateway model: ``none`` (no size accepted), ``vip`` (the 30 sizes) or
#: ``model`` (the official rules of the model, as on the official profile).
GatewaySizes = Literal["none", "vip", "model"]

#: Group name recorded for requests on the official profile (one account, no groups).
OPENAI_GROUP = "openai"


@dataclass(frozen=True, slots=True, kw_only=True)
class GatewayModel:
    """What one model accepts inside a group."""

    sizes: GatewaySizes
    quality: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class Group:
    """A gateway token group.

    Attributes:
        name: the group name as the gateway shows it (also in call-log rows).
        key_prefix: sandbox keys starting with this belong to the group.
        billing: ``call`` (``usd_per_call`` x n) or ``token`` (official prices x ``ratio``).
        usd_per_call: price of one image on a per-call group.
        ratio: new-api's group ratio, a multiplier on every charge.
        models: the models the group routes, with their parameter rules.
    """

    name: str
    key_prefix: str
    billing: Literal["call", "token"]
    usd_per_call: Decimal
    ratio: Decimal
    models: Mapping[str, GatewayModel]


_WEB = GatewayModel(sizes="none", quality=False)
_VIP = GatewayModel(sizes="vip", quality=False)
_OFFICIAL = GatewayModel(sizes="model", quality=True)

DEFAULT_GROUP = Group(
    name="default",
    key_prefix="sk-default-",
    billing="call",
    usd_per_call=Decimal("0.03"),
    ratio=Decimal(1),
    models=MappingProxyType({"gpt-image-2": _WEB, "gpt-image-2-vip": _VIP}),
)
_OFFICIAL_MODELS = MappingProxyType(
    {
        "gpt-image-2": _OFFICIAL,
        "gpt-image-2.5-flare": _OFFICIAL,
        "gpt-image-2.5-sunburst": _OFFICIAL,
    }
)
SORA2_OFFICIAL_GROUP = Group(
    name="Sora2Official",
    key_prefix="sk-sora2official-",
    billing="token",
    usd_per_call=Decimal(0),
    ratio=Decimal(1),
    models=_OFFICIAL_MODELS,
)
ENTERPRISE_GROUP = Group(
    name="GPTImage2 Enterprise",
    key_prefix="sk-enterprise-",
    billing="token",
    usd_per_call=Decimal(0),
    ratio=Decimal("1.2"),
    models=_OFFICIAL_MODELS,
)

GROUPS: tuple[Group, ...] = (DEFAULT_GROUP, SORA2_OFFICIAL_GROUP, ENTERPRISE_GROUP)


def group_for_key(key: str) -> Group:
    """The group a gateway key belongs to; keys with no known prefix are ``default``."""
    for group in GROUPS:
        if key.startswith(group.key_prefix):
            return group
    return DEFAULT_GROUP


def is_rejected_key(key: str) -> bool:
    """Whether the sandbox refuses this key (any key containing ``invalid``)."""
    return "invalid" in key.lower()


def mask_key(key: str) -> str:
    """A token name that identifies a key in logs without revealing it (``sk-def…dbox``)."""
    if len(key) <= 10:
        return key[:3] + "…"
    return f"{key[:6]}…{key[-4:]}"
