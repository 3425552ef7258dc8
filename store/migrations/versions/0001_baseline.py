"""0001 baseline: the catalog of Clearance 0.1.0, the last release made with ``create_all``.

A 0.1.0 catalog already holds these tables (``queue`` only once a queue had been used), so each
table is created only when it is missing: upgrading a 0.1.0 catalog adds what it lacks and keeps
every row; a new database gets all of them. Frozen: later changes are later revisions.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def _missing(table: str) -> bool:
    return not sa.inspect(op.get_bind()).has_table(table)


def upgrade() -> None:
    if _missing("audit_documents"):
        op.create_table(
            "audit_documents",
            sa.Column("id", sa.Integer(), nullable=False),
            sa.Column("event_id", sa.Integer(), nullable=False),
            sa.Column("at", sa.DateTime(timezone=True), nullable=False),
            sa.Column("tenant", sa.String(), nullable=False),
            sa.Column("source", sa.String(), nullable=False),
            sa.Column("doc_id", sa.String(), nullable=False),
            sa.Column("version", sa.String(), nullable=False),
            sa.Column("acl", sa.String(), nullable=False),
            sa.Column("chunks", sa.Integer(), nullable=False),
            sa.PrimaryKeyConstraint("id"),
        )
        op.create_index("ix_audit_documents_doc", "audit_documents", ["tenant", "source", "doc_id", "at"], unique=False)
        op.create_index("ix_audit_documents_event_id", "audit_documents", ["event_id"], unique=False)
    if _missing("audit_events"):
        op.create_table(
            "audit_events",
            sa.Column("id", sa.Integer(), nullable=False),
            sa.Column("at", sa.DateTime(timezone=True), nullable=False),
            sa.Column("request_id", sa.String(), nullable=False),
            sa.Column("action", sa.String(), nullable=False),
            sa.Column("status", sa.Integer(), nullable=False),
            sa.Column("issuer", sa.String(), nullable=False),
            sa.Column("subject", sa.String(), nullable=False),
            sa.Column("tenant", sa.String(), nullable=False),
            sa.Column("principals_hash", sa.String(), nullable=False),
            sa.Column("query_hash", sa.String(), nullable=True),
            sa.Column("query_text", sa.String(), nullable=True),
            sa.Column("params", sa.String(), nullable=False),
            sa.Column("chunks", sa.String(), nullable=False),
            sa.Column("acl_version", sa.String(), nullable=True),
            sa.Column("latency_ms", sa.Float(), nullable=False),
            sa.Column("degraded", sa.Boolean(), nullable=False),
            sa.Column("stale_sources", sa.String(), nullable=False),
            sa.PrimaryKeyConstraint("id"),
        )
        op.create_index("ix_audit_events_at", "audit_events", ["at"], unique=False)
    if _missing("clearance_meta"):
        op.create_table(
            "clearance_meta",
            sa.Column("key", sa.String(), nullable=False),
            sa.Column("value", sa.String(), nullable=False),
            sa.PrimaryKeyConstraint("key"),
        )
    if _missing("documents"):
        op.create_table(
            "documents",
            sa.Column("key", sa.String(), nullable=False),
            sa.Column("tenant", sa.String(), nullable=False),
            sa.Column("source", sa.String(), nullable=False),
            sa.Column("doc_id", sa.String(), nullable=False),
            sa.Column("uri", sa.String(), nullable=False),
            sa.Column("title", sa.String(), nullable=False),
            sa.Column("version", sa.String(), nullable=False),
            sa.Column("content_hash", sa.String(), nullable=False),
            sa.Column("acl_allow", sa.String(), nullable=False),
            sa.Column("acl_deny", sa.String(), nullable=False),
            sa.Column("modified_at", sa.DateTime(timezone=True), nullable=False),
            sa.Column("ingested_at", sa.DateTime(timezone=True), nullable=False),
            sa.Column("state", sa.String(), nullable=False),
            sa.Column("point_ids", sa.String(), nullable=False),
            sa.Column("pending_ids", sa.String(), nullable=False),
            sa.Column("error_code", sa.String(), nullable=True),
            sa.Column("error_message", sa.String(), nullable=True),
            sa.PrimaryKeyConstraint("key"),
        )
        op.create_index("ix_documents_source", "documents", ["source"], unique=False)
        op.create_index("ix_documents_tenant", "documents", ["tenant"], unique=False)
    if _missing("job_items"):
        op.create_table(
            "job_items",
            sa.Column("id", sa.Integer(), nullable=False),
            sa.Column("job_id", sa.Integer(), nullable=False),
            sa.Column("doc_key", sa.String(), nullable=False),
            sa.Column("outcome", sa.String(), nullable=False),
            sa.Column("chunks", sa.Integer(), nullable=False),
            sa.Column("duration_ms", sa.Float(), nullable=False),
            sa.Column("error_code", sa.String(), nullable=True),
            sa.Column("error_message", sa.String(), nullable=True),
            sa.PrimaryKeyConstraint("id"),
        )
        op.create_index("ix_job_items_job_id", "job_items", ["job_id"], unique=False)
    if _missing("jobs"):
        op.create_table(
            "jobs",
            sa.Column("id", sa.Integer(), nullable=False),
            sa.Column("source", sa.String(), nullable=False),
            sa.Column("kind", sa.String(), nullable=False),
            sa.Column("state", sa.String(), nullable=False),
            sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
            sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
            sa.Column("added", sa.Integer(), nullable=False),
            sa.Column("updated", sa.Integer(), nullable=False),
            sa.Column("acl_updated", sa.Integer(), nullable=False),
            sa.Column("unchanged", sa.Integer(), nullable=False),
            sa.Column("deleted", sa.Integer(), nullable=False),
            sa.Column("failed", sa.Integer(), nullable=False),
            sa.Column("chunks", sa.Integer(), nullable=False),
            sa.PrimaryKeyConstraint("id"),
        )
    if _missing("queue"):
        op.create_table(
            "queue",
            sa.Column("id", sa.Integer(), nullable=False),
            sa.Column("job_id", sa.Integer(), nullable=False),
            sa.Column("op", sa.String(), nullable=False),
            sa.Column("source", sa.String(), nullable=False),
            sa.Column("doc_id", sa.String(), nullable=False),
            sa.Column("path", sa.String(), nullable=False),
            sa.Column("acl_allow", sa.String(), nullable=False),
            sa.Column("acl_deny", sa.String(), nullable=False),
            sa.Column("state", sa.String(), nullable=False),
            sa.Column("lease_owner", sa.String(), nullable=True),
            sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True),
            sa.Column("attempts", sa.Integer(), nullable=False),
            sa.Column("outcome", sa.String(), nullable=True),
            sa.Column("error_code", sa.String(), nullable=True),
            sa.Column("error_message", sa.String(), nullable=True),
            sa.Column("enqueued_at", sa.DateTime(timezone=True), nullable=False),
            sa.PrimaryKeyConstraint("id"),
        )
        op.create_index("ix_queue_job_id", "queue", ["job_id"], unique=False)
        op.create_index("ix_queue_state", "queue", ["state"], unique=False)
    if _missing("sources"):
        op.create_table(
            "sources",
            sa.Column("name", sa.String(), nullable=False),
            sa.Column("kind", sa.String(), nullable=False),
            sa.Column("root", sa.String(), nullable=True),
            sa.Column("last_attempt_at", sa.DateTime(timezone=True), nullable=True),
            sa.Column("last_success_at", sa.DateTime(timezone=True), nullable=True),
            sa.Column("last_error", sa.String(), nullable=True),
            sa.Column("last_job_id", sa.Integer(), nullable=True),
            sa.PrimaryKeyConstraint("name"),
        )


def downgrade() -> None:
    raise NotImplementedError("0001 is the baseline: restore a backup instead of downgrading past it")
