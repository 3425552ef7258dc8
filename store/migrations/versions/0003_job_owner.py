"""0003: the process that runs a job, so a later one can tell that it died.

``jobs.owner_host``, ``jobs.owner_pid`` and ``jobs.owner_started`` (the owner's start time, epoch
seconds; a reused pid has another). Existing rows: NULL (no owner known: never marked
``interrupted``).

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("jobs", sa.Column("owner_host", sa.String(), nullable=True))
    op.add_column("jobs", sa.Column("owner_pid", sa.Integer(), nullable=True))
    op.add_column("jobs", sa.Column("owner_started", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("owner_started")
        batch.drop_column("owner_pid")
        batch.drop_column("owner_host")
