"""status indexes

``imagerun status`` counts a batch's attempts, spend, failed attempts, mismatched outputs and
flagged edits exactly, by reading indexes instead of the rows:

- ``ix_attempts_batch_spend`` (batch, charge status, state and the three costs) replaces the
  plain batch index: the spend and exposure sums read it alone, a fraction of the rows' size
  (an attempt row also holds its parameters and usage as JSON).
- ``ix_attempts_not_ok``, partial: the attempts that are not ``ok`` (in flight or failed), by
  batch and outcome. A finished batch's failures are a few index entries, not a scan.
- ``ix_outputs_mismatched`` and ``ix_outputs_edit_flag``, partial: only the outputs that are
  not what was asked, and only the scored edits.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

_NOT_OK = "(outcome IS NULL OR outcome != 'ok')"
_MISMATCHED = "asked IS NOT NULL"
_SCORED = "edit_flag IS NOT NULL"


def _where(condition: str) -> dict[str, sa.TextClause]:
    return {"sqlite_where": sa.text(condition), "postgresql_where": sa.text(condition)}


def upgrade() -> None:
    op.create_index(
        "ix_attempts_batch_spend",
        "attempts",
        ["batch_id", "charge_status", "state", "observed_usd", "expected_usd", "worst_case_usd"],
    )
    op.drop_index("ix_attempts_batch_id", table_name="attempts")
    op.create_index("ix_attempts_not_ok", "attempts", ["batch_id", "outcome"], **_where(_NOT_OK))
    op.create_index("ix_outputs_mismatched", "outputs", ["batch_id"], **_where(_MISMATCHED))
    op.create_index("ix_outputs_edit_flag", "outputs", ["batch_id", "edit_flag"], **_where(_SCORED))


def downgrade() -> None:
    op.drop_index("ix_outputs_edit_flag", table_name="outputs")
    op.drop_index("ix_outputs_mismatched", table_name="outputs")
    op.drop_index("ix_attempts_not_ok", table_name="attempts")
    op.create_index("ix_attempts_batch_id", "attempts", ["batch_id"])
    op.drop_index("ix_attempts_batch_spend", table_name="attempts")
