"""The route catalog: built-in routes from ``builtin.toml``, sandbox mirrors, user overrides.

A route is data, not code. Precedence, lowest first: ``builtin.toml`` → ``[routes.*]`` in
``imagerun.toml`` → ``IMAGERUN_ROUTE_<NAME>_BASE_URL`` / ``_API_KEY_ENV`` in the environment.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from importlib import resources
from typing import Any, Literal

from runner.errors import ConfigError
from runner.models import ChargeStatus, Outcome, Shape, UnknownPolicy
from runner.routes.sizes import SizeRuleName

SANDBOX_PORT = 8765
SANDBOX_HOST = "127.0.0.1"

#: Profile path on the sandbox for each mirrored provider.
_SANDBOX_PROFILE = {"openai": "openai", "laozhang": "laozhang"}
#: Key variable and the (non-secret) key used when it is unset, by mirrored key variable.
_SANDBOX_KEYS = {
    "OPENAI_API_KEY": ("SANDBOX_OPENAI_API_KEY", "sk-sandbox-openai"),
    "LAOZHANG_API_KEY": ("SANDBOX_LAOZHANG_API_KEY", "sk-default-sandbox"),
    "LAOZHANG_OFFICIAL_API_KEY": ("SANDBOX_LAOZHANG_OFFICIAL_API_KEY", "sk-sora2official-sandbox"),
    "LAOZHANG_ENTERPRISE_API_KEY": (
        "SANDBOX_LAOZHANG_ENTERPRISE_API_KEY",
        "sk-enterprise-sandbox",
    ),
}

#: Manifest fields every route accepts.
COMMON_FIELDS = frozenset({"id", "prompt", "model", "metadata"})

BillingUnit = Literal["call", "token"]
#: What a delivered image that is not what was asked for means for its job.
MismatchPolicy = Literal["keep", "fail"]


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelCaps:
    """What a model label accepts (size rule and quality values)."""

    sizes: SizeRuleName
    qualities: tuple[str, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class Route:
    """A named, configured way to reach an image model. Never holds the API key itself."""

    name: str
    provider: str
    shape: Shape
    base_url: str
    api_key_env: str
    model: str
    params: frozenset[str]
    sizes: SizeRuleName | Literal["model"]
    billing: BillingUnit
    usd_per_call: float = 0.0
    price_table: str = "openai"
    price_multiplier: float = 1.0
    group: str | None = None
    mainline_model: str | None = None
    edit_field: str = "image[]"
    rpm: int = 60
    #: The user gave ``rpm`` (configuration or environment): pacing starts there, else it
    #: starts low and probes upward to it.
    rpm_told: bool = False
    #: Requests in flight per worker process.
    concurrency: int = 8
    #: Jobs leased on this route by all workers together (``None``: no global cap).
    max_in_flight: int | None = None
    timeout: float = 360.0
    connect_timeout: float = 10.0
    max_attempts: int = 5
    deadline: float = 3600.0
    unknown_policy: UnknownPolicy = UnknownPolicy.HOLD
    #: An image of another size or format than asked: ``keep`` (the job succeeds) or
    #: ``fail`` (the job fails); either way the paid image is kept and nothing is re-sent.
    on_mismatch: MismatchPolicy = "keep"
    failure_charges: Mapping[Outcome, ChargeStatus] = field(default_factory=dict)
    #: Edit fidelity under this flags an edit ``ignored_source`` (a fresh generation).
    fidelity_ignored_below: float = 0.6
    #: Edit fidelity at or over this flags an edit ``unchanged`` (the source came back).
    fidelity_unchanged_above: float = 0.995
    #: Only sandbox routes have one: the sandbox's keys are not secrets.
    api_key_default: str | None = None
    mirrors: str | None = None
    #: Every price on the route is multiplied by this (OpenAI's Batch API: 0.5).
    batch_discount: float = 1.0
    #: ``batch`` shape: most lines in one remote batch (the provider allows 50,000).
    batch_max_lines: int = 50_000
    #: ``batch`` shape: most bytes in one input file (the provider allows 200 MB).
    batch_max_bytes: int = 200 * 1024 * 1024
    #: ``batch`` shape: a line whose source images inline as data URLs would be longer than
    #: this uploads them as files instead (referenced by ``file_id``).
    batch_max_line_bytes: int = 8 * 1024 * 1024
    #: ``batch`` shape: seconds runnable jobs are gathered before a remote batch is sent.
    batch_max_wait: float = 2.0
    #: ``batch`` shape: seconds between polls of a remote batch at first (backing off to
    #: ten times that).
    poll_interval: float = 30.0

    @property
    def price_factor(self) -> float:
        """What token prices are multiplied by on this route (multiplier × batch discount)."""
        return self.price_multiplier * self.batch_discount

    @property
    def endpoints(self) -> tuple[str, ...]:
        """Paths (relative to ``base_url``) this route's shape calls."""
        return _ENDPOINTS[self.shape]

    @property
    def accepts_edits(self) -> bool:
        return "images" in self.params

    def api_key(self, environ: Mapping[str, str] | None = None) -> str | None:
        """The API key from the environment (or the sandbox default); ``None`` if unset."""
        env = os.environ if environ is None else environ
        return env.get(self.api_key_env) or self.api_key_default

    def charge_policy(self, outcome: Outcome) -> ChargeStatus:
        """Documented (or configured, or observed) charge status of a failed attempt."""
        if outcome is Outcome.OK:
            return ChargeStatus.CHARGED
        return self.failure_charges.get(outcome, ChargeStatus.UNKNOWN)

    def public_dict(self) -> dict[str, Any]:
        """A JSON-friendly description (no key values, only whether the key is set)."""
        return {
            "name": self.name,
            "provider": self.provider,
            "group": self.group,
            "shape": self.shape.value,
            "base_url": self.base_url,
            "endpoints": list(self.endpoints),
            "model": self.model,
            "mainline_model": self.mainline_model,
            "params": sorted(self.params),
            "sizes": self.sizes,
            "billing": self.billing,
            "usd_per_call": self.usd_per_call if self.billing == "call" else None,
            "price_table": self.price_table if self.billing == "token" else None,
            "price_multiplier": self.price_multiplier,
            "api_key_env": self.api_key_env,
            "api_key_set": self.api_key() is not None,
            "rpm": self.rpm,
            "concurrency": self.concurrency,
            "max_in_flight": self.max_in_flight,
            "unknown_policy": self.unknown_policy.value,
            "on_mismatch": self.on_mismatch,
            "failure_charges": {k.value: v.value for k, v in self.failure_charges.items()},
            "fidelity_ignored_below": self.fidelity_ignored_below,
            "fidelity_unchanged_above": self.fidelity_unchanged_above,
            "mirrors": self.mirrors,
            "batch_discount": self.batch_discount,
            **(
                {
                    "batch_max_lines": self.batch_max_lines,
                    "batch_max_bytes": self.batch_max_bytes,
                    "batch_max_line_bytes": self.batch_max_line_bytes,
                    "batch_max_wait": self.batch_max_wait,
                    "poll_interval": self.poll_interval,
                }
                if self.shape is Shape.BATCH
                else {}
            ),
        }


