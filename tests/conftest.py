"""Test services: the system PostgreSQL/Redis when DATABASE_URL and REDIS_URL are set, otherwise
embedded ones started under a temporary data folder. The schema is rebuilt by the real migrations
once per session; each test starts from empty tables and builds state with domain functions."""

from __future__ import annotations

import base64
import copy
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import text

TEST_ENCRYPTION_KEY = base64.b64encode(b"k" * 32).decode()


@dataclass
class Services:
    database_url: str
    redis_url: str
    embedded: bool


def _reset_caches() -> None:
    from service.kit.runtime import _reset_caches

    _reset_caches()


def server_data_dir(prefix: str = "rewards-tests-") -> Path:
    """A folder for embedded servers, outside pytest's temporary tree: every pytest session takes
    group and other permissions off /tmp/pytest-of-<user>, which would lock the embedded PostgreSQL
    (it runs as its own user when we are root) out of its data folder while another session on the
    same machine starts. The caller removes it."""
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    folder.chmod(0o755)
    return folder


@pytest.fixture
def server_data() -> Iterator[Path]:
    folder = server_data_dir()
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def services() -> Iterator[Services]:
    import service.models  # noqa: F401  (every domain's models, as the app and the workers map them)
    from service.kit.embedded import EmbeddedPostgres, EmbeddedRedis

    started = []
    database_url = os.environ.get("DATABASE_URL")
    redis_url = os.environ.get("REDIS_URL")
    data = server_data_dir()
    if not database_url:
        pg = EmbeddedPostgres(data / "pg")
        database_url = pg.start()
        started.append(pg)
    if not redis_url:
        rd = EmbeddedRedis(data / "redis")
        redis_url = rd.start()
        started.append(rd)
    os.environ.update(
        DATABASE_URL=database_url,
        REDIS_URL=redis_url,
        ENCRYPTION_KEY=TEST_ENCRYPTION_KEY,
        REWARDS_DATA_DIR=str(data),
        LOG_JSON="true",
    )
    _reset_caches()
    from service.kit.observability.logging import configure_logging

    configure_logging("INFO", json=True)
    import psycopg

    from service.kit.db.engine import libpq_url

    with psycopg.connect(libpq_url(database_url), autocommit=True) as conn:
        conn.execute("DROP SCHEMA public CASCADE")
        conn.execute("CREATE SCHEMA public")
    from service.kit.db.migrate import upgrade

    upgrade(database_url)
    import redis

    redis.Redis.from_url(redis_url).flushdb()
    yield Services(database_url, redis_url, embedded=bool(started))
    from service.kit.db.engine import reset_engine

    reset_engine()
    for server in reversed(started):
        server.stop()
    shutil.rmtree(data, ignore_errors=True)


def _may_turn_triggers_off(conn) -> bool:
    return bool(conn.exec_driver_sql("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").scalar())


@pytest.fixture
def db(services: Services) -> Iterator[None]:
    """Empty tables (schema kept) before the test."""
    from service.kit.db.engine import Base, get_engine
    from service.kit.security.crypto import get_vault

    # TRUNCATE costs new files for every table and index it reaches (0.15 s for the 46 tables, and
    # CASCADE reaches nearly all of them from the catalog's), before every one of some 1,700 tests. The
    # tables that hold rows are emptied with DELETE instead, with the triggers off for it (the
    # append-only ones refuse a DELETE, the foreign keys' would check an order), and every sequence
    # starts again. A role that may not turn the triggers off truncates, as before.
    tables = [t.name for t in Base.metadata.sorted_tables]
    with get_engine().begin() as conn:
        held = conn.exec_driver_sql("SELECT " + ", ".join(f"EXISTS (SELECT FROM {t})" for t in tables)).one()
        filled = [t for t, has_rows in zip(tables, held, strict=True) if has_rows]
        if filled and _may_turn_triggers_off(conn):
            conn.exec_driver_sql("SET LOCAL session_replication_role = replica")
            for table in reversed(filled):
                conn.exec_driver_sql(f"DELETE FROM {table}")
        elif filled:
            conn.exec_driver_sql(f"TRUNCATE {', '.join(filled)} CASCADE")
        conn.exec_driver_sql(
            "SELECT setval(s.seqrelid, s.seqstart, false) FROM pg_sequence s"
            " JOIN pg_class c ON c.oid = s.seqrelid"
            " WHERE c.relnamespace = 'public'::regnamespace"
        )
    get_vault.cache_clear()  # its fingerprint key row went with the tables: read (make) it again
    from service.events.webhooks import _secrets_cache

    _secrets_cache.clear()  # and the programs' webhook secrets
    yield


