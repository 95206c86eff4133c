"""A load generator that behaves like the operator's loyalty system, and the probes that watch the API."""

from __future__ import annotations

import asyncio
import json
import random
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import httpx

from tests.harness.stack import CONNECTIONS, OFFER, POINTS, PROGRAM, TARIFF

# --- the loyalty system -----------------------------------------------------------------------------


@dataclass
class Operation:
    """One redemption as the loyalty system sees it: one Idempotency-Key, retried until answered."""

    n: int
    phase: str
    started: float
    attempts: int = 0
    final: int | None = None  # status of the last answer, once it is final
    answered: Counter = field(default_factory=Counter)  # "201", "503", "500", "timeout", "connect", ...
    seconds: float | None = None  # the 201 attempt's request-to-answer time
    answered_at: float | None = None  # monotonic time the 201 was read

    @property
    def key(self) -> str:
        return f"ft-{self.n}"

    @property
    def msisdn(self) -> str:
        return f"+7747{self.n:07d}"


class LoyaltySystem:
    """Redemptions at a steady rate, each with its own Idempotency-Key, retried like a loyalty system:
    the same key and body, with backoff (honouring Retry-After), on 5xx, timeouts, connection errors
    and 409 idempotency_in_progress, until an answer is final. Runs in a thread of its own."""

    def __init__(
        self,
        base: str,
        key: str,
        rate: float,
        timeout: float = 10.0,
        give_up_after: float = 900,
        first: int = 0,
    ):
        self.base, self.key, self.rate, self.timeout = base, key, rate, timeout
        self.first = first  # number of the first redemption (its key, external id and phone number)
        self.give_up_after = give_up_after
        self.phase = "warm-up"
        self.ops: list[Operation] = []
        self.first_201_after: dict[float, float] = {}
        self.paused = threading.Event()
        self._stop = threading.Event()
        self._done = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True, name="load")
        self.latest_201_sent = 0.0  # monotonic send time of the newest attempt answered 201
        self.max_attempt_seconds = 0.0
        self.slow: list[tuple[float, str, str]] = []  # attempts over 2 s: (seconds, outcome, phase)
        # Answers by the phase in which their attempt was sent (a retry of a redemption made before a
        # fault belongs to the fault it met).
        self.answers: dict[str, Counter] = defaultdict(Counter)
        self.max_queued = 0.0  # the longest a request waited for a free client connection

    def start(self) -> LoyaltySystem:
        self._thread.start()
        return self

    def stop(self, wait: float = 300) -> None:
        """Stops sending new redemptions and waits for the open ones to get a final answer."""
        self._stop.set()
        self._done.wait(wait)

    def open_operations(self) -> int:
        return sum(1 for op in self.ops if op.final is None)

    async def _run(self) -> None:
        self._http = RawHttp(self.base, CONNECTIONS, lambda: self.phase)
        tasks: set[asyncio.Task] = set()
        start, sent = time.monotonic(), 0
        while not self._stop.is_set():
            if self.paused.is_set():
                await asyncio.sleep(0.05)
                start, sent = time.monotonic(), 0
                continue
            due = start + sent / self.rate
            if due > time.monotonic():
                await asyncio.sleep(due - time.monotonic())
            op = Operation(self.first + len(self.ops), self.phase, time.monotonic())
            self.ops.append(op)
            task = asyncio.create_task(self._one(op))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            sent += 1
        if tasks:
            await asyncio.wait(tasks)
        self._http.close()
        self._done.set()

    async def _one(self, op: Operation) -> None:
        body = json.dumps(
            {
                "program": PROGRAM,
                "tariff": TARIFF,
                "offer": OFFER,
                "points": POINTS,
                "msisdn": "8" + op.msisdn[2:],
                "external_id": op.key,
            }
        ).encode()
        headers = {"Authorization": f"Bearer {self.key}", "Idempotency-Key": op.key}
        backoff = 0.25
        while True:
            op.attempts += 1
            queued = time.monotonic()
            answer = await self._http.post("/v1/redemptions", body, headers, self.timeout)
            status, sent_at, took = answer.status, answer.sent_at, answer.seconds
            self.max_queued = max(self.max_queued, sent_at - queued)
            outcome = answer.error or str(status)
            if status == 409 and b"idempotency_in_progress" in answer.body:
                outcome = "409 in progress"
            self.answers[answer.phase or op.phase][outcome] += 1
            retry_after = answer.headers.get("retry-after")
            self.max_attempt_seconds = max(self.max_attempt_seconds, took)
            if took > 2:
                self.slow.append((round(took, 1), outcome, op.phase))
            op.answered[outcome] += 1
            if status == 201:
                op.final = 201
                op.seconds, op.answered_at = took, time.monotonic()
                self.latest_201_sent = max(self.latest_201_sent, sent_at)
                self.first_201_after.setdefault(round(sent_at, 1), time.monotonic())
                return
            retryable = status is None or status >= 500 or outcome in ("409 in progress", "429")
            if not retryable or time.monotonic() - op.started > self.give_up_after:
                op.final = status or 0
                return
            wait = min(backoff, 5.0) * (0.5 + random.random() / 2)
            if retry_after and retry_after.isdigit():
                wait = min(max(wait, float(retry_after) * (0.5 + random.random() / 2)), 5.0)
            backoff *= 2
            await asyncio.sleep(wait)