_ENDPOINTS = {
    Shape.IMAGES: ("/images/generations", "/images/edits"),
    Shape.RESPONSES: ("/responses",),
    Shape.CHAT: ("/chat/completions",),
    Shape.BATCH: ("/files", "/batches"),
}


@dataclass(frozen=True, slots=True)
class Catalog:
    """All routes by name, plus model capabilities."""

    routes: Mapping[str, Route]
    models: Mapping[str, ModelCaps]

    def get(self, name: str) -> Route:
        try:
            return self.routes[name]
        except KeyError:
            known = ", ".join(sorted(self.routes))
            raise ConfigError(f"unknown route {name!r}; known routes: {known}") from None

    def caps(self, model: str) -> ModelCaps:
        return self.models.get(model) or self.models["*"]

    def resend_routes(self) -> frozenset[str]:
        """Routes whose ``unknown`` jobs go back to the queue when recovery judges them."""
        return frozenset(
            r.name for r in self.routes.values() if r.unknown_policy is UnknownPolicy.RESEND
        )

    def size_rule(self, route: Route, model: str | None = None) -> SizeRuleName:
        if route.sizes == "model":
            return self.caps(model or route.model).sizes
        return route.sizes

    def qualities(self, route: Route, model: str | None = None) -> tuple[str, ...]:
        return self.caps(model or route.model).qualities if "quality" in route.params else ()


def _builtin_data() -> dict[str, Any]:
    text = resources.files("runner.routes").joinpath("builtin.toml").read_text("utf-8")
    return tomllib.loads(text)


def _build_route(name: str, raw: Mapping[str, Any], defaults: Mapping[str, Any]) -> Route:
    merged: dict[str, Any] = {**defaults, **raw}
    charges = {**defaults.get("failure_charges", {}), **raw.get("failure_charges", {})}
    try:
        return Route(
            name=name,
            provider=str(merged["provider"]),
            shape=Shape(merged["shape"]),
            base_url=str(merged["base_url"]).rstrip("/"),
            api_key_env=str(merged["api_key_env"]),
            model=str(merged["model"]),
            params=frozenset(merged.get("params", ())),
            sizes=merged.get("sizes", "none"),
            billing=merged.get("billing", "call"),
            usd_per_call=float(merged.get("usd_per_call", 0.0)),
            price_table=str(merged.get("price_table", "openai")),
            price_multiplier=float(merged.get("price_multiplier", 1.0)),
            group=merged.get("group"),
            mainline_model=merged.get("mainline_model"),
            edit_field=str(merged.get("edit_field", "image[]")),
            rpm=int(merged["rpm"]),
            rpm_told=bool(merged.get("rpm_told", False)),
            concurrency=int(merged["concurrency"]),
            max_in_flight=int(merged["max_in_flight"]) if merged.get("max_in_flight") else None,
            timeout=float(merged["timeout"]),
            connect_timeout=float(merged["connect_timeout"]),
            max_attempts=int(merged["max_attempts"]),
            deadline=float(merged["deadline"]),
            unknown_policy=UnknownPolicy(merged["unknown_policy"]),
            on_mismatch=_mismatch_policy(merged.get("on_mismatch", "keep")),
            failure_charges={Outcome(k): ChargeStatus(v) for k, v in charges.items()},
            fidelity_ignored_below=float(merged.get("fidelity_ignored_below", 0.6)),
            fidelity_unchanged_above=float(merged.get("fidelity_unchanged_above", 0.995)),
            api_key_default=merged.get("api_key_default"),
            mirrors=merged.get("mirrors"),
            **_batch_settings(merged),
        )
    except KeyError as exc:
        raise ConfigError(f"route {name!r}: missing setting {exc.args[0]!r}") from None
    except ValueError as exc:
        raise ConfigError(f"route {name!r}: {exc}") from None


