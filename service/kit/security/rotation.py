"""Key rotation: every secret at rest re-encrypted under the current encryption key, in batches.

Each batch is one short transaction that reads rows not yet under the current key (`FOR UPDATE SKIP
LOCKED`: a row a redemption holds right now is left for the next pass), decrypts them under their own
key, encrypts them under the current one and writes them back with its id. A rotation cut at any
point (Ctrl-C, a killed pod) leaves every row readable, under its old key or its new one, and running
it again carries on with the rows still to do. Fingerprints are not touched: their key never changes
(service/kit/security/crypto.py)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from psycopg.rows import class_row, scalar_row

from service.kit.db.engine import driver, new_session, one, transaction
from service.kit.security.crypto import Keyring, get_keyring, vault_key_context

RowKey = str | int  # a target's `key`: a vault key's purpose, or a bigint id


@dataclass(frozen=True)
class Target:
    """A table of encrypted rows: ordered by `key` (of SQL type `key_type`), its encrypted columns
    with their AES-GCM contexts (None: the context depends on the row's key)."""

    table: str
    key: str
    key_type: str
    columns: tuple[tuple[str, bytes | None], ...]

    def context(self, context: bytes | None, row_key: RowKey) -> bytes:
        # Only vault_keys has no fixed context, and its key is the purpose (text).
        return context if context is not None else vault_key_context(str(row_key))


@dataclass(frozen=True)
class _Encrypted:
    """A row to re-encrypt: its key, the key id it is under, its encrypted columns in the target's order."""

    row_key: RowKey
    key_id: str | None
    blobs: list[bytes | None]


TARGETS = (
    Target("vault_keys", "purpose", "text", (("key_enc", None),)),
    Target("program_webhook_secrets", "id", "bigint", (("secret_enc", b"webhook-secret"),)),
    Target("cards", "id", "bigint", (("number_enc", b"card-number"), ("pin_enc", b"card-pin"))),
    Target("codes", "id", "bigint", (("code_enc", b"code"), ("pin_enc", b"pin"))),
)


def remaining(keyring: Keyring | None = None) -> dict[str, int]:
    """Rows per table not yet under the current key."""
    keyring = keyring or get_keyring()
    with new_session() as session:
        db = driver(session)
        counts = db.cursor(row_factory=scalar_row)
        return {
            t.table: one(
                counts.execute(
                    f"SELECT count(*) FROM {t.table} WHERE key_id IS DISTINCT FROM %(current)s",
                    {"current": keyring.current},
                ).fetchone()
            )
            for t in TARGETS
        }


@dataclass(frozen=True)
class _KeyUse:
    key_id: str | None
    rows: int


def usage() -> dict[str, dict[str | None, int]]:
    """Rows per table and key id (None: written before key ids), to tell when an old key is unused."""
    with new_session() as session:
        uses = driver(session).cursor(row_factory=class_row(_KeyUse))
        return {
            t.table: {
                u.key_id: u.rows
                for u in uses.execute(
                    f"SELECT key_id, count(*) AS rows FROM {t.table} GROUP BY key_id"
                ).fetchall()
            }
            for t in TARGETS
        }


def rotate_batch(
    target: Target, keyring: Keyring, *, after: RowKey | None, size: int
) -> tuple[int, RowKey | None]:
    """Re-encrypts up to `size` rows after the key `after`; returns (rows, last key)."""
    columns = [c for c, _ in target.columns]
    with transaction() as session:
        db = driver(session)
        rows = (
            db.cursor(row_factory=class_row(_Encrypted))
            .execute(
                f"SELECT {target.key} AS row_key, key_id, ARRAY[{', '.join(columns)}] AS blobs"
                f" FROM {target.table}"
                f" WHERE key_id IS DISTINCT FROM %(current)s"
                + (f" AND {target.key} > %(after)s" if after is not None else "")
                + f" ORDER BY {target.key} LIMIT %(size)s FOR UPDATE SKIP LOCKED",
                {"current": keyring.current, "after": after, "size": size},
            )
            .fetchall()
        )
        if not rows:
            return 0, after
        fresh: list[list[bytes | None]] = [[] for _ in columns]
        for row in rows:
            for i, ((_, context), blob) in enumerate(zip(target.columns, row.blobs, strict=True)):
                if blob is None:
                    fresh[i].append(None)
                    continue
                ctx = target.context(context, row.row_key)
                fresh[i].append(keyring.encrypt(keyring.decrypt(bytes(blob), ctx, row.key_id), ctx))
        sets = ", ".join(f"{c} = u.c{i}" for i, c in enumerate(columns))
        arrays = ", ".join(f"%(c{i})s::bytea[]" for i in range(len(columns)))
        names = ", ".join(f"c{i}" for i in range(len(columns)))
        db.execute(
            f"UPDATE {target.table} t SET {sets}, key_id = %(current)s"
            f" FROM unnest(%(keys)s::{target.key_type}[], {arrays}) AS u(k, {names})"
            f" WHERE t.{target.key} = u.k",
            {
                "current": keyring.current,
                "keys": [r.row_key for r in rows],
                **{f"c{i}": v for i, v in enumerate(fresh)},
            },
        )
    return len(rows), rows[-1].row_key


def rotate(
    *,
    batch_size: int = 1000,
    pause: float = 0.0,
    limit: int | None = None,
    progress: Callable[[str, int], None] | None = None,
) -> dict[str, int]:
    """Moves every table onto the current key; returns rows re-encrypted per table. `limit` stops after
    that many rows in all (a slice for a quiet hour); `pause` sleeps between batches to spare the
    database. Rows skipped because a transaction held them are taken by a further pass."""
    keyring = get_keyring()
    done = {t.table: 0 for t in TARGETS}
    for target in TARGETS:
        while True:  # passes over the table, until a pass finds nothing it can take
            moved, after = 0, None
            while True:
                left = None if limit is None else limit - sum(done.values())
                if left is not None and left <= 0:
                    return done
                n, after = rotate_batch(
                    target, keyring, after=after, size=batch_size if left is None else min(batch_size, left)
                )
                if n == 0:
                    break
                moved += n
                done[target.table] += n
                if progress:
                    progress(target.table, n)
                if pause:
                    time.sleep(pause)
            if moved == 0:
                break
    return done
