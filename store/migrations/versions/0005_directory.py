"""0005: the identity directory (``store.directory``): SCIM users, groups, nested memberships
and the directory's change counter.

New tables ``directory_users``, ``directory_user_emails``, ``directory_groups``,
``directory_members`` and ``directory_state`` (one row, version 0). Nothing existing changes.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "directory_users",
        sa.Column("id", sa.String(), nullable=False),
        sa.Column("user_name", sa.String(), nullable=False),
        sa.Column("user_name_key", sa.String(), nullable=False),
        sa.Column("external_id", sa.String(), nullable=True),
        sa.Column("display_name", sa.String(), nullable=True),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("resource", sa.String(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("modified_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_directory_users_user_name_key", "directory_users", ["user_name_key"], unique=True)
    op.create_index("ix_directory_users_external_id", "directory_users", ["external_id"], unique=False)
    op.create_table(
        "directory_user_emails",
        sa.Column("user_id", sa.String(), nullable=False),
        sa.Column("email", sa.String(), nullable=False),
        sa.PrimaryKeyConstraint("user_id", "email"),
    )
    op.create_index("ix_directory_user_emails_email", "directory_user_emails", ["email"], unique=False)
    op.create_table(
        "directory_groups",
        sa.Column("id", sa.String(), nullable=False),
        sa.Column("display_name", sa.String(), nullable=False),
        sa.Column("external_id", sa.String(), nullable=True),
        sa.Column("resource", sa.String(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("modified_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_directory_groups_display_name", "directory_groups", ["display_name"], unique=True)
    op.create_index("ix_directory_groups_external_id", "directory_groups", ["external_id"], unique=False)
    op.create_table(
        "directory_members",
        sa.Column("group_id", sa.String(), nullable=False),
        sa.Column("member_id", sa.String(), nullable=False),
        sa.Column("member_type", sa.String(), nullable=False),
        sa.Column("display", sa.String(), nullable=True),
        sa.PrimaryKeyConstraint("group_id", "member_id"),
    )
    op.create_index("ix_directory_members_member", "directory_members", ["member_id"], unique=False)
    op.create_table(
        "directory_state",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.execute("INSERT INTO directory_state (id, version) VALUES (1, 0)")


def downgrade() -> None:
    op.drop_table("directory_state")
    op.drop_index("ix_directory_members_member", table_name="directory_members")
    op.drop_table("directory_members")
    op.drop_index("ix_directory_groups_external_id", table_name="directory_groups")
    op.drop_index("ix_directory_groups_display_name", table_name="directory_groups")
    op.drop_table("directory_groups")
    op.drop_index("ix_directory_user_emails_email", table_name="directory_user_emails")
    op.drop_table("directory_user_emails")
    op.drop_index("ix_directory_users_external_id", table_name="directory_users")
    op.drop_index("ix_directory_users_user_name_key", table_name="directory_users")
    op.drop_table("directory_users")
