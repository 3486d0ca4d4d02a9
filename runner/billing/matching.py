"""Matching ledger attempts with a call log's charge rows.

Join keys, strongest first: the gateway's request id (``X-Oneapi-Request-Id``, which new-api
stores as the row's ``request_id``), the provider's ``x-request-id``, and our
``X-Client-Request-Id`` where the gateway copies it into the row's ``other``. Verdicts:

- a row (or several: a violation fee is a second row with the same id) → ``charged`` at the
  rows' total;
- no row, the attempt settled inside the span the log covers in full, and the log would have
  named it (we hold an id the log uses, or the log carries client ids) → ``not_charged``
  (the call log is the gateway's own record of what it billed);
- an attempt we hold no id for (a client timeout) may still be matched by time and model when
  exactly one leftover row fits it and it is the only attempt that row fits;
- otherwise the attempt stays as it was.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta

from runner.billing.endpoints import CallLog, LogRow
from runner.models import ChargeStatus
from runner.store.charges import BilledAttempt

#: Clock skew allowed between our timestamps and the provider's (its rows have 1 s precision).
SKEW = timedelta(seconds=2)


@dataclass(frozen=True, slots=True, kw_only=True)
class Verdict:
    attempt: BilledAttempt
    status: ChargeStatus
    usd: float | None
    #: How it was decided: ``request_id``, ``client_request_id``, ``time`` or ``absent``.
    how: str
    rows: tuple[LogRow, ...] = ()


@dataclass(slots=True, kw_only=True)
class Matching:
    verdicts: list[Verdict] = field(default_factory=list)
    #: Attempts the log says nothing conclusive about.
    undecided: list[BilledAttempt] = field(default_factory=list)
    #: Charge rows no attempt claimed (other clients of the key, or requests we never sent).
    unmatched_rows: list[LogRow] = field(default_factory=list)


def rows_for(attempt: BilledAttempt, log: CallLog) -> tuple[list[LogRow], str]:
    """The rows naming ``attempt`` by id, and which id matched."""
    ids = {i for i in (attempt.gateway_request_id, attempt.provider_request_id) if i}
    by_id = [r for r in log.rows if r.request_id and r.request_id in ids]
    if by_id:
        return by_id, "request_id"
    by_client = [r for r in log.rows if r.client_request_id == attempt.id]
    return by_client, "client_request_id" if by_client else ""


def covered(attempt: BilledAttempt, log: CallLog, settle: timedelta) -> bool:
    """Whether the log would hold a charge for ``attempt`` if there had been one."""
    end = attempt.finished_at or attempt.started_at
    if end + settle > log.covers_to:
        return False
    if log.complete:
        return True
    return log.covers_from is not None and attempt.started_at >= log.covers_from


def identifiable(attempt: BilledAttempt, log: CallLog) -> bool:
    """Whether a charge for ``attempt`` would carry an id we can look for."""
    return bool(attempt.gateway_request_id or attempt.provider_request_id) or log.has_client_ids


def match_log(attempts: Sequence[BilledAttempt], log: CallLog, *, settle: float) -> Matching:
    """Decide each attempt's charge from ``log`` (see the module docstring)."""
    result = Matching()
    window = timedelta(seconds=settle)
    claimed: set[int] = set()
    by_request: dict[str, list[int]] = defaultdict(list)
    by_client: dict[str, list[int]] = defaultdict(list)
    for index, row in enumerate(log.rows):
        if row.request_id:
            by_request[row.request_id].append(index)
        if row.client_request_id:
            by_client[row.client_request_id].append(index)
    idless: list[BilledAttempt] = []
    for attempt in attempts:
        ids = [i for i in (attempt.gateway_request_id, attempt.provider_request_id) if i]
        hits = sorted({n for i in ids for n in by_request.get(i, [])})
        how = "request_id"
        if not hits:
            hits, how = by_client.get(attempt.id, []), "client_request_id"
        if hits:
            claimed.update(hits)
            rows = tuple(log.rows[n] for n in hits)
            usd = round(sum(r.usd for r in rows), 6)
            result.verdicts.append(
                Verdict(attempt=attempt, status=ChargeStatus.CHARGED, usd=usd, how=how, rows=rows)
            )
        elif covered(attempt, log, window) and identifiable(attempt, log):
            result.verdicts.append(
                Verdict(attempt=attempt, status=ChargeStatus.NOT_CHARGED, usd=0.0, how="absent")
            )
        else:
            idless.append(attempt)
    leftovers = [n for n in range(len(log.rows)) if n not in claimed]
    _match_by_time(idless, log, leftovers, window, result)
    return result


def _fits(attempt: BilledAttempt, row: LogRow, window: timedelta) -> bool:
    if row.client_request_id or (row.model and row.model != attempt.model):
        return False
    end = (attempt.finished_at or attempt.started_at) + window
    return attempt.started_at - SKEW <= row.created_at <= end + SKEW


def _match_by_time(
    idless: list[BilledAttempt],
    log: CallLog,
    leftovers: list[int],
    window: timedelta,
    result: Matching,
) -> None:
    """Pair id-less attempts with leftover rows where the pairing is unambiguous both ways."""
    fits = {a.id: [n for n in leftovers if _fits(a, log.rows[n], window)] for a in idless}
    used: set[int] = set()
    for attempt in idless:
        candidates = fits[attempt.id]
        sole = len(candidates) == 1
        if sole and sum(candidates[0] in f for f in fits.values()) == 1:
            row = log.rows[candidates[0]]
            used.add(candidates[0])
            result.verdicts.append(
                Verdict(
                    attempt=attempt,
                    status=ChargeStatus.CHARGED,
                    usd=row.usd,
                    how="time",
                    rows=(row,),
                )
            )
        else:
            result.undecided.append(attempt)
    result.unmatched_rows = [log.rows[n] for n in leftovers if n not in used]
