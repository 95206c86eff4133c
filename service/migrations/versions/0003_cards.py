"""cards: exchanges, card events, expiry and settlement indexes

Revision ID: 0003c
Revises: 0002
Create Date: 2026-11-24 10:00:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0003c"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "exchanges",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("card_id", sa.BigInteger(), nullable=False),
        sa.Column("product_id", sa.Integer(), nullable=False),
        sa.Column("partner_id", sa.Integer(), nullable=False),
        sa.Column("code_id", sa.BigInteger(), nullable=False),
        sa.Column("amount_minor", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("api_key_id", sa.Integer(), nullable=True),
        sa.CheckConstraint("amount_minor > 0", name=op.f("ck_exchanges_amount_positive")),
        sa.ForeignKeyConstraint(
            ["api_key_id"], ["api_keys.id"], name=op.f("fk_exchanges_api_key_id_api_keys")
        ),
        sa.ForeignKeyConstraint(["card_id"], ["cards.id"], name=op.f("fk_exchanges_card_id_cards")),
        sa.ForeignKeyConstraint(["code_id"], ["codes.id"], name=op.f("fk_exchanges_code_id_codes")),
        sa.ForeignKeyConstraint(
            ["partner_id"], ["partners.id"], name=op.f("fk_exchanges_partner_id_partners")
        ),
        sa.ForeignKeyConstraint(
            ["product_id"], ["products.id"], name=op.f("fk_exchanges_product_id_products")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_exchanges")),
        sa.UniqueConstraint("code_id", name=op.f("uq_exchanges_code_id")),
    )
    op.create_index("ix_exchanges_card", "exchanges", ["card_id"], unique=False)
    op.create_index("ix_exchanges_partner_time", "exchanges", ["partner_id", "created_at"], unique=False)
    op.create_table(
        "card_events",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("card_id", sa.BigInteger(), nullable=False),
        sa.Column("event", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("api_key_id", sa.Integer(), nullable=True),
        sa.Column("at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint(
            "event IN ('blocked', 'unblocked', 'locked', 'expired')", name=op.f("ck_card_events_event")
        ),
        sa.ForeignKeyConstraint(
            ["api_key_id"], ["api_keys.id"], name=op.f("fk_card_events_api_key_id_api_keys")
        ),
        sa.ForeignKeyConstraint(["card_id"], ["cards.id"], name=op.f("fk_card_events_card_id_cards")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_card_events")),
    )
    op.create_index("ix_card_events_card", "card_events", ["card_id", "at"], unique=False)
    # The expiry job scans active cards by expiry; exchanges and breakage find a card's redemption.
    op.create_index(
        "ix_cards_expiry",
        "cards",
        ["expires_at"],
        unique=False,
        postgresql_where=sa.text("status = 'active'"),
    )
    op.create_index(
        "ix_redemptions_card",
        "redemptions",
        ["card_id"],
        unique=False,
        postgresql_where=sa.text("card_id IS NOT NULL"),
    )
    # Partner settlement reads one partner's records of one month.
    op.create_index(
        "ix_records_partner_time", "reconciliation_records", ["partner_id", "occurred_at"], unique=False
    )


def downgrade() -> None:
    op.drop_index("ix_records_partner_time", table_name="reconciliation_records")
    op.drop_index("ix_redemptions_card", table_name="redemptions")
    op.drop_index("ix_cards_expiry", table_name="cards")
    op.drop_index("ix_card_events_card", table_name="card_events")
    op.drop_table("card_events")
    op.drop_index("ix_exchanges_partner_time", table_name="exchanges")
    op.drop_index("ix_exchanges_card", table_name="exchanges")
    op.drop_table("exchanges")
