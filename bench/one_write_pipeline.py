"""The comparison subject of bench/pipeline.py, not used by the service: service/kit/db/pipeline.py as
it was until issue 23, which overrode private methods of psycopg 3.3's pipeline (and pinned psycopg
below 3.4 for it). bench/pipeline.py runs the API with this module in place of the public one.

One write per pipeline on the hot path's asyncio connections, which are in autocommit: psycopg
would otherwise send its own BEGIN ahead of a pipeline and wait for it (one more round trip), so the
pipeline opens the transaction itself.

psycopg sends each statement of a pipeline as it is executed: every `execute()` polls the socket and
flushes libpq's buffer, so a redemption's two pipelines cost some nine writes to PostgreSQL, each
waking its backend (and twice as many polls). Here the statements of a pipeline go into libpq's
buffer (which, in pipeline mode, libpq flushes by itself only past 64 kB), and the Sync at the end of
the pipeline sends them all in one write. Results are read as before, when the pipeline ends.

This overrides three methods of psycopg's pipeline class (`_communicate_gen`, `_enqueue_sync`,
`_fetch_gen`); It holds only on psycopg 3.3."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from psycopg import AsyncConnection, AsyncPipeline
from psycopg.abc import PQGen
from psycopg.pq import TransactionStatus


class _OneWritePipeline(AsyncPipeline):
    _synced = False

    def _enqueue_sync(self) -> None:
        super()._enqueue_sync()
        self._synced = True

    def _communicate_gen(self) -> PQGen[None]:
        # Each command goes into libpq's buffer; the Sync's own (PQpipelineSync) sends them all. Only
        # then is the socket polled and results read, as psycopg does.
        while self.command_queue:
            self.command_queue.popleft()()
        if self._synced:
            yield from super()._communicate_gen()

    def _fetch_gen(self, *, flush: bool) -> PQGen[None]:
        # After a Sync the server sends every result by itself: no flush request (another write).
        synced, self._synced = self._synced, False
        yield from super()._fetch_gen(flush=flush and not synced)


@asynccontextmanager
async def pipeline(conn: AsyncConnection[Any]) -> AsyncIterator[AsyncPipeline]:
    """conn.pipeline() on an autocommit connection, opening a transaction as its first statement
    unless one is open already (a transaction may span pipelines; it ends with the caller's COMMIT),
    and sending the pipeline's statements in one write when it ends."""
    begin = conn.info.transaction_status == TransactionStatus.IDLE
    if conn._pipeline is None:  # not nested in another pipeline
        conn._pipeline = _OneWritePipeline(conn)
    async with conn.pipeline() as p:
        if begin:
            await conn.execute("BEGIN")
        yield p
