"""Real parties for delivery tests: a test SMSC, a webhook receiver, the outbox relay and a Dramatiq
worker process, all on loopback."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from sqlalchemy import text

from service.kit.db.engine import new_session, transaction


@dataclass
class WebhookReceiver:
    events: list[dict] = field(default_factory=list)
    failures_left: int = 0
    failing_type: str | None = None  # refuse only events of this type (None: any)
    server: ThreadingHTTPServer | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)  # requests arrive side by side

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hooks"

    def start(self) -> WebhookReceiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                kind = json.loads(body).get("type")
                with receiver.lock:
                    refuse = receiver.failures_left > 0 and receiver.failing_type in (None, kind)
                    receiver.failures_left -= refuse
                if refuse:
                    self.send_response(503)
                    self.end_headers()
                    return
                with receiver.lock:
                    receiver.events.append(
                        {"headers": dict(self.headers), "body": body, "json": json.loads(body)}
                    )
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self.server.shutdown()

    def types_for(self, redemption_id: str) -> list[str]:
        return [
            e["json"]["type"] for e in self.events if e["json"]["data"].get("redemption_id") == redemption_id
        ]


def wait_until(
    predicate: Callable[[], bool], timeout: float, every: float = 0.1, what: str = "condition"
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def statuses() -> dict[str, int]:
    with new_session() as s:
        return dict(s.execute(text("SELECT status, count(*) FROM redemptions GROUP BY status")).all())


def point_webhooks_at(url: str) -> None:
    from service.catalog.snapshot import invalidate_snapshot

    with transaction() as s:
        s.execute(text("UPDATE programs SET webhook_url = :u"), {"u": url})
    invalidate_snapshot()


class Worker:
    """`dramatiq workers.actors` in its own process group, so a test can SIGKILL it whole."""

    def __init__(self, env: dict[str, str], processes: int = 1, threads: int = 8):
        self.env, self.processes, self.threads = env, processes, threads
        self.proc: subprocess.Popen | None = None
        self.log = open(os.environ.get("WORKER_LOG", os.devnull), "ab")

    def start(self) -> Worker:
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "dramatiq",
                "workers.actors",
                "--processes",
                str(self.processes),
                "--threads",
                str(self.threads),
            ],
            env=self.env,
            start_new_session=True,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        return self

    def kill(self) -> None:
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)


def flush_queues() -> None:
    """Empties every queue the workers consume. (`broker.flush_all()` knows only the queues declared
    in this process, and the test process declares none: it imports no actors.)"""
    from service.kit.messaging.jobs import BULK_SMS_QUEUE, CAMPAIGN_QUEUE, SMS_QUEUE, WEBHOOK_QUEUE
    from workers.broker import broker

    for queue in (SMS_QUEUE, BULK_SMS_QUEUE, CAMPAIGN_QUEUE, WEBHOOK_QUEUE):
        broker.flush(queue)
