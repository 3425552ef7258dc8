"""0004: the connector engine's tables (``store.connectors``).

New tables ``connector_sources`` (the connector, config and sync intervals of a source of kind
``connector``), ``connector_streams`` (checkpoint, run state, counters and SQLite lease per
source and stream) and ``unmapped_identities`` (identities the identity map could not resolve,
per source). No existing row changes.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "connector_sources",
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("connector", sa.String(), nullable=False),
        sa.Column("config", sa.String(), nullable=False),
        sa.Column("content_interval_s", sa.Integer(), nullable=False),
        sa.Column("permission_interval_s", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    op.create_table(
        "connector_streams",
        sa.Column("source", sa.String(), nullable=False),
        sa.Column("stream", sa.String(), nullable=False),
        sa.Column("checkpoint", sa.String(), nullable=True),
        sa.Column("checkpoint_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_started", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_finished", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_ok", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_outcome", sa.String(), nullable=True),
        sa.Column("last_error", sa.String(), nullable=True),
        sa.Column("last_report", sa.String(), nullable=False),
        sa.Column("runs", sa.Integer(), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("consecutive_failures", sa.Integer(), nullable=False),
        sa.Column("missed", sa.Integer(), nullable=False),
        sa.Column("next_due", sa.DateTime(timezone=True), nullable=True),
        sa.Column("lease_owner", sa.String(), nullable=True),
        sa.Column("lease_expires", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("source", "stream"),
    )
    op.create_table(
        "unmapped_identities",
        sa.Column("source", sa.String(), nullable=False),
        sa.Column("namespace", sa.String(), nullable=False),
        sa.Column("kind", sa.String(), nullable=False),
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("first_seen", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen", sa.DateTime(timezone=True), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("source", "namespace", "kind", "name"),
    )


def downgrade() -> None:
    op.drop_table("unmapped_identities")
    op.drop_table("connector_streams")
    op.drop_table("connector_sources")
