"""route pace

A route's learned pace (the rate its answers taught: limits from ``x-ratelimit-*`` headers, or
the rate a 429 refused) is kept in its ``route_state`` row with when it was learned, so the next
run and every other worker start from it.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("route_state") as batch:
        batch.add_column(sa.Column("pace", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("pace_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("route_state") as batch:
        batch.drop_column("pace_at")
        batch.drop_column("pace")
