"""What the benchmarks share: a migrated database with the demo catalog (embedded PostgreSQL under a
temporary folder unless DATABASE_URL is set)."""

from __future__ import annotations

import base64
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Stack:
    work: Path  # a temporary folder for the benchmark's files
    env: dict[str, str]  # DATABASE_URL, ENCRYPTION_KEY, ... for the processes it starts


@contextmanager
def demo_database(prefix: str) -> Iterator[Stack]:
    from service.kit.embedded import EmbeddedPostgres

    work = Path(tempfile.mkdtemp(prefix=prefix))
    env = {
        **os.environ,
        "ENCRYPTION_KEY": os.environ.get("ENCRYPTION_KEY")
        or base64.b64encode(secrets.token_bytes(32)).decode(),
        "LOG_LEVEL": "WARNING",
    }
    pg = None
    if not env.get("DATABASE_URL"):
        pg = EmbeddedPostgres(work / "pg")
        env["DATABASE_URL"] = pg.start()

    def rewards(*cli: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "service.cli", *cli], env=env, check=True, capture_output=True, text=True
        )

    try:
        rewards("migrate")
        rewards("catalog", "apply", str(ROOT / "catalog" / "demo"))
        yield Stack(work, env)
    finally:
        if pg:
            pg.stop()
        shutil.rmtree(work, ignore_errors=True)


# A code as the pool stores one (service.pools.service, service.kit.security.crypto): its HMAC-SHA256
# fingerprint (32 bytes), its last 4 characters, and code_enc, the AES-GCM nonce (12 bytes), the
# ciphertext of an 18-character code ("BENCH-" and 12 hex digits, as bench/redeem.py imports them) and
# the tag (16 bytes): 46 bytes, random here (nothing in a benchmark decrypts them), with the id of the
# key they would be encrypted under. Set-based SQL writes millions of them in seconds.
CODE_ENC_BYTES = 12 + 18 + 16
RANDOM_FINGERPRINT = "sha256(uuid_send(gen_random_uuid()))"
RANDOM_CODE_ENC = (
    "substring(uuid_send(gen_random_uuid()) || uuid_send(gen_random_uuid()) || uuid_send(gen_random_uuid())"
    f" FROM 1 FOR {CODE_ENC_BYTES})"
)


def last4_sql(seed: str) -> str:
    return f"lpad(({seed} % 10000)::text, 4, '0')"


def available_codes_sql(
    product: int,
    partner: int,
    count: int,
    *,
    key_id: str,
    expires: str = "now() + interval '1 year'",
    step: str = "1 second",
) -> str:
    """INSERT of `count` available codes of `product`, shaped like encrypted ones, each expiring
    `step` after the one before from `expires` on (through the table's constraints and indexes)."""
    return (
        "INSERT INTO codes (product_id, partner_id, fingerprint, last4, code_enc, key_id, expires_at)"
        f" SELECT {product}, {partner}, {RANDOM_FINGERPRINT}, {last4_sql('i')}, {RANDOM_CODE_ENC},"
        f" '{key_id}', {expires} + i * interval '{step}'"
        f" FROM generate_series(1, {count}) AS i"
    )


def current_key_id(env: dict[str, str]) -> str:
    """The id of the key codes are encrypted under (ENCRYPTION_KEYS' first, else ENCRYPTION_KEY)."""
    from service.kit.security.crypto import key_id_of, parse_keys

    return key_id_of(parse_keys(env.get("ENCRYPTION_KEYS") or env["ENCRYPTION_KEY"])[0])
