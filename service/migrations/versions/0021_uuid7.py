"""uuid7(): time-ordered UUIDs (RFC 9562 v7) made by the database, for ids written inside SQL (the
outbox's message_id). A random UUID lands on a random leaf of its unique index: in a large index
that is a buffer miss and, once per page after each checkpoint, a full-page image in the WAL. A
time-ordered one lands on the index's rightmost leaf, like a sequence. PostgreSQL 18 has uuidv7();
this function is for the 15-17 servers the service also runs on.

Revision ID: 0021_uuid7
Revises: 0016_smpp_parts
"""

from __future__ import annotations

from alembic import op

revision = "0021_uuid7"
down_revision = "0016_smpp_parts"
branch_labels = None
depends_on = None

# 48 bits of Unix milliseconds over the first 6 bytes of a random (v4) UUID, whose version nibble
# 0100 then becomes 0111 (bits 52 and 53 of the bytea, counted from each byte's low bit); the variant
# bits are already 10. The same layout as service.kit.values.ids.uuid7.
UUID7 = """
CREATE OR REPLACE FUNCTION uuid7() RETURNS uuid LANGUAGE sql VOLATILE PARALLEL SAFE AS $$
    SELECT encode(
        set_bit(set_bit(overlay(uuid_send(gen_random_uuid()) PLACING
            substring(int8send(floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint) FROM 3)
            FROM 1 FOR 6), 52, 1), 53, 1),
        'hex')::uuid
$$
"""


def upgrade() -> None:
    op.execute(UUID7)


def downgrade() -> None:
    op.execute("DROP FUNCTION IF EXISTS uuid7()")
