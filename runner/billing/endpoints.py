"""A provider account's balance and per-request call log, as new-api gateways serve them.

- Balance: ``GET {root}/api/usage/token`` → ``data.total_used`` / ``data.total_available``
  in raw quota units (500,000 = US$1).
- Call log: ``GET {root}/api/log/token`` → ``data``: the key's newest rows (at most 1,000),
  each with ``request_id`` (the gateway's ``X-Oneapi-Request-Id``), ``quota``, ``type``
  (2 = consume), ``created_at`` (unix seconds) and ``other`` (a JSON string).

``root`` is the route's base URL without its trailing ``/v1``; both URLs can be given
explicitly for gateways that put them elsewhere. httpx errors never leave this module: they
become :class:`BillingUnavailable`.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from runner.errors import ImagerunError
from runner.http.transport import Transport
from runner.models import utcnow
from runner.routes import Route

#: new-api's ``QuotaPerUnit``.
QUOTA_PER_USD = 500_000
#: new-api returns at most this many rows from ``/api/log/token``.
MAX_LOG_ROWS = 1000
#: new-api log type of a consume (charge) row.
LOG_CONSUME = 2


class BillingUnavailable(ImagerunError):
    """A provider's balance or call log could not be read (or a log file not parsed)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class AccountEndpoints:
    """Where a route's account can be read, and the unit its amounts are in."""

    balance_url: str
    log_url: str
    quota_per_usd: float = QUOTA_PER_USD

    @classmethod
    def for_route(
        cls,
        route: Route,
        *,
        balance_url: str | None = None,
        log_url: str | None = None,
        quota_per_usd: float = QUOTA_PER_USD,
    ) -> AccountEndpoints:
        root = route.base_url.rstrip("/").removesuffix("/v1")
        return cls(
            balance_url=balance_url or f"{root}/api/usage/token",
            log_url=log_url or f"{root}/api/log/token",
            quota_per_usd=quota_per_usd,
        )

    def account(self, route: Route) -> str:
        """A name for the account (the key variable and where it is read; never the key)."""
        return f"{route.api_key_env}@{self.balance_url}"

    def usd(self, quota: float) -> float:
        return round(quota / self.quota_per_usd, 6)


@dataclass(frozen=True, slots=True, kw_only=True)
class Balance:
    used_usd: float
    remaining_usd: float | None
    read_at: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class LogRow:
    """One charge row of a call log."""

    request_id: str | None
    client_request_id: str | None
    created_at: datetime
    quota: int
    usd: float
    model: str | None
    other: Mapping[str, Any] = field(default_factory=dict)
    #: The log's own row id, when it has one.
    row_id: int | None = None

    @property
    def key(self) -> tuple[Any, ...]:
        """Identity of the row across two reads of the log."""
        if self.row_id is not None:
            return (self.row_id,)
        return (self.request_id, self.client_request_id, self.created_at, self.quota)


@dataclass(frozen=True, slots=True, kw_only=True)
class CallLog:
    """Charge rows of an account, and the time span they are known to cover in full.

    Attributes:
        complete: the log holds every row since the account began (the API returned fewer
            than its maximum), so an attempt with no row before ``covers_to`` was not charged.
        covers_from: without ``complete``, rows are only known to be complete from here.
        covers_to: when the log was read (or the newest row, for a file).
        source: the URL or file it came from.
    """

    rows: list[LogRow]
    complete: bool
    covers_from: datetime | None
    covers_to: datetime
    source: str

    @property
    def has_client_ids(self) -> bool:
        """Rows name the client's ``X-Client-Request-Id``: a missing row is then conclusive."""
        return any(r.client_request_id for r in self.rows)


def account_client(
    route: Route, environ: Mapping[str, str], timeout: float = 30.0
) -> httpx.AsyncClient:
    """An HTTP client carrying the route's key (for its own provider's endpoints only)."""
    key = route.api_key(environ)
    if key is None:
        raise BillingUnavailable(f"route {route.name!r} needs an API key: set {route.api_key_env}")
    return httpx.AsyncClient(
        transport=Transport(httpx.create_ssl_context()),
        headers={"Authorization": f"Bearer {key}"},
        timeout=timeout,
    )


async def _get_json(client: httpx.AsyncClient, url: str, what: str) -> Any:
    try:
        response = await client.get(url)
    except httpx.HTTPError as exc:
        raise BillingUnavailable(f"cannot read the {what} at {url}: {exc!r}") from exc
    if response.status_code != 200:
        raise BillingUnavailable(
            f"cannot read the {what} at {url}: HTTP {response.status_code} {response.text[:200]!r}"
        )
    try:
        return response.json()
    except ValueError as exc:
        raise BillingUnavailable(f"the {what} at {url} is not JSON") from exc


