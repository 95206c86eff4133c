"""The code pool under churn (issue 28): autovacuum reaches `codes` after a fixed number of takes, not
a fifth of the table.

Every take updates a code out of the partial index `ix_codes_allocation` (`status = 'available'`),
leaving a dead entry at its head, exactly where the next take's SKIP LOCKED scan starts. Until VACUUM
removes them every take walks past all of them: 0.04 ms after a VACUUM, 7.9 ms after 261k takes on
a 3.45 M-row table (issue 28). With the default scale factor (0.2) autovacuum waited for ~690k.

- `autovacuum_vacuum_scale_factor = 0`, `autovacuum_vacuum_threshold = 20000`: a vacuum after 20k
  dead rows whatever the table's size;
- `autovacuum_vacuum_cost_delay = 0`: that vacuum is not throttled (it is frequent and short: the
  visibility map lets it skip the untouched pages);
- `vacuum_index_cleanup = on`: the taken codes are few pages of a large table, below the 2 % of pages
  under which VACUUM skips the indexes (PostgreSQL 14+); the dead index entries are what must go.

Per-table storage parameters: they hold on any PostgreSQL the migrations run on (embedded or not).
The server's `autovacuum_naptime` bounds how soon the threshold is acted on (docs/deploying.md).

Revision ID: 0023_codes_autovacuum
Revises: 0022_retention
"""

from __future__ import annotations

from alembic import op

revision = "0023_codes_autovacuum"
down_revision = "0022_retention"
branch_labels = None
depends_on = None

SETTINGS = {
    "autovacuum_vacuum_scale_factor": "0",
    "autovacuum_vacuum_threshold": "20000",
    "autovacuum_vacuum_cost_delay": "0",
    "vacuum_index_cleanup": "on",
}


def upgrade() -> None:
    op.execute("ALTER TABLE codes SET (" + ", ".join(f"{k} = {v}" for k, v in SETTINGS.items()) + ")")


def downgrade() -> None:
    op.execute("ALTER TABLE codes RESET (" + ", ".join(SETTINGS) + ")")
