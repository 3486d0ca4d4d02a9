"""Table definitions (SQLAlchemy Core). Alembic owns the schema; these mirror the migrations.

Kept inside the store package: nothing outside ``runner.store`` touches tables directly.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.types import TypeDecorator

#: The Alembic revision these tables mirror (the chain's head; a test holds the two together).
#: Opening a database at this revision needs no Alembic at all, which keeps quick commands quick.
SCHEMA_REVISION = "0010"


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every dialect.

    SQLite has no timezone type and hands back naive values; PostgreSQL stores ``timestamptz``.
    Either way callers only ever see aware UTC datetimes.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def bind_processor(self, dialect: Dialect) -> Any:
        """On SQLite, the text SQLAlchemy's ``DATETIME`` writes (``2026-01-02 03:04:05.000006``)
        made in one step: the ledger binds several datetimes per job, and the composed
        processor (ours, then the dialect's ``%``-formatting) cost twice as much.

        A value already in UTC (``utcnow()``, what the engine binds) is not converted, and
        the last value's text is kept: a finishing write binds the same moment as the
        attempt's end, its job's last update and its job's end."""
        if dialect.name != "sqlite":
            return super().bind_processor(dialect)
        # One tuple, replaced whole: the event loop and the writer thread may both bind.
        last: tuple[datetime | None, str | None] = (None, None)

        def process(value: datetime | None) -> str | None:
            nonlocal last
            if value is None:
                return None
            seen, text = last
            if value is seen:
                return text
            if value.tzinfo is UTC:  # the text without its "+00:00" (cheaper than replace())
                text = value.isoformat(" ", "microseconds")[:-6]
            else:
                naive = self.process_bind_param(value, dialect)
                assert naive is not None
                text = naive.isoformat(" ", "microseconds")
            last = (value, text)
            return text

        return process

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if not isinstance(value, datetime):
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


#: The conditions of the partial indexes, as SQL. SQLite reads a partial index only for a
#: query whose WHERE has the index's condition among its AND-ed terms: a query meant to use
#: one adds the condition as it is here (in parentheses, so that it ANDs safely).
NOT_OK = "(outcome IS NULL OR outcome != 'ok')"
MISMATCHED = "asked IS NOT NULL"
SCORED = "edit_flag IS NOT NULL"


def _partial(name: str, *columns: str, where: str) -> Index:
    """A partial index, created with its condition ``where`` by the migration on both dialects.

    The condition is kept in ``info``, not as ``sqlite_where`` / ``postgresql_where``: to
    check such an argument SQLAlchemy imports that dialect's module, and importing the store
    would load PostgreSQL's dialect on SQLite too (a tenth of a second of ``imagerun status``).
    Nothing builds the schema from these tables (Alembic does); a migration test checks that
    the database's index has a condition.
    """
    return Index(name, *columns, info={"where": where})


#: Autoincrement 64-bit keys on PostgreSQL; SQLite only autoincrements ``INTEGER PRIMARY KEY``.
BigID = BigInteger().with_variant(Integer(), "sqlite")

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

batches = Table(
    "batches",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("name", String(200), nullable=False, unique=True),
    Column("route", String(100), nullable=False),
    Column("manifest", Text, nullable=False),
    Column("manifest_sha256", String(64), nullable=False),
    Column("job_count", Integer, nullable=False, default=0),
    Column("budget_usd", Float, nullable=True),
    Column("route_snapshot", JSON, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
)

jobs = Table(
    "jobs",
    metadata,
    Column("id", BigID, primary_key=True, autoincrement=True),
    Column("batch_id", String(32), ForeignKey("batches.id"), nullable=False),
    Column("key", String(64), nullable=False, unique=True),
    Column("ext_id", String(200), nullable=False),
    Column("line", Integer, nullable=False),
    Column("prompt", Text, nullable=False),
    Column("params", JSON, nullable=False),
    Column("images", JSON, nullable=False),
    Column("mask", JSON, nullable=True),
    Column("meta", JSON, nullable=False),
    Column("state", String(16), nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_at", UTCDateTime, nullable=True),
    Column("lease_owner", String(64), nullable=True),
    Column("lease_expires", UTCDateTime, nullable=True),
    Column("last_outcome", String(32), nullable=True),
    Column("last_error", Text, nullable=True),
    Column("first_attempt_at", UTCDateTime, nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("finished_at", UTCDateTime, nullable=True),
    # Not unique: ids default to line numbers, which move when a manifest is edited.
    Index(None, "batch_id", "ext_id"),
    Index(None, "state", "id"),
    Index(None, "batch_id", "state"),
    Index(None, "lease_expires"),
)

attempts = Table(
    "attempts",
    metadata,
    # Our client request id, sent as X-Client-Request-Id: the join key with provider logs.
    Column("id", String(64), primary_key=True),
    Column("job_id", BigID, ForeignKey("jobs.id"), nullable=False, index=True),
    Column("batch_id", String(32), nullable=False),
    Column("number", Integer, nullable=False),
    Column("worker_id", String(64), nullable=True),
    Column("route", String(100), nullable=False),
    Column("provider", String(50), nullable=False),
    Column("shape", String(16), nullable=False),
    Column("endpoint", String(200), nullable=False),
    Column("model", String(100), nullable=False),
    Column("billing_unit", String(16), nullable=False),
    Column("state", String(16), nullable=False),
    Column("outcome", String(32), nullable=True),
    Column("http_status", Integer, nullable=True),
    Column("provider_request_id", String(200), nullable=True, index=True),
    Column("gateway_request_id", String(200), nullable=True, index=True),
    Column("error_type", String(100), nullable=True),
    Column("error_code", String(100), nullable=True),
    Column("error_message", Text, nullable=True),
    Column("retry_after", Float, nullable=True),
    #: The answer's ``x-ratelimit-*`` headers by resource (NULL: none came).
    Column("rate_limits", JSON(none_as_null=True), nullable=True),
    Column("started_at", UTCDateTime, nullable=False),
    Column("finished_at", UTCDateTime, nullable=True),
    Column("latency_ms", Float, nullable=True),
    Column("usage", JSON, nullable=True),
    Column("params", JSON, nullable=False),
    Column("images_returned", Integer, nullable=True),
    Column("worst_case_usd", Float, nullable=False, default=0.0),
    Column("expected_usd", Float, nullable=True),
    Column("charge_status", String(16), nullable=False),
    Column("charge_evidence", String(16), nullable=False),
    Column("observed_usd", Float, nullable=True),
    #: The remote batch (``remote_batches.id``) whose line this attempt is, if any.
    Column(
        "remote_batch_id", String(32), ForeignKey("remote_batches.id"), nullable=True, index=True
    ),
    Index(None, "state"),
    # A batch's spend and exposure are summed from this index alone (see ``reports``).
    Index(
        "ix_attempts_batch_spend",
        "batch_id",
        "charge_status",
        "state",
        "observed_usd",
        "expected_usd",
        "worst_case_usd",
    ),
    # The attempts in flight or failed: few in a finished batch, counted without a scan.
    _partial("ix_attempts_not_ok", "batch_id", "outcome", where=NOT_OK),
)

outputs = Table(
    "outputs",
    metadata,
    Column("id", BigID, primary_key=True, autoincrement=True),
    Column("job_id", BigID, ForeignKey("jobs.id"), nullable=False),
    Column("batch_id", String(32), nullable=False, index=True),
    Column("attempt_id", String(64), nullable=False),
    Column("k", Integer, nullable=False),
    Column("path", Text, nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("width", Integer, nullable=False),
    Column("height", Integer, nullable=False),
    Column("format", String(16), nullable=False),
    Column("bytes", Integer, nullable=False),
    Column("worker_id", String(64), nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    #: What the job asked for and what came, where they differ (both null when they agree).
    Column("asked", String(64), nullable=True),
    Column("got", String(64), nullable=True),
    #: An edit's fidelity to its first source and its flag, once an export or compare scored it.
    Column("edit_fidelity", Float, nullable=True),
    Column("edit_flag", String(16), nullable=True),
    UniqueConstraint("job_id", "k"),
    # Partial: only the outputs ``status`` counts apart, so counting them reads no others.
    _partial("ix_outputs_mismatched", "batch_id", where=MISMATCHED),
    _partial("ix_outputs_edit_flag", "batch_id", "edit_flag", where=SCORED),
)

route_state = Table(
    "route_state",
    metadata,
    Column("route", String(100), primary_key=True),
    # Both on the database's clock, in epoch seconds, so workers' clocks need not agree.
    # Shared across worker processes: a 429's Retry-After pauses the route for everyone.
    Column("pause_until", Float, nullable=True),
    # GCRA "theoretical arrival time" of the shared request-rate schedule.
    Column("tat", Float, nullable=False, default=0.0),
    Column("stopped_reason", Text, nullable=True),
    Column("updated_at", UTCDateTime, nullable=False),
    # The pace the route's answers taught (runner.run.pacing.Learned as JSON), and when.
    Column("pace", JSON, nullable=True),
    Column("pace_at", UTCDateTime, nullable=True),
)

workers = Table(
    "workers",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("host", String(200), nullable=False),
    Column("pid", Integer, nullable=False),
    Column("started_at", UTCDateTime, nullable=False),
    Column("heartbeat_at", UTCDateTime, nullable=False),
    Column("stopped_at", UTCDateTime, nullable=True),
)

charge_observations = Table(
    "charge_observations",
    metadata,
    Column("id", BigID, primary_key=True, autoincrement=True),
    Column("route", String(100), nullable=False, index=True),
    Column("outcome", String(32), nullable=False),
    Column("charge_status", String(16), nullable=False),
    Column("evidence", String(16), nullable=False),
    Column("observed_usd", Float, nullable=True),
    Column("attempt_id", String(64), nullable=True),
    Column("detail", JSON, nullable=False),
    Column("observed_at", UTCDateTime, nullable=False),
)

balance_snapshots = Table(
    "balance_snapshots",
    metadata,
    Column("id", BigID, primary_key=True, autoincrement=True),
    Column("route", String(100), nullable=False),
    # Which account was read: the key variable and the balance URL (never the key itself).
    Column("account", String(300), nullable=False),
    Column("used_usd", Float, nullable=False),
    Column("remaining_usd", Float, nullable=True),
    Column("source", String(16), nullable=False),
    Column("detail", JSON, nullable=False),
    Column("taken_at", UTCDateTime, nullable=False),
    Index(None, "account", "taken_at"),
)

budget_grants = Table(
    "budget_grants",
    metadata,
    # How much of a batch's budget one worker (one `imagerun run` process) may spend.
    Column("batch_id", String(32), ForeignKey("batches.id"), primary_key=True),
    Column("worker_id", String(64), primary_key=True),
    Column("granted_usd", Float, nullable=False),
    # Renewed by the holder's heartbeat; a lapsed grant's unspent part goes back.
    Column("expires_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
)

remote_batches = Table(
    "remote_batches",
    metadata,
    # Ours ("rb" + hex); the jobs it holds are leased to "remote:<id>" until it is applied.
    Column("id", String(32), primary_key=True),
    Column("batch_id", String(32), ForeignKey("batches.id"), nullable=False, index=True),
    Column("route", String(100), nullable=False),
    # The provider's endpoint for every line ("/v1/images/generations" or "/v1/images/edits")
    # and the one model the input file may use.
    Column("endpoint", String(100), nullable=False),
    Column("model", String(100), nullable=False),
    # Our lifecycle step (runner.models.RemoteStep): what a restart resumes from.
    Column("step", String(16), nullable=False),
    # The provider's: its batch id, its status and request_counts as last polled.
    Column("remote_id", String(200), nullable=True, unique=True),
    Column("status", String(32), nullable=True),
    Column("request_counts", JSON, nullable=True),
    Column("input_file_id", String(200), nullable=True),
    Column("output_file_id", String(200), nullable=True),
    Column("error_file_id", String(200), nullable=True),
    # Source images uploaded as files for the lines' edits: {"<sha or ref>": "file-…"}.
    Column("source_file_ids", JSON, nullable=False),
    Column("line_count", Integer, nullable=False),
    Column("bytes", BigInteger, nullable=False, default=0),
    # The worker driving it, until ``lease_expires`` (its own lease, renewed while it drives):
    # another takes it over only after that, or once that worker stopped or died on its host.
    Column("worker_id", String(64), nullable=True),
    Column("lease_expires", UTCDateTime, nullable=True),
    # Reads of its status or results that failed in a row for a reason that does not pass.
    Column("collect_failures", Integer, nullable=False, default=0, server_default="0"),
    # `imagerun cancel` asked for it to be cancelled (lines never run are then cancelled).
    Column("cancel_requested", Integer, nullable=False, default=0),
    Column("error", Text, nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("submitted_at", UTCDateTime, nullable=True),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("finished_at", UTCDateTime, nullable=True),
    Index(None, "step"),
)
