"""0002: the source registry, the write audit trail, and pushed metadata on documents.

New tables ``source_registry`` and ``write_events``; ``documents.metadata_json`` (existing rows:
``{}``, no metadata) and ``jobs.metadata_updated`` (existing rows: 0).

Revision ID: 0002
Revises: 0001
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
        "source_registry",
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("tenant", sa.String(), nullable=False),
        sa.Column("kind", sa.String(), nullable=False),
        sa.Column("root", sa.String(), nullable=True),
        sa.Column("writers", sa.String(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    op.create_table(
        "write_events",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("request_id", sa.String(), nullable=False),
        sa.Column("tenant", sa.String(), nullable=False),
        sa.Column("issuer", sa.String(), nullable=False),
        sa.Column("subject", sa.String(), nullable=False),
        sa.Column("principals_hash", sa.String(), nullable=False),
        sa.Column("action", sa.String(), nullable=False),
        sa.Column("outcome", sa.String(), nullable=False),
        sa.Column("status", sa.Integer(), nullable=False),
        sa.Column("code", sa.String(), nullable=True),
        sa.Column("source", sa.String(), nullable=False),
        sa.Column("doc_id", sa.String(), nullable=True),
        sa.Column("job_id", sa.Integer(), nullable=True),
        sa.Column("acl_before", sa.String(), nullable=True),
        sa.Column("acl_after", sa.String(), nullable=True),
        sa.Column("acl_before_fp", sa.String(), nullable=True),
        sa.Column("acl_after_fp", sa.String(), nullable=True),
        sa.Column("content_before", sa.String(), nullable=True),
        sa.Column("content_after", sa.String(), nullable=True),
        sa.Column("detail", sa.String(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_write_events_at", "write_events", ["at"], unique=False)
    op.create_index("ix_write_events_doc", "write_events", ["tenant", "source", "doc_id", "at"], unique=False)
    # server defaults fill the rows that exist; the models always write the column themselves
    op.add_column("documents", sa.Column("metadata_json", sa.String(), nullable=False, server_default="{}"))
    op.add_column("jobs", sa.Column("metadata_updated", sa.Integer(), nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("metadata_updated")
    with op.batch_alter_table("documents") as batch:
        batch.drop_column("metadata_json")
    op.drop_index("ix_write_events_doc", table_name="write_events")
    op.drop_index("ix_write_events_at", table_name="write_events")
    op.drop_table("write_events")
    op.drop_table("source_registry")
