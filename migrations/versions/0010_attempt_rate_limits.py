"""attempt rate limits

``attempts.rate_limits``: the answer's ``x-ratelimit-{limit,remaining,reset}-*`` headers,
parsed, by resource (``{"requests": {"limit": 500, "remaining": 499, "reset_s": 0.12}}``);
NULL where none came. What the provider said its limit was, kept with the attempt it said it
on, beside the ``retry_after`` it asked for.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("attempts", sa.Column("rate_limits", sa.JSON(none_as_null=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("attempts") as batch:
        batch.drop_column("rate_limits")
