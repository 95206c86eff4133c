"""bench/ceiling.py cannot count empty work: pgbench against a tiny pool in the test database (no
timing is asserted, only what was counted and what was written)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from sqlalchemy import text

from bench.ceiling import (
    CeilingFailed,
    Offer,
    PgbenchResult,
    pool_size,
    ratio_line,
    redemption_script,
    run_pgbench,
)
from service.catalog.snapshot import load_snapshot
from service.kit.db.engine import libpq_url, new_session
from tests.conftest import import_codes_for, table_counts

SYSTEM_PGBENCH = Path("/usr/lib/postgresql/15/bin/pgbench")


@pytest.fixture
def ceiling(keys, services, tmp_path, monkeypatch) -> tuple[str, Path]:
    if services.embedded:
        pass  # the wheel's own pgbench, the server's version
    elif SYSTEM_PGBENCH.exists():
        monkeypatch.setenv("PGBENCH", str(SYSTEM_PGBENCH))
    elif not shutil.which("pgbench"):
        pytest.skip("no pgbench")
    with new_session() as session:
        snap = load_snapshot(session)
        api_key_id = session.execute(text("SELECT min(id) FROM api_keys")).scalar_one()
    # the demo's budget is far above six redemptions: only the pool can run out here
    script = tmp_path / "redemption.sql"
    script.write_text(
        redemption_script(
            snap,
            Offer("mobile-bonus", "basic", "cinema-2000", 2000),
            api_key_id=api_key_id,
            response_body=json.dumps({"status": "accepted"}),
        )
    )
    return libpq_url(services.database_url), script


def test_every_transaction_the_ceiling_counts_is_a_whole_redemption(ceiling):
    url, script = ceiling
    import_codes_for("ARAY-CINEMA-2000", 6)
    result = run_pgbench(url, script, clients=2, transactions=3)
    assert result.transactions == 6 and result.failed == 0
    counts = table_counts("redemptions", "reconciliation_records", "outbox", "idempotency_keys")
    assert counts == {"redemptions": 6, "reconciliation_records": 6, "outbox": 6, "idempotency_keys": 6}


def test_a_dry_pool_makes_the_ceiling_fail_instead_of_counting(ceiling):
    url, script = ceiling
    import_codes_for("ARAY-CINEMA-2000", 3)
    with pytest.raises(CeilingFailed) as failed:
        run_pgbench(url, script, clients=1, transactions=6)
    assert failed.value.empty, str(failed.value)
    assert "guard: no reward taken (within the limits: true)" in str(failed.value)  # names what was missing
    # the three codes were taken by three whole redemptions; the fourth wrote nothing and failed
    counts = table_counts("redemptions", "reconciliation_records", "outbox", "idempotency_keys")
    assert counts == {"redemptions": 3, "reconciliation_records": 3, "outbox": 3, "idempotency_keys": 3}


def test_no_ratio_is_printed_when_a_run_ran_dry():
    runs = [PgbenchResult(2000.0, 8.0, 0, 40000), PgbenchResult(1800.0, 9.0, 0, 36000)]
    assert ratio_line(950.0, runs, []).startswith("ratio = 0.50 ")
    refused = ratio_line(950.0, runs, ["pgbench after: a transaction took no code (0 codes left)"])
    assert refused.startswith("no ratio: ") and "ratio =" not in refused


def test_the_pool_has_room_for_the_fastest_ceiling_measured():
    # 2,377 tps at 16 clients was the fastest ceiling on this machine (issue 28): twice that fits
    assert pool_size(16, 20) >= 2 * 2377 * 20
    assert pool_size(64, 20) == pool_size(16, 20)  # past the cores, more clients add no throughput