@dataclass
class Answer:
    status: int | None  # None: no answer (error says why)
    headers: dict[str, str]
    body: bytes
    sent_at: float
    seconds: float
    error: str | None = None
    phase: str | None = None


class RawHttp:
    """Keep-alive HTTP/1.1 over asyncio streams, a few lines of parsing: httpx costs this 2-core
    machine a millisecond of CPU per request, which the service under test needs more."""

    KEEPALIVE = 4.0  # seconds an idle connection is reused (uvicorn closes them after 5)

    def __init__(self, base: str, connections: int, phase: Callable[[], str] = lambda: ""):
        self.phase = phase
        parts = urlsplit(base)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.idle: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter, float] | None] = (
            asyncio.Queue()
        )
        for _ in range(connections):
            self.idle.put_nowait(None)  # a connection slot, opened on first use

    async def post(self, path: str, body: bytes, headers: dict[str, str], timeout: float) -> Answer:
        conn = await self.idle.get()  # waiting for a free connection is not the server's time
        sent_at, phase = time.monotonic(), self.phase()
        if conn is not None and sent_at - conn[2] > self.KEEPALIVE:
            conn[1].close()
            conn = None
        writer = None
        try:
            if conn is None:
                opening = asyncio.open_connection(self.host, self.port)
                reader, writer = await asyncio.wait_for(opening, timeout)
            else:
                reader, writer, _ = conn
            head = f"POST {path} HTTP/1.1\r\nHost: {self.host}\r\nContent-Type: application/json\r\n"
            head += "".join(f"{k}: {v}\r\n" for k, v in headers.items())
            writer.write(f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body)
            conn = None
            status, answer_headers, answer = await asyncio.wait_for(self._read(reader), timeout)
            if answer_headers.get("connection") == "close":
                writer.close()
            else:
                conn = (reader, writer, time.monotonic())
            return Answer(status, answer_headers, answer, sent_at, time.monotonic() - sent_at, phase=phase)
        except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError, IndexError) as exc:
            if writer is not None:
                writer.close()
            conn = None
            error = "timeout" if isinstance(exc, TimeoutError) else "connection"
            return Answer(None, {}, b"", sent_at, time.monotonic() - sent_at, error, phase)
        finally:
            self.idle.put_nowait(conn)

    @staticmethod
    async def _read(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {}
        for line in lines[1:]:
            if ":" in line:
                name, value = line.split(":", 1)
                headers[name.strip().lower()] = value.strip()
        body = await reader.readexactly(int(headers.get("content-length", "0")))
        return status, headers, body

    def close(self) -> None:
        while not self.idle.empty():
            conn = self.idle.get_nowait()
            if conn is not None:
                conn[1].close()


class ReadinessProbe:
    """/readyz twice a second, as a load balancer's probe would ask it."""

    def __init__(self, base: str):
        self.base = base
        self.samples: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="readyz")

    def start(self) -> ReadinessProbe:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        with httpx.Client(base_url=self.base, timeout=5) as http:
            while not self._stop.wait(0.5):
                at = time.monotonic()
                try:
                    response = http.get("/readyz")
                    seen = str(response.status_code)
                    if response.status_code != 200:
                        detail = response.json().get("detail") or ""
                        seen += " " + ",".join(
                            part.split(":")[0].strip() for part in detail.split(", ") if "error" in part
                        )
                except httpx.HTTPError as exc:
                    seen = type(exc).__name__
                self.samples.append((at, seen))

    def between(self, start: float, end: float) -> str:
        seen = [s for at, s in self.samples if start <= at <= end]
        return " / ".join(dict.fromkeys(seen)) or "-"
