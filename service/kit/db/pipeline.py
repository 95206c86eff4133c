"""The hot path's pipelines on its asyncio connections, which are in autocommit: psycopg would
otherwise send its own BEGIN ahead of a pipeline and wait for it (one more round trip), so the
pipeline opens the transaction itself, as its first statement.

Only psycopg's public API: `conn.pipeline()` and `conn.execute()`. psycopg sends each statement of a
pipeline as it is executed (without waiting for its result) and the Sync when the pipeline ends, then
reads every result: one round trip per pipeline, in as many writes as statements.

Until issue 23 this module overrode three private methods of psycopg 3.3's pipeline class so that a
pipeline's statements went out in one write (and psycopg was pinned below 3.4 for it). bench/pipeline.py
runs the API with each version on one database in alternating rounds: the one-write version's
throughput was 0.99 of this one's and its API CPU per redemption 1.01 (docs/performance.md, step 6),
no difference the benchmark can tell from noise, so only the public API is used.
tests/test_pgpipeline.py holds it to one round trip per pipeline."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from psycopg import AsyncConnection, AsyncPipeline
from psycopg.pq import TransactionStatus


@asynccontextmanager
async def pipeline(conn: AsyncConnection[Any]) -> AsyncIterator[AsyncPipeline]:
    """conn.pipeline() on an autocommit connection, opening a transaction as its first statement
    unless one is open already (a transaction may span pipelines; it ends with the caller's COMMIT).
    Leaving it sends the Sync and collects every result: one round trip."""
    begin = conn.info.transaction_status == TransactionStatus.IDLE
    async with conn.pipeline() as p:
        if begin:
            await conn.execute("BEGIN")
        yield p
