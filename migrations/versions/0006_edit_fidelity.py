"""edit fidelity

An edit's output keeps the score of how much of its first source survives (0-1) and the flag
that score earned (``ok``, ``ignored_source``, ``unchanged``), once an export or a comparison
has scored it: ``status`` counts the flagged ones and a re-export does not score again. Both
are null on generations and on edits not scored yet.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("outputs") as batch:
        batch.add_column(sa.Column("edit_fidelity", sa.Float(), nullable=True))
        batch.add_column(sa.Column("edit_flag", sa.String(length=16), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("outputs") as batch:
        batch.drop_column("edit_flag")
        batch.drop_column("edit_fidelity")
