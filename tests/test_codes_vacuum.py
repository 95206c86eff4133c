"""The code pool under churn (issue 28, part 2): `codes` is vacuumed after a fixed number of takes
(migration 0023), and a VACUUM takes the taken codes' dead entries out of the allocation index even
when they are a few pages of a large table. Buffers are counted, nothing is timed."""

from __future__ import annotations

import psycopg
import pytest

from service.kit.db.engine import libpq_url
from service.pools.service import TAKE_CODE


def test_codes_are_vacuumed_after_a_fixed_number_of_takes_not_a_fraction(services):
    with psycopg.connect(libpq_url(services.database_url)) as conn:
        options = conn.execute("SELECT reloptions FROM pg_class WHERE relname = 'codes'").fetchone()[0]  # type: ignore[index]
    settings = dict(option.split("=", 1) for option in options)
    assert float(settings["autovacuum_vacuum_scale_factor"]) == 0
    assert 0 < int(settings["autovacuum_vacuum_threshold"]) <= 50_000
    assert float(settings["autovacuum_vacuum_cost_delay"]) == 0
    assert settings["vacuum_index_cleanup"] in ("on", "true")


@pytest.fixture
def big_pool(demo_catalog, services):
    """200,000 available codes of one product (set-based SQL; the take reads no encrypted column)."""
    with psycopg.connect(libpq_url(services.database_url), autocommit=True) as conn:
        product, partner = conn.execute(  # type: ignore[misc]
            "SELECT id, partner_id FROM products WHERE sku = 'ARAY-CINEMA-2000'"
        ).fetchone()
        conn.execute(
            "INSERT INTO codes (product_id, partner_id, fingerprint, last4, code_enc, expires_at)"
            " SELECT %s, %s, sha256(int8send(i)), '0000', '\\x00'::bytea, now() + i * interval '1 second'"
            " FROM generate_series(1, 200000) AS i",
            (product, partner),
        )
        conn.execute("VACUUM ANALYZE codes")
        yield conn, product


def _scans(node: dict) -> list[dict]:
    """The plan's scans of ix_codes_allocation (the take's two: from where the connection's last take
    ended, and from the head when that finds nothing)."""
    own = [node] if node.get("Index Name") == "ix_codes_allocation" else []
    return own + [scan for child in node.get("Plans", []) for scan in _scans(child)]


def _take_buffers(conn: psycopg.Connection, product: int, vacuum: str = "") -> int:
    """Buffers the service's take reads to find its code (its scans of ix_codes_allocation and the
    heap pages they visit, in the plan executed and rolled back). This connection never took a code,
    so the take scans from the head of the index: what VACUUM keeps short."""
    with conn.transaction(force_rollback=True):
        plan = conn.execute(
            "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + TAKE_CODE,
            {"code_status": "reserved", "product": product, "now": "now"},
        ).fetchone()[0][0]  # type: ignore[index]
    scans = _scans(plan["Plan"])
    assert scans, plan
    return int(sum(scan.get("Shared Hit Blocks", 0) + scan.get("Shared Read Blocks", 0) for scan in scans))


def test_a_vacuum_removes_the_taken_codes_from_the_next_takes_path(big_pool):
    conn, product = big_pool
    fresh = _take_buffers(conn, product)
    conn.execute(
        "UPDATE codes SET status = 'issued' WHERE id IN (SELECT id FROM codes WHERE product_id = %s"
        " AND status = 'available' ORDER BY coalesce(expires_at, 'infinity'), id LIMIT 2000)",
        (product,),
    )
    churned = _take_buffers(conn, product)
    _take_buffers(conn, product)  # a second walk, as later takes do
    # 2,000 taken codes are ~1 % of the table's pages: without vacuum_index_cleanup = on, VACUUM
    # would skip the indexes and leave their entries where the next take starts
    conn.execute("VACUUM codes")  # with (INDEX_CLEANUP AUTO), the default: 7 -> 46 -> 58 buffers
    vacuumed = _take_buffers(conn, product)
    assert churned > 4 * fresh, (fresh, churned)
    assert vacuumed <= fresh + 5, (fresh, churned, vacuumed)
