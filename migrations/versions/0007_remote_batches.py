"""remote batches

OpenAI's Batch API as a route: a table of remote batches (ours and the provider's ids, the
files uploaded and returned, the provider's status and counts, our lifecycle step, when each
was created, submitted, updated and finished) and, on every attempt that is a line of one, a
link to it.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "remote_batches",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("batch_id", sa.String(length=32), nullable=False),
        sa.Column("route", sa.String(length=100), nullable=False),
        sa.Column("endpoint", sa.String(length=100), nullable=False),
        sa.Column("model", sa.String(length=100), nullable=False),
        sa.Column("step", sa.String(length=16), nullable=False),
        sa.Column("remote_id", sa.String(length=200), nullable=True),
        sa.Column("status", sa.String(length=32), nullable=True),
        sa.Column("request_counts", sa.JSON(), nullable=True),
        sa.Column("input_file_id", sa.String(length=200), nullable=True),
        sa.Column("output_file_id", sa.String(length=200), nullable=True),
        sa.Column("error_file_id", sa.String(length=200), nullable=True),
        sa.Column("source_file_ids", sa.JSON(), nullable=False),
        sa.Column("line_count", sa.Integer(), nullable=False),
        sa.Column("bytes", sa.BigInteger(), nullable=False),
        sa.Column("worker_id", sa.String(length=64), nullable=True),
        sa.Column("cancel_requested", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("submitted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["batch_id"], ["batches.id"], name="fk_remote_batches_batch_id_batches"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_remote_batches"),
        sa.UniqueConstraint("remote_id", name="uq_remote_batches_remote_id"),
    )
    op.create_index("ix_remote_batches_batch_id", "remote_batches", ["batch_id"])
    op.create_index("ix_remote_batches_step", "remote_batches", ["step"])
    with op.batch_alter_table("attempts") as batch:
        batch.add_column(sa.Column("remote_batch_id", sa.String(length=32), nullable=True))
        batch.create_index("ix_attempts_remote_batch_id", ["remote_batch_id"])


def downgrade() -> None:
    with op.batch_alter_table("attempts") as batch:
        batch.drop_index("ix_attempts_remote_batch_id")
        batch.drop_column("remote_batch_id")
    op.drop_index("ix_remote_batches_step", table_name="remote_batches")
    op.drop_index("ix_remote_batches_batch_id", table_name="remote_batches")
    op.drop_table("remote_batches")
