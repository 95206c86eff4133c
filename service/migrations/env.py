from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine, pool

import service.models  # noqa: F401  (the whole schema in the metadata)
from service.kit.config import get_settings
from service.kit.db.engine import Base, sqlalchemy_url

target_metadata = Base.metadata


def run_migrations_online() -> None:
    url = context.config.attributes.get("database_url") or get_settings().database_url
    if not url:
        raise RuntimeError("DATABASE_URL is not set")
    engine = create_engine(sqlalchemy_url(url), poolclass=pool.NullPool)
    with engine.connect() as connection:
        context.configure(connection=connection, target_metadata=target_metadata, compare_type=True)
        with context.begin_transaction():
            # Two `rewards migrate` at once (two pods starting) must not both run DDL.
            connection.exec_driver_sql("SELECT pg_advisory_xact_lock(7270001)")
            context.run_migrations()


run_migrations_online()
