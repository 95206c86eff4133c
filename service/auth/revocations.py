"""Revocations reach every API process at once: one thread per process LISTENs on the channel that
revoke_key() notifies, and empties the process's principal cache when a revocation arrives.

PostgreSQL delivers a NOTIFY at commit only, to the sessions listening at that moment, and does not
keep it. So the cache is emptied again whenever the listener (re)connects, and while it is not
connected the cache's entries still expire after API_KEY_CACHE_SECONDS: that is the bound on a
revoked key in a process that has lost its listening connection."""

from __future__ import annotations

import threading

import psycopg
import structlog

from service.auth.service import REVOCATIONS, principal_cache
from service.kit.db.engine import libpq_url, sqlalchemy_url

log = structlog.get_logger("auth")
WAIT = 0.5  # seconds between looks at the stop flag while no notification comes
MAX_BACKOFF = 10.0


class RevocationListener:
    def __init__(self, database_url: str) -> None:
        self.url = libpq_url(sqlalchemy_url(database_url))
        self.connected = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="revocation-listener", daemon=True)

    def start(self) -> RevocationListener:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        backoff = WAIT
        while not self._stop.is_set():
            try:
                with psycopg.connect(self.url, autocommit=True, connect_timeout=5) as conn:
                    conn.execute(f"LISTEN {REVOCATIONS}")
                    principal_cache.clear()  # whatever was revoked while nobody listened
                    self.connected.set()
                    backoff = WAIT
                    while not self._stop.is_set():
                        for notification in conn.notifies(timeout=WAIT):
                            principal_cache.clear()
                            log.info("api_key_revoked_elsewhere", key_id=notification.payload)
            except psycopg.Error as exc:
                log.warning("revocation_listener_down", error=type(exc).__name__, retry_in=backoff)
            finally:
                self.connected.clear()
            self._stop.wait(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF)


_listener: RevocationListener | None = None
_started = threading.Lock()


def listen(database_url: str | None) -> RevocationListener | None:
    """Starts this process's listener (once; it runs as long as the process)."""
    global _listener
    if not database_url:
        return None
    with _started:
        if _listener is None:
            _listener = RevocationListener(database_url).start()
        return _listener
