"""A revoked key stops working at once in every API process (issue 29, 5): each process caches the
keys it authenticated, and a revocation tells them all to drop them (PostgreSQL NOTIFY at commit),
whatever their cache's lifetime. Two real API processes on loopback."""

from __future__ import annotations

import time

import httpx
import pytest

from service.auth.service import create_key, principal_cache, revoke_key
from service.kit.db.engine import transaction
from tests.harness.live import live_api

# Far longer than the test: without the notification a process would keep the revoked key this long.
CACHE_SECONDS = "120"


@pytest.fixture
def two_api_processes(keys):
    with (
        live_api(pool_size=2, API_KEY_CACHE_SECONDS=CACHE_SECONDS) as first,
        live_api(pool_size=2, API_KEY_CACHE_SECONDS=CACHE_SECONDS) as second,
    ):
        yield first, second


def _status(base: str, key: str) -> int:
    return httpx.get(base + "/v1/programs", headers={"Authorization": f"Bearer {key}"}, timeout=5).status_code


def _statuses_until(bases: tuple[str, ...], key: str, want: int, within: float) -> list[int]:
    deadline = time.monotonic() + within
    while True:
        statuses = [_status(base, key) for base in bases]
        if all(s == want for s in statuses) or time.monotonic() > deadline:
            return statuses
        time.sleep(0.02)


def test_a_revoked_key_stops_working_at_once_in_every_api_process(two_api_processes):
    with transaction() as s:
        made = create_key(s, role="finance", name="to revoke")
    for _ in range(3):  # both processes have the key in their cache now
        assert [_status(base, made.key) for base in two_api_processes] == [200, 200]
    with transaction() as s:  # as `rewards keys revoke` does, from a third process
        revoke_key(s, made.record.key_id)
    revoked_at = time.monotonic()
    statuses = _statuses_until(two_api_processes, made.key, 401, within=1.0)
    assert statuses == [401, 401], (
        f"still {statuses} {time.monotonic() - revoked_at:.1f} s after the revocation"
    )


def test_another_key_keeps_working_from_the_cache_after_a_revocation(two_api_processes):
    with transaction() as s:
        kept = create_key(s, role="finance", name="kept")
        gone = create_key(s, role="finance", name="gone")
    assert [_status(base, kept.key) for base in two_api_processes] == [200, 200]
    with transaction() as s:
        revoke_key(s, gone.record.key_id)
    assert _statuses_until(two_api_processes, gone.key, 401, within=1.0) == [401, 401]
    assert [_status(base, kept.key) for base in two_api_processes] == [200, 200]


def test_a_lookup_that_raced_a_revocation_is_not_cached(keys):
    """A request that read the key just before the revocation committed must not put it back into
    the cache after the notification emptied it."""
    header = f"Bearer {keys.finance}"
    generation = principal_cache.generation
    principal_cache.clear()  # what the notification does, while the lookup was in flight
    from service.auth.service import authenticate
    from service.kit.db.engine import new_session

    with new_session() as s:
        principal = authenticate(s, header)
    principal_cache.put(header, principal, generation)
    assert principal_cache.get(header) is None


def test_an_entry_lives_at_most_the_cache_lifetime(keys, monkeypatch):
    """The bound while a process's listener is not connected: API_KEY_CACHE_SECONDS."""
    from service.auth.service import authenticate
    from service.kit.config import get_settings
    from service.kit.db.engine import new_session

    monkeypatch.setattr(get_settings(), "api_key_cache_seconds", 0.2)
    header = f"Bearer {keys.finance}"
    with new_session() as s:
        principal = authenticate(s, header)
    principal_cache.put(header, principal, principal_cache.generation)
    assert principal_cache.get(header) == principal
    time.sleep(0.3)
    assert principal_cache.get(header) is None


def test_the_listener_empties_the_cache_when_it_connects(keys):
    """Notifications are not stored: whatever was revoked while it was away is dropped on connecting."""
    from service.auth.revocations import RevocationListener
    from service.kit.config import get_settings

    generation = principal_cache.generation
    listener = RevocationListener(get_settings().database_url or "").start()
    try:
        assert listener.connected.wait(10)
        assert principal_cache.generation > generation
    finally:
        listener.stop()
