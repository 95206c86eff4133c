"""the parts of a long SMS, their error classes and receipts; a program's sender TON/NPI

Revision ID: 0016_smpp_parts
Revises: 0017_holders
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0016_smpp_parts"
down_revision = "0017_holders"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Per part of a long SMS, the provider's id once it took that part (NULL: still to send), under a
    # UDH reference that every attempt keeps, for a text the digest identifies (a template changed
    # between attempts must not mix parts of two texts). Existing rows have none: their next attempt
    # sends every part, as before.
    op.add_column("sms_messages", sa.Column("part_ids", postgresql.ARRAY(sa.String(64)), nullable=True))
    op.add_column("sms_messages", sa.Column("udh_reference", sa.SmallInteger(), nullable=True))
    op.add_column("sms_messages", sa.Column("text_digest", sa.String(32), nullable=True))
    # Errors so far per class ({"transient": 2, "throttled": 5}): each class has its own cap.
    op.add_column(
        "sms_messages",
        sa.Column("failures", postgresql.JSONB(), server_default=sa.text("'{}'::jsonb"), nullable=False),
    )
    op.add_column("sms_messages", sa.Column("error_code", sa.String(32), nullable=True))
    op.add_column("sms_messages", sa.Column("receipt_at", sa.DateTime(timezone=True), nullable=True))
    # The sender's type of number and numbering plan (alphanumeric 5/0, short code 3/0, ...)
    op.add_column("programs", sa.Column("sms_sender_ton", sa.SmallInteger(), nullable=True))
    op.add_column("programs", sa.Column("sms_sender_npi", sa.SmallInteger(), nullable=True))


def downgrade() -> None:
    op.drop_column("programs", "sms_sender_npi")
    op.drop_column("programs", "sms_sender_ton")
    for column in ("receipt_at", "error_code", "failures", "text_digest", "udh_reference", "part_ids"):
        op.drop_column("sms_messages", column)
