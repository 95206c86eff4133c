"""The hot path's pipelines (service/kit/db/pipeline.py): every statement of a pipeline reaches PostgreSQL
in one write, the first pipeline opens the transaction, results and errors come back as psycopg's
own pipeline gives them. A TCP proxy on
loopback between psycopg and the test database counts what the client writes."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import errors as pg_errors
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from service.kit.db.engine import libpq_url
from service.kit.db.pipeline import pipeline


class CountingProxy:
    """Forwards one client connection at a time to PostgreSQL and counts the chunks the client sent
    (a write that arrives while the proxy waits for the server's answer is one chunk)."""

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
        self.chunks = 0
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
            threading.Thread(target=self._pump, args=(client, server, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, False), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, count: bool) -> None:
        try:
            while data := source.recv(65536):
                if count:
                    self.chunks += 1
                sink.sendall(data)
        except OSError:  # the other direction closed both
            pass
        finally:
            sink.close()


@pytest.fixture
def proxy(services) -> Iterator[CountingProxy]:
    yield CountingProxy(services.database_url)


def _run(coroutine):
    return asyncio.run(coroutine)


async def _connect(proxy: CountingProxy) -> psycopg.AsyncConnection:
    return await psycopg.AsyncConnection.connect(proxy.conninfo(), autocommit=True)


def test_the_statements_of_a_pipeline_reach_postgresql_in_one_write(proxy, db):
    async def scenario() -> list:
        async with await _connect(proxy) as conn:
            before = proxy.chunks
            async with pipeline(conn):
                first = await conn.execute("SELECT 1")
                second = await conn.execute("SELECT %(n)s::int + 1", {"n": 41})
                await conn.execute("COMMIT")
            written = proxy.chunks - before
            return [written, await first.fetchone(), await second.fetchone()]

    written, first, second = _run(scenario())
    assert written == 1
    assert first == (1,) and second == (42,)


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
    async def scenario() -> tuple[int, object]:
        async with await _connect(proxy) as conn, await _connect(proxy) as other:
            await conn.execute("CREATE TABLE IF NOT EXISTS pipeline_probe (n int)")
            await conn.execute("TRUNCATE pipeline_probe")
            before = proxy.chunks
            async with pipeline(conn):
                await conn.execute("INSERT INTO pipeline_probe VALUES (1)")
            unseen = await (await other.execute("SELECT count(*) FROM pipeline_probe")).fetchone()
            async with pipeline(conn):
                await conn.execute("INSERT INTO pipeline_probe VALUES (2)")
                await conn.execute("COMMIT")
            written = proxy.chunks - before - 1  # the other connection's SELECT
            seen = await (await other.execute("SELECT count(*) FROM pipeline_probe")).fetchone()
            await conn.execute("DROP TABLE pipeline_probe")
            return written, (unseen, seen)

    written, (unseen, seen) = _run(scenario())
    assert written == 2
    assert unseen == (0,) and seen == (2,)
