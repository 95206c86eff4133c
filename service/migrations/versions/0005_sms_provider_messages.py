"""receipts find their SMS through a btree table of provider message ids, not a GIN index

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02
"""
import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "sms_provider_messages",
        sa.Column("provider", sa.String(length=16), nullable=False),
        sa.Column("provider_message_id", sa.String(length=64), nullable=False),
        sa.Column("sms_message_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["sms_message_id"], ["sms_messages.id"],
                                name=op.f("fk_sms_provider_messages_sms_message_id_sms_messages")),
        sa.PrimaryKeyConstraint("provider", "provider_message_id", "sms_message_id",
                                name=op.f("pk_sms_provider_messages")),
    )
    op.execute("INSERT INTO sms_provider_messages (provider, provider_message_id, sms_message_id)"
               " SELECT DISTINCT m.provider, p.id, m.id FROM sms_messages m, unnest(m.provider_message_ids) AS p(id)"
               " WHERE m.provider IS NOT NULL")
    op.drop_index("ix_sms_provider_ids", table_name="sms_messages", postgresql_using="gin")


def downgrade() -> None:
    op.create_index("ix_sms_provider_ids", "sms_messages", ["provider_message_ids"], unique=False,
                    postgresql_using="gin")
    op.drop_table("sms_provider_messages")
