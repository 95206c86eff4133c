"""Secrets at rest: codes, PINs, card numbers and webhook secrets are AES-256-GCM encrypted (random
nonce) under one of the ENCRYPTION_KEYS, and every encrypted row carries the id of its key
(`key_id`), so a rotation re-encrypts row by row while every key it moves away from still reads.

Fingerprints (HMAC-SHA256: code dedupe, card lookup, exports, the append-only ledger) are keyed by one
fingerprint key that never changes: a rotation that changed it would make old fingerprints
incomparable with new ones, and the ledger's cannot be rewritten. It is kept in the database
(`vault_keys`), wrapped by an encryption key and re-wrapped by a rotation; it is made once, on the
first start of a release that knows it, from the oldest key configured, which is the HKDF of that
key that earlier releases used, so existing fingerprints stay valid."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import structlog
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from psycopg import Connection
from psycopg.rows import class_row

from service.kit.config import get_settings
from service.kit.db.engine import driver, transaction

NONCE_BYTES = 12
FINGERPRINT = "fingerprint"
log = structlog.get_logger("crypto")


class UnknownKey(LookupError):
    """Data encrypted under a key that ENCRYPTION_KEYS does not hold (removed too early)."""


def derive(master: bytes, purpose: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"rewards/" + purpose).derive(master)


def key_id_of(master: bytes) -> str:
    """A key's id: derived from the key itself (an HKDF output, which says nothing about the key),
    so there are no labels to configure or to get wrong."""
    return derive(master, b"key-id")[:6].hex()


def parse_keys(value: str) -> list[bytes]:
    """ENCRYPTION_KEYS: base64 keys of 32 bytes separated by commas or spaces, the current one first."""
    keys = []
    for item in (part for part in re.split(r"[,\s]+", value.strip()) if part):
        try:
            master = base64.b64decode(item, validate=True)
        except ValueError:
            raise ValueError("each encryption key must be base64 of exactly 32 bytes") from None
        if len(master) != 32:
            raise ValueError("each encryption key must be base64 of exactly 32 bytes")
        keys.append(master)
    if not keys:
        raise ValueError("no encryption key given")
    return keys


@dataclass(frozen=True)
class Keyring:
    """The configured encryption keys by id; new data is encrypted under the first (current) one."""

    current: str
    ids: tuple[str, ...]  # current first, then the older ones in the order given
    aeads: dict[str, AESGCM]
    masters: dict[str, bytes]

    @classmethod
    def of(cls, masters: list[bytes]) -> Keyring:
        ids = tuple(key_id_of(m) for m in masters)
        by_id = dict(zip(ids, masters, strict=True))
        return cls(ids[0], ids, {i: AESGCM(derive(m, b"aead")) for i, m in by_id.items()}, by_id)

    @property
    def oldest(self) -> bytes:
        return self.masters[self.ids[-1]]

    def encrypt(self, plaintext: bytes, context: bytes) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        return nonce + self.aeads[self.current].encrypt(nonce, plaintext, context)

    def decrypt(self, blob: bytes, context: bytes, key_id: str | None) -> bytes:
        """Under the key `key_id`; a row written before key ids (None) is tried under each key, which
        AES-GCM makes safe: a wrong key fails its tag, it never yields wrong plaintext."""
        nonce, sealed = blob[:NONCE_BYTES], blob[NONCE_BYTES:]
        if key_id is not None:
            aead = self.aeads.get(key_id)
            if aead is None:
                raise UnknownKey(f"encrypted under key {key_id}, which ENCRYPTION_KEYS does not hold")
            return aead.decrypt(nonce, sealed, context)
        for candidate in self.ids:
            try:
                return self.aeads[candidate].decrypt(nonce, sealed, context)
            except InvalidTag:
                continue
        raise UnknownKey("encrypted under none of the keys in ENCRYPTION_KEYS")


@dataclass(frozen=True)
class Vault:
    keyring: Keyring
    fingerprint_key: bytes

    @property
    def key_id(self) -> str:
        """The id to store beside what `encrypt` returns."""
        return self.keyring.current

    def encrypt(self, plaintext: str, context: bytes) -> bytes:
        return self.keyring.encrypt(plaintext.encode(), context)

    def decrypt(self, blob: bytes, context: bytes, key_id: str | None = None) -> str:
        return self.keyring.decrypt(blob, context, key_id).decode()

    def fingerprint(self, code: str) -> bytes:
        return hmac.new(self.fingerprint_key, code.encode(), hashlib.sha256).digest()


@lru_cache
def get_keyring() -> Keyring:
    settings = get_settings()
    if settings.encryption_keys is not None:
        return Keyring.of(parse_keys(settings.encryption_keys.get_secret_value()))
    if settings.encryption_key is None:
        raise RuntimeError("ENCRYPTION_KEY is not set (embedded mode generates one in the data folder)")
    return Keyring.of(parse_keys(settings.encryption_key.get_secret_value()))


def _context(purpose: str) -> bytes:
    return b"vault-key:" + purpose.encode()


@dataclass(frozen=True)
class _StoredKey:
    key_id: str | None
    key_enc: bytes


def load_vault_key(db: Connection[Any], keyring: Keyring, purpose: str, make: bytes) -> bytes:
    """The stored key `purpose`, made from `make` the first time (every process makes the same one, so
    two starting at once agree whichever row wins)."""
    db.execute(
        "INSERT INTO vault_keys (purpose, key_id, key_enc) VALUES (%(purpose)s, %(key_id)s, %(key_enc)s)"
        " ON CONFLICT DO NOTHING",
        {"purpose": purpose, "key_id": keyring.current, "key_enc": keyring.encrypt(make, _context(purpose))},
    )
    stored = (
        db.cursor(row_factory=class_row(_StoredKey))
        .execute("SELECT key_id, key_enc FROM vault_keys WHERE purpose = %(purpose)s", {"purpose": purpose})
        .fetchone()
    )
    assert stored is not None, "the row was there or has just been inserted"
    return keyring.decrypt(bytes(stored.key_enc), _context(purpose), stored.key_id)


@lru_cache
def get_vault() -> Vault:
    """The keyring and the fingerprint key, read from the database once per process."""
    keyring = get_keyring()
    with transaction() as session:
        fingerprint_key = load_vault_key(
            driver(session), keyring, FINGERPRINT, derive(keyring.oldest, FINGERPRINT.encode())
        )
    return Vault(keyring, fingerprint_key)


def vault_key_context(purpose: str) -> bytes:
    return _context(purpose)


def fingerprint_hex(fingerprint: bytes) -> str:
    return fingerprint.hex()