@pytest.fixture(scope="session")
def demo_catalog_files():
    """The demo catalog read and checked once (0.19 s a read): each test gets a copy of its own."""
    from catalog import DEMO_CATALOG
    from catalog.loader import load_catalog

    return load_catalog(DEMO_CATALOG)


@pytest.fixture
def demo_catalog(db: None, demo_catalog_files):
    from service.catalog.service import apply_catalog
    from service.kit.db.engine import transaction

    loaded = copy.deepcopy(demo_catalog_files)
    with transaction() as session:
        apply_catalog(session, loaded)
    return loaded


@dataclass
class Keys:
    admin: str
    loyalty: str  # mobile-bonus only
    partner: str  # aray-cinema
    other_partner: str  # kitap-books
    finance: str
    support: str
    revoked: str
    approver: str  # approves campaigns (a second person)

    def header(self, role: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {getattr(self, role)}"}


@pytest.fixture(scope="session")
def one_hash_per_password():
    """Each test makes six accounts with one password: argon2 (about 60 ms a hash, far more on a busy
    machine) runs once per password for the whole session; the stored hash is a real argon2id hash,
    and sign-in verifies it as always."""
    from service.console import accounts

    class OneHashPerPassword:
        def __init__(self, hasher):
            self.hasher = hasher
            self.made: dict[str, str] = {}

        def hash(self, password: str, **kwargs) -> str:
            if password not in self.made:
                self.made[password] = self.hasher.hash(password, **kwargs)
            return self.made[password]

        def __getattr__(self, name: str):
            return getattr(self.hasher, name)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(accounts, "_hasher", OneHashPerPassword(accounts._hasher))
        yield


APPROVER_EMAIL = "approver@example.kz"


@pytest.fixture
def keys(demo_catalog, one_hash_per_password) -> Keys:
    from service.auth.service import create_key, revoke_key
    from service.console.accounts import create_account
    from service.kit.db.engine import transaction

    with transaction() as s:
        # an approver key is a person's: the staff account of whoever holds it
        create_account(s, email=APPROVER_EMAIL, password="approver-password-1", role="approver")
        made = {
            "admin": create_key(s, role="admin", name="ops").key,
            "loyalty": create_key(s, role="loyalty", name="loyalty", programs=["mobile-bonus"]).key,
            "partner": create_key(s, role="partner", name="aray", partner="aray-cinema").key,
            "other_partner": create_key(s, role="partner", name="kitap", partner="kitap-books").key,
            "finance": create_key(s, role="finance", name="finance").key,
            "support": create_key(s, role="support", name="support").key,
            "approver": create_key(s, role="approver", name="approver", owner=APPROVER_EMAIL).key,
        }
        revoked = create_key(s, role="admin", name="old")
        made["revoked"] = revoked.key
        revoke_key(s, revoked.record.key_id)
    return Keys(**made)


@pytest.fixture(scope="session")
def app(services: Services):
    from service.app import create_app

    return create_app()


@pytest.fixture
def client(app, db):
    from fastapi.testclient import TestClient

    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


def import_codes_for(sku: str, codes: list[str] | int, *, expires_at: str | None = None) -> None:
    """Fill a pool through the same import the API and CLI use."""
    from service.kit.db.engine import transaction
    from service.pools.service import RawLine, import_codes

    if isinstance(codes, int):
        codes = [f"{sku}-T{i:05d}" for i in range(codes)]
    with transaction() as session:
        import_codes(
            session, sku, [RawLine(i + 1, c, None, expires_at) for i, c in enumerate(codes)], source="test"
        )


_external = iter(range(1, 10**9))


def redemption_body(**overrides) -> dict:
    body = {
        "program": "mobile-bonus",
        "tariff": "basic",
        "offer": "cinema-2000",
        "msisdn": "87011234567",
        "points": 2000,
        "external_id": f"ext-{next(_external)}",
    }
    body.update(overrides)
    return body


def post_redemption(client, keys, role: str = "loyalty", key: str | None = None, **overrides):
    headers = {**keys.header(role), "Idempotency-Key": key or f"idem-{next(_external)}"}
    return client.post("/v1/redemptions", json=redemption_body(**overrides), headers=headers)


def assert_problem(response, status: int, code: str) -> dict:
    """The response is a problem+json error with this status and stable code; returns its body."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["code"] == code and body["status"] == status and body["type"].endswith(code)
    assert "Traceback" not in response.text
    return body


def table_counts(*tables: str) -> dict[str, int]:
    from service.kit.db.engine import new_session

    with new_session() as s:
        return {t: s.execute(text(f"SELECT count(*) FROM {t}")).scalar_one() for t in tables}
