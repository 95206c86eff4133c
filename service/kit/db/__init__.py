"""PostgreSQL: engine and sessions, the hot path's pipeline, migrations, statement fragments."""
