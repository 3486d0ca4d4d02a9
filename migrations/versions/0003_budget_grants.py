"""budget grants

A batch's budget is shared by every ``imagerun run`` process working on it: each process
spends only what it was granted here, and a grant is given only out of what the budget has
left after everything spent and every live process's unspent grant. A grant lapses unless its
holder renews it (``expires_at``).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-21
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "budget_grants",
        sa.Column("batch_id", sa.String(length=32), nullable=False),
        sa.Column("worker_id", sa.String(length=64), nullable=False),
        sa.Column("granted_usd", sa.Float(), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["batch_id"], ["batches.id"], name=op.f("fk_budget_grants_batch_id_batches")
        ),
        sa.PrimaryKeyConstraint("batch_id", "worker_id", name=op.f("pk_budget_grants")),
    )


def downgrade() -> None:
    op.drop_table("budget_grants")
