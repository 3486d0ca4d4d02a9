"""output mismatch

An image the provider delivered is kept whatever its size or format; where it differs from
what the job asked for, its output row says both (``asked``, ``got``), e.g. ``1024x1024`` and
``96x64``. Both are null for an image that is what was asked for.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("outputs") as batch:
        batch.add_column(sa.Column("asked", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("got", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("outputs") as batch:
        batch.drop_column("got")
        batch.drop_column("asked")
