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
        sa.ForeignKeyConstraint(
            ["sms_message_id"],
            ["sms_messages.id"],
            name=op.f("fk_sms_provider_messages_sms_message_id_sms_messages"),
        ),
        sa.PrimaryKeyConstraint(
            "provider", "provider_message_id", "sms_message_id", name=op.f("pk_sms_provider_messages")
        ),
    )
    # Kept by the database from sms_messages.provider_message_ids, whoever writes them: during a
    # rolling upgrade, workers of the previous release record `sent` without knowing this table.
    op.execute("""
        CREATE FUNCTION sms_provider_messages_sync() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            INSERT INTO sms_provider_messages (provider, provider_message_id, sms_message_id)
            SELECT NEW.provider, p.id, NEW.id FROM unnest(NEW.provider_message_ids) AS p(id)
            ON CONFLICT DO NOTHING;
            RETURN NULL;
        END $$""")
    op.execute(
        "CREATE TRIGGER sms_provider_messages_sync AFTER INSERT OR UPDATE OF provider_message_ids, provider"
        " ON sms_messages FOR EACH ROW"
        " WHEN (NEW.provider IS NOT NULL AND cardinality(NEW.provider_message_ids) > 0)"
        " EXECUTE FUNCTION sms_provider_messages_sync()"
    )
    op.execute(
        "INSERT INTO sms_provider_messages (provider, provider_message_id, sms_message_id)"
        " SELECT DISTINCT m.provider, p.id, m.id FROM sms_messages m, unnest(m.provider_message_ids) AS p(id)"
        " WHERE m.provider IS NOT NULL"
    )
    op.drop_index("ix_sms_provider_ids", table_name="sms_messages", postgresql_using="gin")


def downgrade() -> None:
    op.execute("DROP TRIGGER sms_provider_messages_sync ON sms_messages")
    op.execute("DROP FUNCTION sms_provider_messages_sync()")
    op.create_index(
        "ix_sms_provider_ids", "sms_messages", ["provider_message_ids"], unique=False, postgresql_using="gin"
    )
    op.drop_table("sms_provider_messages")
