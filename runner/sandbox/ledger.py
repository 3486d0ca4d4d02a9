"""Balances, pre-authorisation holds and the per-key call log, in new-api's units and shapes.

Every API key is an account with a starting balance (``SandboxConfig.balance_usd`` or
``key_balances``). A request holds its worst-case price before it runs (laozhang's
pre-authorisation) and settles afterwards: charged requests leave one
consume row (type 2) in the call log, uncharged ones leave none - "no call-log entry means
not charged".
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from runner.sandbox.config import Profile, SandboxConfig
from runner.sandbox.groups import mask_key
from runner.sandbox.prices import to_quota, to_usd

#: new-api log type of a consume row.
LOG_CONSUME = 2
#: new-api returns at most this many rows from ``/api/log/token``.
MAX_RECENT_LOGS = 1000


@dataclass(slots=True, kw_only=True)
class Account:
    """The live balance of one API key (quota units; 500,000 = $1)."""

    token_id: int
    profile: Profile
    token_name: str
    group: str
    granted: int
    used: int = 0
    held: int = 0

    @property
    def remaining(self) -> int:
        """Granted minus used: what the balance endpoints report."""
        return self.granted - self.used

    @property
    def available(self) -> int:
        """What a new request may still hold: remaining minus in-flight holds."""
        return self.remaining - self.held

    def to_json(self) -> dict[str, Any]:
        """The account as ``GET /_sandbox/state`` lists it."""
        return {
            "token_id": self.token_id,
            "profile": self.profile.value,
            "token_name": self.token_name,
            "group": self.group,
            "granted_quota": self.granted,
            "used_quota": self.used,
            "held_quota": self.held,
            "remaining_quota": self.remaining,
            "remaining_usd": to_usd(self.remaining),
            "used_usd": to_usd(self.used),
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class CallLogEntry:
    """One consume row, as new-api's ``model/log.go`` stores it."""

    id: int
    created_at: int
    model_name: str
    quota: int
    prompt_tokens: int
    completion_tokens: int
    request_id: str
    token_id: int
    token_name: str
    group: str
    use_time: int
    other: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The row as ``GET /api/log/token`` returns it (``other`` is a JSON string)."""
        return {
            "id": self.id,
            "user_id": 1,
            "created_at": self.created_at,
            "type": LOG_CONSUME,
            "content": "",
            "username": "sandbox",
            "token_name": self.token_name,
            "model_name": self.model_name,
            "quota": self.quota,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "use_time": self.use_time,
            "is_stream": False,
            "channel": 1,
            "token_id": self.token_id,
            "group": self.group,
            "ip": "",
            "request_id": self.request_id,
            "other": json.dumps(dict(self.other), separators=(",", ":")),
        }


class Ledger:
    """All accounts and their call logs."""

    def __init__(self, config: SandboxConfig) -> None:
        self._config = config
        self._accounts: dict[tuple[Profile, str], Account] = {}
        self._logs: dict[int, list[CallLogEntry]] = {}
        self._next_log_id = 1

    def reconfigure(self, config: SandboxConfig) -> None:
        """Use ``config``'s balances for accounts opened from now on (existing ones keep theirs)."""
        self._config = config

    def account(self, profile: Profile, key: str, group: str) -> Account:
        """The account of ``key`` on ``profile``, opened with its starting balance if new."""
        account = self._accounts.get((profile, key))
        if account is None:
            usd = self._config.key_balances.get(key, self._config.balance_usd)
            account = Account(
                token_id=len(self._accounts) + 1,
                profile=profile,
                token_name=mask_key(key),
                group=group,
                granted=to_quota(usd),
            )
            self._accounts[profile, key] = account
            self._logs[account.token_id] = []
        return account

    def accounts(self) -> list[Account]:
        """Every account opened so far, oldest first."""
        return list(self._accounts.values())

    def hold(self, account: Account, quota: int) -> bool:
        """Reserve ``quota`` for an in-flight request; ``False`` if the balance cannot cover it."""
        if quota > account.available:
            return False
        account.held += quota
        return True

    def release(self, account: Account, quota: int) -> None:
        """Give back a hold (always done at settlement, before any charge)."""
        account.held = max(0, account.held - quota)

    def charge(self, account: Account, entry: CallLogEntry) -> CallLogEntry:
        """Deduct ``entry.quota`` and append the consume row; returns the row with its id.

        A charged failure may take the balance below zero; later requests are then refused.
        """
        row = replace(entry, id=self._next_log_id)
        self._next_log_id += 1
        account.used += row.quota
        self._logs[account.token_id].append(row)
        return row

    def logs(self, account: Account) -> list[CallLogEntry]:
        """The account's consume rows, newest first, at most :data:`MAX_RECENT_LOGS`."""
        return list(reversed(self._logs[account.token_id][-MAX_RECENT_LOGS:]))

    def total_used(self) -> int:
        """Quota charged over all accounts."""
        return sum(a.used for a in self._accounts.values())
