"""Matching attempts with call-log rows: by id, by client id, by time; and when a missing row
proves nothing was charged."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from runner.billing.endpoints import (
    AccountEndpoints,
    BillingUnavailable,
    CallLog,
    LogRow,
    load_call_log,
    parse_rows,
)
from runner.billing.matching import match_log
from runner.config import load_settings
from runner.models import ChargeEvidence, ChargeStatus, Outcome
from runner.store.charges import BilledAttempt

T0 = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
ENDPOINTS = AccountEndpoints.for_route(load_settings(environ={}).catalog.get("sandbox-laozhang"))


def attempt(
    name: str,
    *,
    at: float = 0.0,
    took: float = 2.0,
    gateway: str | None = None,
    outcome: Outcome = Outcome.OK,
) -> BilledAttempt:
    return BilledAttempt(
        id=name,
        batch_id="b1",
        route="sandbox-laozhang",
        model="gpt-image-2",
        outcome=outcome,
        http_status=None,
        error_message=None,
        provider_request_id=None,
        gateway_request_id=gateway,
        started_at=T0 + timedelta(seconds=at),
        finished_at=T0 + timedelta(seconds=at + took),
        worst_case_usd=0.03,
        expected_usd=0.03,
        charge_status=ChargeStatus.UNKNOWN,
        charge_evidence=ChargeEvidence.POLICY,
        observed_usd=None,
    )


def row(
    *, at: float, quota: int = 15_000, request_id: str | None = None, client: str | None = None
) -> LogRow:
    return LogRow(
        request_id=request_id,
        client_request_id=client,
        created_at=T0 + timedelta(seconds=at),
        quota=quota,
        usd=quota / 500_000,
        model="gpt-image-2",
    )


def log(*rows: LogRow, until: float = 600.0, complete: bool = True) -> CallLog:
    return CallLog(
        rows=list(rows),
        complete=complete,
        covers_from=None if complete else min(r.created_at for r in rows),
        covers_to=T0 + timedelta(seconds=until),
        source="test",
    )


def verdicts(found: list[BilledAttempt], the_log: CallLog, settle: float = 60.0) -> dict[str, str]:
    matching = match_log(found, the_log, settle=settle)
    out = {v.attempt.id: f"{v.status.value}/{v.how}/{v.usd}" for v in matching.verdicts}
    out.update({a.id: "undecided" for a in matching.undecided})
    return out


def test_rows_are_joined_by_gateway_id_or_client_id_and_summed() -> None:
    fee = row(at=2, quota=25_000, request_id="g1")  # a violation fee: a second row, same id
    the_log = log(row(at=1, request_id="g1"), fee, row(at=9, client="ir-b"), row(at=20))
    found = verdicts([attempt("ir-a", gateway="g1"), attempt("ir-b", at=8)], the_log)
    assert found == {"ir-a": "charged/request_id/0.08", "ir-b": "charged/client_request_id/0.03"}


def test_a_missing_row_means_not_charged_only_inside_the_settled_covered_span() -> None:
    the_log = log(row(at=1, request_id="g-other"), until=100.0)
    found = verdicts(
        [
            attempt("settled", at=10, gateway="g1"),
            attempt("too-recent", at=50, gateway="g2"),  # ends at 52; 52 + 60 > 100
        ],
        the_log,
    )
    assert found == {"settled": "not_charged/absent/0.0", "too-recent": "undecided"}


def test_a_truncated_log_proves_nothing_before_its_oldest_row() -> None:
    the_log = log(row(at=30, request_id="g-x"), row(at=40, request_id="g-y"), complete=False)
    found = verdicts(
        [attempt("old", at=10, gateway="g1"), attempt("new", at=35, gateway="g2")], the_log
    )
    assert found == {"old": "undecided", "new": "not_charged/absent/0.0"}


def test_an_id_less_attempt_is_matched_by_time_only_when_unambiguous() -> None:
    lone = log(row(at=105, request_id="g-late"))
    timeout = attempt("timeout", at=100, took=5, outcome=Outcome.TIMEOUT)
    assert verdicts([timeout], lone) == {"timeout": "charged/time/0.03"}

    two = log(row(at=105, request_id="g-1"), row(at=106, request_id="g-2"))
    assert verdicts([timeout], two) == {"timeout": "undecided"}
    # Without a row and without ids the log cannot speak for it (it names no client ids).
    assert verdicts([timeout], log(row(at=500, request_id="g-far"))) == {"timeout": "undecided"}


def test_rows_nobody_claims_are_reported() -> None:
    matching = match_log(
        [attempt("ir-a", gateway="g1")], log(row(at=1, request_id="g1"), row(at=3)), settle=0
    )
    assert [r.created_at for r in matching.unmatched_rows] == [T0 + timedelta(seconds=3)]


def test_api_rows_keep_consume_rows_and_read_client_ids_from_other() -> None:
    raw = [
        {
            "id": 7,
            "type": 2,
            "created_at": 1_790_000_000,
            "quota": 15000,
            "request_id": "g1",
            "model_name": "gpt-image-2",
            "other": json.dumps({"client_request_id": "ir-1"}),
        },
        {"id": 8, "type": 5, "created_at": 1_790_000_001, "quota": 0, "request_id": "g2"},
    ]
    [parsed] = parse_rows(raw, ENDPOINTS)
    assert (parsed.request_id, parsed.client_request_id, parsed.usd) == ("g1", "ir-1", 0.03)


def test_exported_logs_load_from_csv_and_json(tmp_path: Path) -> None:
    csv_file = tmp_path / "log.csv"
    csv_file.write_text(
        "created_at,type,request_id,quota,model_name,other\n"
        '2026-11-21T12:00:01+00:00,2,g1,15000,gpt-image-2,"{""client_request_id"":""ir-1""}"\n'
        "2026-11-21T12:00:09,2,g2,30000,gpt-image-2,\n",
        "utf-8",
    )
    from_csv = load_call_log(csv_file, ENDPOINTS)
    assert [r.usd for r in from_csv.rows] == [0.03, 0.06]
    assert from_csv.covers_from == T0 + timedelta(seconds=1)
    assert from_csv.covers_to == T0 + timedelta(seconds=9)

    json_file = tmp_path / "log.json"
    json_file.write_text(json.dumps({"success": True, "data": [{"created_at": 1, "quota": 5}]}))
    assert [r.quota for r in load_call_log(json_file, ENDPOINTS).rows] == [5]

    bad = tmp_path / "log.txt"
    bad.write_text("not a log")
    with pytest.raises(BillingUnavailable, match=r"log\.txt"):
        load_call_log(bad, ENDPOINTS)
