"""remote batch leases

A remote batch is driven by one worker at a time, and only for as long as that worker says:

- ``remote_batches.lease_expires``: the end of its driver's lease, set from the driver's own
  ``--lease`` and renewed while it drives. Another worker takes the remote batch over only
  once that time has passed (or its driver stopped, or died on this host); every change a
  driver records names it, so one that was taken over records nothing more.
- ``remote_batches.collect_failures``: how often in a row its status or results could not be
  read for a reason that does not pass. After a few, it is given up as ``uncollected``.
- ``attempts.remote_batch_id`` becomes a foreign key to ``remote_batches.id``.

SQLite cannot add a foreign key to an existing table: Alembic's batch mode copies
``attempts`` into a new table with it (PostgreSQL alters the table in place).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

_FK = "fk_attempts_remote_batch_id_remote_batches"


def upgrade() -> None:
    with op.batch_alter_table("remote_batches") as batch:
        batch.add_column(sa.Column("lease_expires", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(
            sa.Column("collect_failures", sa.Integer(), nullable=False, server_default="0")
        )
    with op.batch_alter_table("attempts") as batch:
        batch.create_foreign_key(_FK, "remote_batches", ["remote_batch_id"], ["id"])


def downgrade() -> None:
    with op.batch_alter_table("attempts") as batch:
        batch.drop_constraint(_FK, type_="foreignkey")
    with op.batch_alter_table("remote_batches") as batch:
        batch.drop_column("collect_failures")
        batch.drop_column("lease_expires")
