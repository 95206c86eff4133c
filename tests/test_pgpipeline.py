"""The hot path's pipelines (service/kit/db/pipeline.py), on psycopg's public API only: a pipeline
costs one round trip to PostgreSQL whatever its statements, the first pipeline opens the
transaction, results and errors come back as psycopg's own pipeline gives them.

A TCP proxy on loopback between psycopg and the test database delays everything PostgreSQL answers
by a fixed latency (as a network would: each chunk is delivered that long after it arrived, so
chunks in flight overlap), so the time a pipeline takes counts its round trips."""

from __future__ import annotations

import asyncio
import queue
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import errors as pg_errors
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from service.kit.db.engine import libpq_url
from service.kit.db.pipeline import pipeline

LATENCY = 0.25  # seconds, server to client


class LatencyProxy:
    """Forwards client connections to PostgreSQL; what the server sends reaches the client LATENCY
    seconds later."""

    def __init__(self, database_url: str):
        params = conninfo_to_dict(libpq_url(database_url))
        host, port = params.get("host") or "/tmp", int(params.get("port") or 5432)
        self.target: tuple[int, object] = (
            (socket.AF_UNIX, str(Path(host) / f".s.PGSQL.{port}"))
            if host.startswith("/")
            else (socket.AF_INET, (host, port))
        )
        self.conninfo_params = params
        self.listener = socket.create_server(("127.0.0.1", 0))
        threading.Thread(target=self._serve, daemon=True).start()

    def conninfo(self) -> str:
        params = {**self.conninfo_params, "host": "127.0.0.1", "port": self.listener.getsockname()[1]}
        return make_conninfo(**params)

    def _serve(self) -> None:
        while True:
            client, _ = self.listener.accept()
            family, address = self.target
            server = socket.socket(family, socket.SOCK_STREAM)
            server.connect(address)  # type: ignore[arg-type]
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            threading.Thread(target=self._forward, args=(client, server), daemon=True).start()
            late: queue.Queue[tuple[float, bytes]] = queue.Queue()
            threading.Thread(target=self._receive, args=(server, late), daemon=True).start()
            threading.Thread(target=self._deliver, args=(late, client), daemon=True).start()

    @staticmethod
    def _forward(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:  # the other direction closed both
            pass
        finally:
            sink.close()

    @staticmethod
    def _receive(server: socket.socket, late: queue.Queue[tuple[float, bytes]]) -> None:
        try:
            while data := server.recv(65536):
                late.put((time.monotonic() + LATENCY, data))
        except OSError:
            pass
        late.put((0.0, b""))

    @staticmethod
    def _deliver(late: queue.Queue[tuple[float, bytes]], client: socket.socket) -> None:
        try:
            while True:
                due, data = late.get()
                if not data:
                    break
                time.sleep(max(0.0, due - time.monotonic()))
                client.sendall(data)
        except OSError:
            pass
        finally:
            client.close()


@pytest.fixture
def proxy(services) -> Iterator[LatencyProxy]:
    yield LatencyProxy(services.database_url)


def _run(coroutine):
    return asyncio.run(coroutine)


async def _connect(proxy: LatencyProxy) -> psycopg.AsyncConnection:
    return await psycopg.AsyncConnection.connect(proxy.conninfo(), autocommit=True)


def _round_trips(seconds: float) -> int:
    return int(seconds / LATENCY)  # the rest of the time is far below one latency


def test_a_pipeline_of_several_statements_costs_one_round_trip(proxy, db):
    async def scenario() -> list:
        async with await _connect(proxy) as conn:
            started = time.monotonic()
            async with pipeline(conn):
                first = await conn.execute("SELECT 1")
                second = await conn.execute("SELECT %(n)s::int + 1", {"n": 41})
                third = await conn.execute("SELECT 'three'")
                await conn.execute("COMMIT")
            took = time.monotonic() - started
            return [took, await first.fetchone(), await second.fetchone(), await third.fetchone()]

    took, first, second, third = _run(scenario())
    assert _round_trips(took) == 1, f"{took:.3f} s"
    assert first == (1,) and second == (42,) and third == ("three",)


def test_a_failing_statement_aborts_the_rest_of_its_pipeline_and_raises_its_own_error(proxy, db):
    async def scenario() -> tuple[object, object]:
        async with await _connect(proxy) as conn:
            await conn.execute("CREATE TEMPORARY TABLE t (n int PRIMARY KEY)")
            with pytest.raises(pg_errors.UniqueViolation):
                async with pipeline(conn):
                    await conn.execute("INSERT INTO t VALUES (1), (1)")
                    await conn.execute("INSERT INTO t VALUES (2)")
                    await conn.execute("COMMIT")
            status = conn.info.transaction_status
            await conn.rollback()
            rows = await (await conn.execute("SELECT count(*) FROM t")).fetchone()
            return status, rows

    status, rows = _run(scenario())
    assert status == psycopg.pq.TransactionStatus.INERROR  # the COMMIT behind the error did not run
    assert rows == (0,)


def test_a_transaction_spans_two_pipelines_and_commits_with_the_second(proxy, db):
    async def scenario() -> tuple[float, tuple[object, object]]:
        async with await _connect(proxy) as conn, await _connect(proxy) as other:
            await conn.execute("CREATE TABLE IF NOT EXISTS pipeline_probe (n int)")
            await conn.execute("TRUNCATE pipeline_probe")
            started = time.monotonic()
            async with pipeline(conn):
                await conn.execute("INSERT INTO pipeline_probe VALUES (1)")
            took = time.monotonic() - started
            unseen = await (await other.execute("SELECT count(*) FROM pipeline_probe")).fetchone()
            started = time.monotonic()
            async with pipeline(conn):
                await conn.execute("INSERT INTO pipeline_probe VALUES (2)")
                await conn.execute("COMMIT")
            took += time.monotonic() - started
            seen = await (await other.execute("SELECT count(*) FROM pipeline_probe")).fetchone()
            await conn.execute("DROP TABLE pipeline_probe")
            return took, (unseen, seen)

    took, (unseen, seen) = _run(scenario())
    assert _round_trips(took) == 2, f"{took:.3f} s"  # BEGIN rode with the first pipeline's insert
    assert unseen == (0,) and seen == (2,)