async def read_balance(client: httpx.AsyncClient, endpoints: AccountEndpoints) -> Balance:
    """The account's all-time use and what is left, in USD."""
    body = await _get_json(client, endpoints.balance_url, "balance")
    data = body.get("data") if isinstance(body, dict) else None
    if not isinstance(data, dict) or "total_used" not in data:
        raise BillingUnavailable(f"unexpected balance reply from {endpoints.balance_url}")
    available = data.get("total_available")
    return Balance(
        used_usd=endpoints.usd(float(data["total_used"])),
        remaining_usd=None if available is None else endpoints.usd(float(available)),
        read_at=utcnow(),
    )


async def read_call_log(client: httpx.AsyncClient, endpoints: AccountEndpoints) -> CallLog:
    """The account's charge rows from the provider's call-log API."""
    read_at = utcnow()
    body = await _get_json(client, endpoints.log_url, "call log")
    raw = body.get("data") if isinstance(body, dict) else None
    if isinstance(raw, dict):
        raw = raw.get("items")
    if not isinstance(raw, list):
        raise BillingUnavailable(f"unexpected call-log reply from {endpoints.log_url}")
    rows = parse_rows(raw, endpoints)
    complete = len(raw) < MAX_LOG_ROWS
    oldest = min((r.created_at for r in rows), default=None)
    return CallLog(
        rows=rows,
        complete=complete,
        covers_from=None if complete else oldest,
        covers_to=read_at,
        source=endpoints.log_url,
    )


def load_call_log(path: Path, endpoints: AccountEndpoints) -> CallLog:
    """A call log exported to a file: JSON (the API's reply or a list), JSON lines, or CSV.

    A file covers the span from its oldest to its newest row; attempts outside it stay as
    they are.
    """
    try:
        text = path.read_text("utf-8")
    except OSError as exc:
        raise BillingUnavailable(f"{path}: cannot read: {exc}") from exc
    raw = _file_records(path, text)
    rows = parse_rows(raw, endpoints)
    if not rows:
        raise BillingUnavailable(f"{path}: no call-log rows found")
    times = [r.created_at for r in rows]
    return CallLog(
        rows=rows, complete=False, covers_from=min(times), covers_to=max(times), source=str(path)
    )


def _file_records(path: Path, text: str) -> list[Any]:
    if path.suffix.lower() == ".csv":
        return list(csv.DictReader(text.splitlines()))
    try:
        body = json.loads(text)
    except ValueError:
        try:
            return [json.loads(line) for line in text.splitlines() if line.strip()]
        except ValueError as exc:
            raise BillingUnavailable(f"{path}: neither JSON, JSON lines nor CSV") from exc
    if isinstance(body, dict):
        body = body.get("data", body)
        if isinstance(body, dict):
            body = body.get("items", [])
    if not isinstance(body, list):
        raise BillingUnavailable(f"{path}: expected a list of call-log rows")
    return body


def parse_rows(raw: Iterable[Any], endpoints: AccountEndpoints) -> list[LogRow]:
    """Consume rows (type 2, or untyped) as :class:`LogRow`; other row types are skipped."""
    rows = []
    for item in raw:
        if not isinstance(item, Mapping):
            continue
        kind = _int_or_none(item.get("type"))
        if kind is not None and kind != LOG_CONSUME:
            continue
        other = _other(item.get("other"))
        quota = int(float(item.get("quota") or 0))
        rows.append(
            LogRow(
                request_id=str(item["request_id"]) if item.get("request_id") else None,
                client_request_id=_client_id(other),
                created_at=_when(item.get("created_at")),
                quota=quota,
                usd=endpoints.usd(quota),
                model=str(item["model_name"]) if item.get("model_name") else None,
                other=other,
                row_id=_int_or_none(item.get("id")),
            )
        )
    return rows


def _int_or_none(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _other(value: Any) -> dict[str, Any]:
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, str) and value.strip():
        try:
            parsed = json.loads(value)
        except ValueError:
            return {}
        return dict(parsed) if isinstance(parsed, Mapping) else {}
    return {}


def _client_id(other: Mapping[str, Any]) -> str | None:
    for key in ("client_request_id", "x_client_request_id", "X-Client-Request-Id"):
        if other.get(key):
            return str(other[key])
    return None


def _when(value: Any) -> datetime:
    if isinstance(value, int | float) or (isinstance(value, str) and value.isdigit()):
        return datetime.fromtimestamp(float(value), UTC)
    if isinstance(value, str) and value:
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            pass
        else:
            return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    raise BillingUnavailable(f"call-log row without a usable created_at: {value!r}")
