"""A key's owner: the staff member who holds an API key, so that maker-checker knows one person behind
the console and the API (issue 27). An approver key must have one.

Revision ID: 0025_api_key_owner
Revises: 0024_campaigns
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0025_api_key_owner"
down_revision = "0024_campaigns"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "api_keys",
        sa.Column(
            "owner_staff_id",
            sa.Integer(),
            sa.ForeignKey("staff_accounts.id", name="fk_api_keys_owner_staff_id_staff_accounts"),
            nullable=True,
        ),
    )
    # NOT VALID: an approver key made before this migration, without an owner, stays (it can no longer
    # approve: the campaigns' approval asks for the person behind the key); every new one has an owner.
    op.execute(
        "ALTER TABLE api_keys ADD CONSTRAINT ck_api_keys_approver_owned"
        " CHECK (role <> 'approver' OR owner_staff_id IS NOT NULL) NOT VALID"
    )


def downgrade() -> None:
    op.execute("ALTER TABLE api_keys DROP CONSTRAINT ck_api_keys_approver_owned")
    op.drop_column("api_keys", "owner_staff_id")
