"""Retention (issue 28): the indexes the housekeeping's batches walk, oldest first, and the mark of
the one walk that leaves its rows in place (delivered SMS keep their row, lose their provider ids).

Revision ID: 0022_retention
Revises: 0021_uuid7
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0022_retention"
down_revision = "0021_uuid7"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        "ix_outbox_published",
        "outbox",
        ["published_at"],
        postgresql_where=sa.text("published_at IS NOT NULL"),
    )
    op.create_index(
        "ix_sms_delivered_done",
        "sms_messages",
        ["done_at", "id"],
        postgresql_where=sa.text("status = 'delivered'"),
    )
    op.create_index("ix_sms_provider_messages_sms", "sms_provider_messages", ["sms_message_id"])
    op.create_table(
        "retention_marks",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("row_id", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_retention_marks")),
    )


def downgrade() -> None:
    op.drop_table("retention_marks")
    op.drop_index("ix_sms_provider_messages_sms", "sms_provider_messages")
    op.drop_index("ix_sms_delivered_done", "sms_messages")
    op.drop_index("ix_outbox_published", "outbox")