def _batch_settings(merged: Mapping[str, Any]) -> dict[str, Any]:
    """The ``batch`` shape's settings a route gives (the others keep their defaults)."""
    kinds: dict[str, type[float] | type[int]] = {
        "batch_discount": float,
        "batch_max_lines": int,
        "batch_max_bytes": int,
        "batch_max_line_bytes": int,
        "batch_max_wait": float,
        "poll_interval": float,
    }
    found = {k: kind(merged[k]) for k, kind in kinds.items() if k in merged}
    for key, value in found.items():
        if value < 0 or (value == 0 and key in ("batch_max_lines", "batch_max_bytes")):
            raise ValueError(f"{key} must be positive, not {value!r}")
    return found


def _mismatch_policy(value: object) -> MismatchPolicy:
    if value == "keep":
        return "keep"
    if value == "fail":
        return "fail"
    raise ValueError(f'on_mismatch must be "keep" or "fail", not {value!r}')


def _sandbox_mirrors(routes: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """A ``sandbox-<name>`` for every built-in route, plus ``sandbox`` (= ``sandbox-openai``)."""
    mirrors: dict[str, dict[str, Any]] = {}
    for name, raw in routes.items():
        profile = _SANDBOX_PROFILE[raw["provider"]]
        key_env, key_default = _SANDBOX_KEYS[raw["api_key_env"]]
        mirrors[f"sandbox-{name}"] = {
            **raw,
            "provider": "sandbox",
            "base_url": f"http://{SANDBOX_HOST}:{SANDBOX_PORT}/{profile}/v1",
            "api_key_env": key_env,
            "api_key_default": key_default,
            "mirrors": name,
            # The sandbox answers fast; keep the demo snappy but still rate limited.
            "rpm": 600,
            "timeout": 30.0,
            # The sandbox compresses the provider's 24 h window into seconds.
            **({"poll_interval": 0.2, "batch_max_wait": 0.3} if "poll_interval" in raw else {}),
        }
    mirrors["sandbox"] = dict(mirrors["sandbox-openai"])
    return mirrors


def env_key(name: str, setting: str) -> str:
    """``IMAGERUN_ROUTE_<NAME>_<SETTING>`` with the name upper-cased and ``-`` → ``_``."""
    return f"IMAGERUN_ROUTE_{name.upper().replace('-', '_')}_{setting}"


def load_catalog(
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Catalog:
    """Build the catalog from the built-in table, config overrides and the environment.

    Args:
        overrides: ``[routes.<name>]`` tables from ``imagerun.toml``; a name that is not built
            in defines a new route (and must then give provider, shape, base_url, …).
        environ: the environment to read ``IMAGERUN_ROUTE_*`` from (default ``os.environ``).
    """
    env = os.environ if environ is None else environ
    data = _builtin_data()
    defaults = data["defaults"]
    raw_routes: dict[str, dict[str, Any]] = {k: dict(v) for k, v in data["routes"].items()}
    raw_routes.update(_sandbox_mirrors(raw_routes))
    for name, override in (overrides or {}).items():
        base = raw_routes.get(name, {})
        charges = {**base.get("failure_charges", {}), **override.get("failure_charges", {})}
        raw_routes[name] = {**base, **override, "failure_charges": charges}
        if "rpm" in override:
            raw_routes[name]["rpm_told"] = True
    routes: dict[str, Route] = {}
    for name, raw in raw_routes.items():
        route = _build_route(name, raw, defaults)
        if base_url := env.get(env_key(name, "BASE_URL")):
            route = replace(route, base_url=base_url.rstrip("/"))
        if key_env := env.get(env_key(name, "API_KEY_ENV")):
            route = replace(route, api_key_env=key_env)
        routes[name] = route
    models = {
        name: ModelCaps(sizes=caps["sizes"], qualities=tuple(caps["qualities"]))
        for name, caps in data["models"].items()
    }
    return Catalog(routes=routes, models=models)
