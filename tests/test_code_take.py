"""Taking a code from a pool (service/pools/sql/take_code.sql): earliest expiry first, and a connection
starts each take where its last take of the product ended, so that the dead index entries of the codes
taken since the last VACUUM stay behind it (issue 28, part 2). The pool is empty only when a scan from
the head finds nothing; codes put back behind the point are reached again within a minute."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from service.kit.db.engine import libpq_url
from service.pools.service import TAKE_CODE, release_code, take_code
from tests.conftest import import_codes_for

SKU = "ARAY-CINEMA-2000"
NOW = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)


@pytest.fixture
def connect(services):
    opened: list[psycopg.Connection] = []

    def open_connection() -> psycopg.Connection:
        conn = psycopg.connect(libpq_url(services.database_url), autocommit=True)
        opened.append(conn)
        return conn

    yield open_connection
    for conn in opened:
        conn.close()


def _pool(connect, size: int) -> tuple[int, list[int]]:
    """`size` codes of one product through the API's import, expiring one a day apart; the product
    and the codes' ids in expiry order."""
    start = NOW.date() + timedelta(days=30)
    codes = [f"TAKE-{i:06d}" for i in range(size)]
    for i, code in enumerate(codes):  # one import per expiry date (an import has one per line)
        import_codes_for(SKU, [code], expires_at=(start + timedelta(days=i)).isoformat())
    conn = connect()
    product = conn.execute("SELECT id FROM products WHERE sku = %(sku)s", {"sku": SKU}).fetchone()[0]  # type: ignore[index]
    ids = [
        row[0]
        for row in conn.execute(
            "SELECT id FROM codes WHERE product_id = %(p)s ORDER BY expires_at, id", {"p": product}
        )
    ]
    return product, ids


def _take(conn: psycopg.Connection, product: int, now: datetime = NOW) -> int | None:
    taken = take_code(conn, product, status="issued", now=now)
    return taken.id if taken else None


def test_a_take_gives_the_earliest_expiring_code(demo_catalog, connect):
    product, ids = _pool(connect, 4)
    assert _take(connect(), product) == ids[0]


def test_a_connection_takes_on_from_where_its_last_take_ended(demo_catalog, connect):
    product, ids = _pool(connect, 6)
    conn = connect()
    assert [_take(conn, product) for _ in range(3)] == ids[:3]
    # another connection's takes do not move this one's point
    assert _take(connect(), product) == ids[3]
    assert _take(conn, product) == ids[4]


def test_a_code_put_back_behind_the_point_is_taken_again_once_the_minute_is_over(demo_catalog, connect):
    product, ids = _pool(connect, 6)
    conn = connect()
    taken = [_take(conn, product) for _ in range(3)]
    release_code(conn, ids[0], now=NOW)  # a cancelled redemption's code goes back to the pool
    assert _take(conn, product, NOW + timedelta(seconds=30)) == ids[3]
    assert _take(conn, product, NOW + timedelta(seconds=61)) == ids[0]
    assert taken == ids[:3]


def test_codes_behind_the_point_are_taken_when_none_lie_after_it(demo_catalog, connect):
    product, ids = _pool(connect, 3)
    conn = connect()
    assert [_take(conn, product) for _ in range(3)] == ids
    release_code(conn, ids[1], now=NOW)
    assert _take(conn, product) == ids[1]
    assert _take(conn, product) is None


def test_a_rolled_back_take_leaves_the_point_where_it_was(demo_catalog, connect):
    product, ids = _pool(connect, 4)
    conn = connect()
    assert _take(conn, product) == ids[0]
    with conn.transaction(force_rollback=True):
        assert _take(conn, product) == ids[1]
    # were the point at ids[1], this take would skip the code the rollback put back
    assert _take(conn, product) == ids[1]


def test_parallel_connections_take_every_code_once(demo_catalog, connect):
    import_codes_for(SKU, 400)
    conn = connect()
    product = conn.execute("SELECT id FROM products WHERE sku = %(sku)s", {"sku": SKU}).fetchone()[0]  # type: ignore[index]
    pool = {row[0] for row in conn.execute("SELECT id FROM codes WHERE product_id = %(p)s", {"p": product})}
    taken: list[int] = []
    lock = threading.Lock()

    def taker() -> None:
        own = connect()
        while (code := _take(own, product)) is not None:
            with lock:
                taken.append(code)

    threads = [threading.Thread(target=taker) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(taken) == sorted(pool)


def _buffers(conn: psycopg.Connection, product: int) -> int:
    """Buffers of the take's scans of ix_codes_allocation, executed and rolled back."""

    def scans(node: dict) -> list[dict]:
        own = [node] if node.get("Index Name") == "ix_codes_allocation" else []
        return own + [scan for child in node.get("Plans", []) for scan in scans(child)]

    with conn.transaction(force_rollback=True):
        plan = conn.execute(
            "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + TAKE_CODE,
            {"code_status": "issued", "product": product, "now": NOW},
        ).fetchone()[0][0]  # type: ignore[index]
    found = scans(plan["Plan"])
    return int(sum(s.get("Shared Hit Blocks", 0) + s.get("Shared Read Blocks", 0) for s in found))


def test_the_dead_entries_of_a_connections_own_takes_stay_behind_its_next_take(demo_catalog, connect):
    """3,000 takes and no VACUUM: a connection that made them reads a few buffers for its next code, a
    new connection (a scan from the head) walks the 3,000 dead entries."""
    conn = connect()
    product, partner = conn.execute(  # type: ignore[misc]
        "SELECT id, partner_id FROM products WHERE sku = %(sku)s", {"sku": SKU}
    ).fetchone()
    conn.execute("ALTER TABLE codes SET (autovacuum_enabled = off)")
    try:
        conn.execute(
            "INSERT INTO codes (product_id, partner_id, fingerprint, last4, code_enc, expires_at)"
            " SELECT %(product)s, %(partner)s, sha256(int8send(i)), '0000', '\\x00'::bytea,"
            " %(now)s + i * interval '1 minute' FROM generate_series(1, 20000) AS i",
            {"product": product, "partner": partner, "now": NOW},
        )
        conn.execute("VACUUM ANALYZE codes")
        fresh = _buffers(conn, product)
        for _ in range(3000):
            assert _take(conn, product) is not None
        own = _buffers(conn, product)
        from_the_head = _buffers(connect(), product)
    finally:
        conn.execute("ALTER TABLE codes RESET (autovacuum_enabled)")
    assert own <= fresh + 5, (fresh, own, from_the_head)
    assert from_the_head > 4 * own, (fresh, own, from_the_head)
