"""Codes and PINs at rest: AES-256-GCM with a random nonce; an HMAC-SHA256 fingerprint identifies a
code (dedupe, exports, partner reconciliation) without revealing it. Both keys are derived with HKDF
from the one ENCRYPTION_KEY, so rotating that key is one secret to manage."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from dataclasses import dataclass
from functools import lru_cache

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from service.config import get_settings

NONCE_BYTES = 12


def _derive(master: bytes, purpose: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"rewards/" + purpose).derive(master)


@dataclass(frozen=True)
class Vault:
    aead: AESGCM
    fingerprint_key: bytes

    @classmethod
    def from_key(cls, key_b64: str) -> Vault:
        master = base64.b64decode(key_b64, validate=True)
        if len(master) != 32:
            raise ValueError("ENCRYPTION_KEY must be base64 of exactly 32 bytes")
        return cls(AESGCM(_derive(master, b"aead")), _derive(master, b"fingerprint"))

    def encrypt(self, plaintext: str, context: bytes) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        return nonce + self.aead.encrypt(nonce, plaintext.encode(), context)

    def decrypt(self, blob: bytes, context: bytes) -> str:
        return self.aead.decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], context).decode()

    def fingerprint(self, code: str) -> bytes:
        return hmac.new(self.fingerprint_key, code.encode(), hashlib.sha256).digest()


@lru_cache
def get_vault() -> Vault:
    key = get_settings().encryption_key
    if key is None:
        raise RuntimeError("ENCRYPTION_KEY is not set (embedded mode generates one in the data folder)")
    return Vault.from_key(key.get_secret_value())


def fingerprint_hex(fingerprint: bytes) -> str:
    return fingerprint.hex()
