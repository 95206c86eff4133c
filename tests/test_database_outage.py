"""While the database is away the API answers 503 service_unavailable with Retry-After (never a 500),
and /readyz says which dependency is missing. "Away" here is real: the service is pointed at a
loopback port where no PostgreSQL listens, so every connection is refused."""

from __future__ import annotations

import socket

import pytest

from tests.conftest import assert_problem, redemption_body


@pytest.fixture
def database_away(monkeypatch, keys):
    """The API of a process whose database refuses connections (a fresh app: no cached keys)."""
    from fastapi.testclient import TestClient

    from service.app import create_app
    from service.auth.service import principal_cache
    from service.kit.runtime import _reset_caches

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # free, and nothing listens on it once closed
    monkeypatch.setenv("DATABASE_URL", f"postgresql://postgres@127.0.0.1:{port}/rewards")
    _reset_caches()
    principal_cache.clear()
    with TestClient(create_app(), raise_server_exceptions=False) as client:
        yield client
    monkeypatch.undo()
    _reset_caches()
    principal_cache.clear()


def test_a_redemption_while_the_database_is_away_is_503_with_retry_after(database_away, keys):
    response = database_away.post(
        "/v1/redemptions",
        json=redemption_body(),
        headers={**keys.header("loyalty"), "Idempotency-Key": "away-1"},
    )
    body = assert_problem(response, 503, "service_unavailable")
    assert response.headers["Retry-After"].isdigit()
    assert "Idempotency-Key" in body["detail"]


def test_reads_while_the_database_is_away_are_503_too(database_away, keys):
    response = database_away.get("/v1/programs", headers=keys.header("support"))
    assert_problem(response, 503, "service_unavailable")
    assert response.headers["Retry-After"].isdigit()


def test_readyz_names_the_database_when_it_is_away(database_away):
    response = database_away.get("/readyz")
    body = assert_problem(response, 503, "not_ready")
    assert "database: error" in body["detail"] and "broker: ok" in body["detail"]
