"""balance snapshots

Readings of a provider account's balance (``imagerun probe-billing`` and ``imagerun
reconcile`` take them) so a later reconcile can compare the balance delta over a window with
the ledger's total for it.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "balance_snapshots",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("route", sa.String(length=100), nullable=False),
        sa.Column("account", sa.String(length=300), nullable=False),
        sa.Column("used_usd", sa.Float(), nullable=False),
        sa.Column("remaining_usd", sa.Float(), nullable=True),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("detail", sa.JSON(), nullable=False),
        sa.Column("taken_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_balance_snapshots")),
    )
    with op.batch_alter_table("balance_snapshots", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_balance_snapshots_account_taken_at"),
            ["account", "taken_at"],
            unique=False,
        )


def downgrade() -> None:
    with op.batch_alter_table("balance_snapshots", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_balance_snapshots_account_taken_at"))
    op.drop_table("balance_snapshots")
