"""The reward page's link: `PUBLIC_URL/r/<token>`, where the token is 128 bits in base62 (22
characters: every character of an SMS costs), derived from the redemption id with HMAC-SHA256 under
a key of its own. The token is never stored: the redemption keeps sha256(token), by which the page
finds it, and the API, a resend or a reminder derive the same token again from the id.

The key is HKDF("reward-link") of the vault's fingerprint key, which a key rotation (ENCRYPTION_KEYS)
re-wraps but never changes (service/kit/security/crypto.py), so a link keeps working across
rotations. Knowing a redemption id (the loyalty system does) gives nothing without the key."""

from __future__ import annotations

import hashlib
import hmac
import uuid
from functools import lru_cache

from service.kit.config import get_settings
from service.kit.security.crypto import Vault, derive

ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
TOKEN_LENGTH = 22  # 62**22 > 2**128
TOKEN_BITS = 128
PATH = "/r/"


@lru_cache(maxsize=4)
def _link_key(fingerprint_key: bytes) -> bytes:
    return derive(fingerprint_key, b"reward-link")


# Two base62 digits at a time: half the big-integer divisions on the redemption path.
_PAIRS = [a + b for a in ALPHABET for b in ALPHABET]


def base62(value: int, length: int = TOKEN_LENGTH) -> str:
    """`value` in `length` base62 digits (most significant first; length even)."""
    out = []
    for _ in range(length // 2):
        value, pair = divmod(value, 3844)
        out.append(_PAIRS[pair])
    return "".join(reversed(out))


def reward_token(vault: Vault, redemption_id: uuid.UUID) -> str:
    """The redemption's token: 128 bits of HMAC-SHA256(link key, id), in base62."""
    digest = hmac.digest(_link_key(vault.fingerprint_key), redemption_id.bytes, "sha256")
    return base62(int.from_bytes(digest[: TOKEN_BITS // 8], "big"))


def token_hash(token: str) -> bytes:
    """What the redemption row keeps (and the page looks up): sha256 of the token."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


def well_formed(token: str) -> bool:
    return len(token) == TOKEN_LENGTH and all(ch in ALPHABET for ch in token)


def public_url() -> str | None:
    """PUBLIC_URL without a trailing slash; None when not configured (no links then)."""
    url = get_settings().public_url
    return url.rstrip("/") if url else None


def public_host() -> str | None:
    """The host name of PUBLIC_URL: the origin a one-time code SMS is bound to (`@host #code`)."""
    url = public_url()
    if url is None:
        return None
    host = url.split("://", 1)[-1].split("/", 1)[0]
    return host.rsplit("@", 1)[-1].split(":", 1)[0] or None


def reward_url(token: str) -> str | None:
    base = public_url()
    return f"{base}{PATH}{token}" if base else None


def link_of(vault: Vault, redemption_id: uuid.UUID) -> str | None:
    base = public_url()
    return f"{base}{PATH}{reward_token(vault, redemption_id)}" if base else None
