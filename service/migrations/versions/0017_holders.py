"""holders: the reward page (/r/<token>) and online exchange of a universal card

A redemption keeps the sha256 of its page's token (unique) and when its code was first shown there;
exchanges and their records name their channel (partner desk or online); a card remembers its expiry
reminder; partners and products carry what the page shows, and the catalog's logos are stored by
content hash; what holders did on the page, the one-time codes of online exchanges and the SMS that
are not the reward itself (one-time codes, certificates, reminders) get tables of their own.

Rewards issued before this revision have no token (reward_url is null for them).

Revision ID: 0017_holders
Revises: 0019_supervision
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0017_holders"
down_revision = "0019_supervision"
branch_labels = None
depends_on = None


def upgrade() -> None:
    tz = sa.DateTime(timezone=True)
    op.add_column("redemptions", sa.Column("link_hash", sa.LargeBinary(), nullable=True))
    op.add_column("redemptions", sa.Column("revealed_at", tz, nullable=True))
    op.create_index("uq_redemptions_link_hash", "redemptions", ["link_hash"], unique=True)
    op.add_column("cards", sa.Column("reminded_at", tz, nullable=True))
    op.add_column("exchanges", sa.Column("channel", sa.String(8), server_default="partner", nullable=False))
    op.create_check_constraint(op.f("ck_exchanges_channel"), "exchanges", "channel IN ('partner', 'online')")
    op.add_column("reconciliation_records", sa.Column("channel", sa.String(8), nullable=True))
    # Records are append-only: the exchange records written before this revision keep NULL, which
    # readers take as `partner` (the only channel there was).
    op.add_column("partners", sa.Column("page", postgresql.JSONB(), nullable=True))
    op.add_column("products", sa.Column("page", postgresql.JSONB(), nullable=True))
    op.add_column(
        "programs",
        sa.Column("expiry_reminder", sa.Boolean(), server_default=sa.text("false"), nullable=False),
    )
    op.create_table(
        "catalog_assets",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("content_type", sa.String(32), nullable=False),
        sa.Column("content", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", tz, server_default=sa.func.now(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_catalog_assets")),
    )
    op.create_table(
        "holder_events",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("redemption_id", sa.UUID(), nullable=False),
        sa.Column("event", sa.String(24), nullable=False),
        sa.Column("exchange_id", sa.UUID(), nullable=True),
        sa.Column("sku", sa.String(64), nullable=True),
        sa.Column("at", tz, nullable=False),
        sa.CheckConstraint(
            "event IN ('code_shown', 'certificate_shown', 'otp_sent', 'otp_wrong', 'exchanged')",
            name=op.f("ck_holder_events_event"),
        ),
        sa.ForeignKeyConstraint(
            ["redemption_id"], ["redemptions.id"], name=op.f("fk_holder_events_redemption_id_redemptions")
        ),
        sa.ForeignKeyConstraint(
            ["exchange_id"], ["exchanges.id"], name=op.f("fk_holder_events_exchange_id_exchanges")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_holder_events")),
    )
    op.create_index("ix_holder_events_redemption", "holder_events", ["redemption_id", "at"])
    op.create_table(
        "holder_otps",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("card_id", sa.BigInteger(), nullable=False),
        sa.Column("product_id", sa.Integer(), nullable=False),
        sa.Column("amount_minor", sa.BigInteger(), nullable=False),
        sa.Column("code_hash", sa.LargeBinary(), nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("created_at", tz, nullable=False),
        sa.Column("expires_at", tz, nullable=False),
        sa.Column("used_at", tz, nullable=True),
        sa.Column("exchange_id", sa.UUID(), nullable=True),
        sa.ForeignKeyConstraint(["card_id"], ["cards.id"], name=op.f("fk_holder_otps_card_id_cards")),
        sa.ForeignKeyConstraint(
            ["product_id"], ["products.id"], name=op.f("fk_holder_otps_product_id_products")
        ),
        sa.ForeignKeyConstraint(
            ["exchange_id"], ["exchanges.id"], name=op.f("fk_holder_otps_exchange_id_exchanges")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_holder_otps")),
    )
    op.create_index("ix_holder_otps_card", "holder_otps", ["card_id", "created_at"])
    op.create_table(
        "sms_notices",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("redemption_id", sa.UUID(), nullable=False),
        sa.Column("program_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("bulk", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("msisdn", sa.String(16), nullable=False),
        sa.Column("sender", sa.String(11), nullable=False),
        sa.Column("locale", sa.String(2), nullable=False),
        sa.Column("text_enc", sa.LargeBinary(), nullable=False),
        sa.Column("key_id", sa.String(16), nullable=True),
        sa.Column("status", sa.String(16), server_default="pending", nullable=False),
        sa.Column("provider", sa.String(16), nullable=True),
        sa.Column(
            "provider_message_ids", postgresql.ARRAY(sa.String(64)), server_default="{}", nullable=False
        ),
        sa.Column("encoding", sa.String(8), nullable=True),
        sa.Column("segments", sa.Integer(), nullable=True),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("deadline_at", tz, nullable=False),
        sa.Column("sent_at", tz, nullable=True),
        sa.Column("created_at", tz, server_default=sa.func.now(), nullable=False),
        sa.Column("updated_at", tz, server_default=sa.func.now(), nullable=False),
        sa.CheckConstraint("kind IN ('otp', 'certificate', 'reminder')", name=op.f("ck_sms_notices_kind")),
        sa.CheckConstraint(
            "status IN ('pending', 'submitting', 'sent', 'delivered', 'failed')",
            name=op.f("ck_sms_notices_status"),
        ),
        sa.ForeignKeyConstraint(
            ["redemption_id"], ["redemptions.id"], name=op.f("fk_sms_notices_redemption_id_redemptions")
        ),
        sa.ForeignKeyConstraint(
            ["program_id"], ["programs.id"], name=op.f("fk_sms_notices_program_id_programs")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sms_notices")),
    )
    op.create_index("ix_sms_notices_redemption", "sms_notices", ["redemption_id", "created_at"])
    op.create_index(
        "ix_sms_notices_sent", "sms_notices", ["sent_at"], postgresql_where=sa.text("status = 'sent'")
    )


def downgrade() -> None:
    op.drop_table("sms_notices")
    op.drop_table("holder_otps")
    op.drop_table("holder_events")
    op.drop_table("catalog_assets")
    op.drop_column("programs", "expiry_reminder")
    op.drop_column("products", "page")
    op.drop_column("partners", "page")
    op.drop_column("reconciliation_records", "channel")
    op.drop_constraint(op.f("ck_exchanges_channel"), "exchanges", type_="check")
    op.drop_column("exchanges", "channel")
    op.drop_column("cards", "reminded_at")
    op.drop_index("uq_redemptions_link_hash", table_name="redemptions")
    op.drop_column("redemptions", "revealed_at")
    op.drop_column("redemptions", "link_hash")
