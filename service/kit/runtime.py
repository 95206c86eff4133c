"""Resolves where PostgreSQL and Redis are for this process: the configured URLs, or the embedded
servers under the data folder. Everything after this sees only URLs (one code path)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from service.kit.config import get_settings, reset_settings_cache
from service.kit.db.engine import reset_engine
from service.kit.embedded import EmbeddedPostgres, EmbeddedRedis, ensure_encryption_key
from service.kit.security.crypto import get_keyring, get_vault


def _reset_caches() -> None:
    reset_settings_cache()
    reset_engine()
    get_vault.cache_clear()
    get_keyring.cache_clear()


@contextmanager
def runtime(*, need_redis: bool = False) -> Iterator[None]:
    settings = get_settings()
    started: list[EmbeddedPostgres | EmbeddedRedis] = []
    try:
        if not settings.database_url:
            settings.data_dir.mkdir(parents=True, exist_ok=True)
            pg = EmbeddedPostgres(settings.data_dir.resolve() / "pg")
            os.environ["DATABASE_URL"] = pg.start()
            started.append(pg)
            if settings.encryption_key is None and settings.encryption_keys is None:
                os.environ["ENCRYPTION_KEY"] = ensure_encryption_key(settings.data_dir)
        elif settings.encryption_key is None and settings.encryption_keys is None:
            raise SystemExit(
                "ENCRYPTION_KEY is required when DATABASE_URL is set (base64 of 32 random bytes)"
            )
        if need_redis and not settings.redis_url:
            rd = EmbeddedRedis(settings.data_dir.resolve() / "redis")
            os.environ["REDIS_URL"] = rd.start()
            started.append(rd)
        _reset_caches()
        yield
    finally:
        reset_engine()
        for server in reversed(started):
            server.stop()
