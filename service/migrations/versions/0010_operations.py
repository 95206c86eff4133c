"""operations: key ids on encrypted rows, the wrapped fingerprint key, per-program webhook secrets,
webhook events beyond redemptions (listing, replay), balance alerts, trace context in the outbox

Revision ID: 0010_operations
Revises: 0006
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

revision = "0010_operations"
down_revision = "0007_staff_console"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Every column added here is nullable (or has a constant default), so none rewrites its table.
    op.add_column("codes", sa.Column("key_id", sa.String(length=16), nullable=True))
    op.add_column("cards", sa.Column("key_id", sa.String(length=16), nullable=True))
    op.create_table(
        "vault_keys",
        sa.Column("purpose", sa.String(length=32), nullable=False),
        sa.Column("key_id", sa.String(length=16), nullable=False),
        sa.Column("key_enc", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("purpose", name=op.f("pk_vault_keys")),
    )
    op.create_table(
        "program_webhook_secrets",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("program_id", sa.Integer(), nullable=False),
        sa.Column("secret_enc", sa.LargeBinary(), nullable=False),
        sa.Column("key_id", sa.String(length=16), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["program_id"], ["programs.id"], name=op.f("fk_program_webhook_secrets_program_id_programs")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_program_webhook_secrets")),
    )
    op.create_index(
        "ix_program_webhook_secrets_program", "program_webhook_secrets", ["program_id", "created_at"]
    )
    op.alter_column("webhook_events", "redemption_id", existing_type=sa.UUID(), nullable=True)
    op.add_column("webhook_events", sa.Column("deliver_from", sa.DateTime(timezone=True), nullable=True))
    op.add_column("webhook_events", sa.Column("replays", sa.Integer(), server_default="0", nullable=False))
    op.create_index("ix_webhook_events_program_created", "webhook_events", ["program_id", "created_at", "id"])
    op.create_index("ix_webhook_events_created", "webhook_events", ["created_at", "id"])
    op.create_index(
        "ix_webhook_events_given_up",
        "webhook_events",
        ["created_at"],
        postgresql_where=sa.text("given_up_at IS NOT NULL AND delivered_at IS NULL"),
    )
    op.create_index("ix_webhook_attempts_event", "webhook_attempts", ["event_id", "attempted_at"])
    op.create_table(
        "balance_alerts",
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("subject", sa.String(length=64), nullable=False),
        sa.Column("period", sa.String(length=7), server_default="", nullable=False),
        sa.Column("low", sa.Boolean(), nullable=False),
        sa.Column("changed_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint("kind IN ('stock', 'budget')", name=op.f("ck_balance_alerts_kind")),
        sa.PrimaryKeyConstraint("kind", "subject", "period", name=op.f("pk_balance_alerts")),
    )
    op.add_column("outbox", sa.Column("trace_parent", sa.String(length=55), nullable=True))


def downgrade() -> None:
    op.drop_column("outbox", "trace_parent")
    op.drop_table("balance_alerts")
    op.drop_index("ix_webhook_attempts_event", table_name="webhook_attempts")
    op.drop_index("ix_webhook_events_given_up", table_name="webhook_events")
    op.drop_index("ix_webhook_events_created", table_name="webhook_events")
    op.drop_index("ix_webhook_events_program_created", table_name="webhook_events")
    op.drop_column("webhook_events", "replays")
    op.drop_column("webhook_events", "deliver_from")
    op.execute(
        "DELETE FROM webhook_attempts a USING webhook_events e"
        " WHERE a.event_id = e.id AND e.redemption_id IS NULL"
    )
    op.execute("DELETE FROM webhook_events WHERE redemption_id IS NULL")
    op.alter_column("webhook_events", "redemption_id", existing_type=sa.UUID(), nullable=False)
    op.drop_index("ix_program_webhook_secrets_program", table_name="program_webhook_secrets")
    op.drop_table("program_webhook_secrets")
    op.drop_table("vault_keys")
    op.drop_column("cards", "key_id")
    op.drop_column("codes", "key_id")
