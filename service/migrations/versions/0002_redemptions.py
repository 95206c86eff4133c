"""redemptions, cards, records, idempotency, vat

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23 04:06:21.958622
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "vat_rates",
        sa.Column("schedule", sa.String(length=64), nullable=False),
        sa.Column("effective_from", sa.Date(), nullable=False),
        sa.Column("rate_bp", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("schedule", "effective_from", name=op.f("pk_vat_rates")),
    )
    op.create_table(
        "idempotency_keys",
        sa.Column("api_key_id", sa.Integer(), nullable=False),
        sa.Column("key", sa.String(length=255), nullable=False),
        sa.Column("request_hash", sa.LargeBinary(), nullable=False),
        sa.Column("response_status", sa.Integer(), nullable=True),
        sa.Column("response_body", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["api_key_id"], ["api_keys.id"], name=op.f("fk_idempotency_keys_api_key_id_api_keys")
        ),
        sa.PrimaryKeyConstraint("api_key_id", "key", name=op.f("pk_idempotency_keys")),
    )
    op.create_table(
        "program_budget_usage",
        sa.Column("program_id", sa.Integer(), nullable=False),
        sa.Column("month", sa.Date(), nullable=False),
        sa.Column("spent_minor", sa.BigInteger(), server_default="0", nullable=False),
        sa.ForeignKeyConstraint(
            ["program_id"], ["programs.id"], name=op.f("fk_program_budget_usage_program_id_programs")
        ),
        sa.PrimaryKeyConstraint("program_id", "month", name=op.f("pk_program_budget_usage")),
    )
    op.create_table(
        "cards",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("product_id", sa.Integer(), nullable=False),
        sa.Column("number_fingerprint", sa.LargeBinary(), nullable=False),
        sa.Column("number_enc", sa.LargeBinary(), nullable=False),
        sa.Column("last4", sa.String(length=4), nullable=False),
        sa.Column("pin_enc", sa.LargeBinary(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("nominal_minor", sa.BigInteger(), nullable=False),
        sa.Column("balance_minor", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(length=16), server_default="active", nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("failed_pin_attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("locked_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint(
            "status IN ('active', 'exhausted', 'expired', 'blocked', 'cancelled')",
            name=op.f("ck_cards_status"),
        ),
        sa.CheckConstraint(
            "balance_minor >= 0 AND balance_minor <= nominal_minor", name=op.f("ck_cards_balance_in_range")
        ),
        sa.ForeignKeyConstraint(["product_id"], ["products.id"], name=op.f("fk_cards_product_id_products")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_cards")),
        sa.UniqueConstraint("number_fingerprint", name=op.f("uq_cards_number_fingerprint")),
    )
    op.create_table(
        "redemptions",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("program_id", sa.Integer(), nullable=False),
        sa.Column("tariff_id", sa.Integer(), nullable=False),
        sa.Column("offer_id", sa.Integer(), nullable=False),
        sa.Column("product_id", sa.Integer(), nullable=False),
        sa.Column("external_id", sa.String(length=128), nullable=False),
        sa.Column("msisdn", sa.String(length=16), nullable=False),
        sa.Column("locale", sa.String(length=2), nullable=False),
        sa.Column("points", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("nominal_minor", sa.BigInteger(), nullable=False),
        sa.Column("code_id", sa.BigInteger(), nullable=True),
        sa.Column("card_id", sa.BigInteger(), nullable=True),
        sa.Column("reward_last4", sa.String(length=4), nullable=False),
        sa.Column("reward_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("status", sa.String(length=16), server_default="accepted", nullable=False),
        sa.Column("status_reason", sa.Text(), nullable=True),
        sa.Column("resend_count", sa.Integer(), server_default="0", nullable=False),
        sa.Column("first_sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("api_key_id", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint(
            "status IN ('accepted', 'sent', 'delivered', 'failed', 'cancelled')",
            name=op.f("ck_redemptions_status"),
        ),
        sa.CheckConstraint("(code_id IS NULL) <> (card_id IS NULL)", name=op.f("ck_redemptions_one_reward")),
        sa.ForeignKeyConstraint(
            ["api_key_id"], ["api_keys.id"], name=op.f("fk_redemptions_api_key_id_api_keys")
        ),
        sa.ForeignKeyConstraint(["card_id"], ["cards.id"], name=op.f("fk_redemptions_card_id_cards")),
        sa.ForeignKeyConstraint(["code_id"], ["codes.id"], name=op.f("fk_redemptions_code_id_codes")),
        sa.ForeignKeyConstraint(["offer_id"], ["offers.id"], name=op.f("fk_redemptions_offer_id_offers")),
        sa.ForeignKeyConstraint(
            ["product_id"], ["products.id"], name=op.f("fk_redemptions_product_id_products")
        ),
        sa.ForeignKeyConstraint(
            ["program_id"], ["programs.id"], name=op.f("fk_redemptions_program_id_programs")
        ),
        sa.ForeignKeyConstraint(["tariff_id"], ["tariffs.id"], name=op.f("fk_redemptions_tariff_id_tariffs")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_redemptions")),
        sa.UniqueConstraint("program_id", "external_id", name=op.f("uq_redemptions_program_id_external_id")),
    )
    op.create_index(
        "uq_redemptions_live_code",
        "redemptions",
        ["code_id"],
        unique=True,
        postgresql_where=sa.text("status <> 'cancelled'"),
    )
    op.create_index(
        "ix_redemptions_limits", "redemptions", ["msisdn", "offer_id", "created_at"], unique=False
    )
    op.create_index("ix_redemptions_program_id", "redemptions", ["program_id", "id"], unique=False)
    op.create_table(
        "reconciliation_records",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("type", sa.String(length=16), nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("program_id", sa.Integer(), nullable=True),
        sa.Column("tariff_id", sa.Integer(), nullable=True),
        sa.Column("offer_id", sa.Integer(), nullable=True),
        sa.Column("product_id", sa.Integer(), nullable=False),
        sa.Column("sku", sa.String(length=64), nullable=False),
        sa.Column("partner_id", sa.Integer(), nullable=True),
        sa.Column("quantity", sa.Integer(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("face_value_minor", sa.BigInteger(), nullable=False),
        sa.Column("cost_minor", sa.BigInteger(), nullable=False),
        sa.Column("vat_rate_bp", sa.Integer(), nullable=False),
        sa.Column("vat_minor", sa.BigInteger(), nullable=False),
        sa.Column("code_fingerprint", sa.LargeBinary(), nullable=True),
        sa.Column("code_last4", sa.String(length=4), nullable=True),
        sa.Column("redemption_id", sa.UUID(), nullable=True),
        sa.Column("card_id", sa.BigInteger(), nullable=True),
        sa.CheckConstraint(
            "type IN ('issue', 'cancel', 'exchange', 'breakage')", name=op.f("ck_reconciliation_records_type")
        ),
        sa.CheckConstraint("quantity IN (-1, 1)", name=op.f("ck_reconciliation_records_quantity")),
        sa.ForeignKeyConstraint(
            ["card_id"], ["cards.id"], name=op.f("fk_reconciliation_records_card_id_cards")
        ),
        sa.ForeignKeyConstraint(
            ["offer_id"], ["offers.id"], name=op.f("fk_reconciliation_records_offer_id_offers")
        ),
        sa.ForeignKeyConstraint(
            ["partner_id"], ["partners.id"], name=op.f("fk_reconciliation_records_partner_id_partners")
        ),
        sa.ForeignKeyConstraint(
            ["product_id"], ["products.id"], name=op.f("fk_reconciliation_records_product_id_products")
        ),
        sa.ForeignKeyConstraint(
            ["program_id"], ["programs.id"], name=op.f("fk_reconciliation_records_program_id_programs")
        ),
        sa.ForeignKeyConstraint(
            ["redemption_id"],
            ["redemptions.id"],
            name=op.f("fk_reconciliation_records_redemption_id_redemptions"),
        ),
        sa.ForeignKeyConstraint(
            ["tariff_id"], ["tariffs.id"], name=op.f("fk_reconciliation_records_tariff_id_tariffs")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_reconciliation_records")),
    )
    op.create_index(
        "ix_records_program_time", "reconciliation_records", ["program_id", "occurred_at"], unique=False
    )
    op.create_index("ix_records_redemption", "reconciliation_records", ["redemption_id"], unique=False)
    op.drop_index("ix_codes_allocation", table_name="codes")
    op.execute(
        "CREATE INDEX ix_codes_allocation ON codes (product_id, coalesce(expires_at, 'infinity'), id)"
        " WHERE status = 'available'"
    )
    op.add_column("products", sa.Column("vat_schedule", sa.String(length=64), nullable=True))
    op.add_column(
        "products", sa.Column("vat_point", sa.String(length=16), server_default="sale", nullable=False)
    )


def downgrade() -> None:
    op.drop_column("products", "vat_point")
    op.drop_column("products", "vat_schedule")
    op.drop_index("ix_records_redemption", table_name="reconciliation_records")
    op.drop_index("ix_records_program_time", table_name="reconciliation_records")
    op.drop_table("reconciliation_records")
    op.drop_index("ix_redemptions_program_id", table_name="redemptions")
    op.drop_index("ix_redemptions_limits", table_name="redemptions")
    op.drop_table("redemptions")
    op.drop_table("cards")
    op.drop_table("program_budget_usage")
    op.drop_table("idempotency_keys")
    op.drop_table("vat_rates")
