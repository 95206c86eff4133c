"""The reward link's token: 22 base62 characters of a keyed HMAC of the redemption id; the same
from the API, a resend and after a key rotation; nothing in the database from which it could be
derived but its sha256."""

from __future__ import annotations

import base64
import uuid

from service.kit.security.links import ALPHABET, TOKEN_LENGTH, base62, reward_token, token_hash
from tests.conftest import import_codes_for, post_redemption
from tests.test_holders import path_of
from tests.test_holders import public_url as public_url  # noqa: F401  (the autouse fixture)
from tests.test_key_rotation import use_keys as use_keys  # noqa: F401  (the fixture)

NEW_KEY = base64.b64encode(b"n" * 32).decode()
OLD_KEY = base64.b64encode(b"k" * 32).decode()  # tests/conftest.py's key


def test_a_token_is_22_base62_characters_carrying_128_bits():
    assert 62**TOKEN_LENGTH > 2**128 > 62 ** (TOKEN_LENGTH - 1)
    assert base62(0) == "0" * 22 and base62(2**128 - 1) == "7n42DGM5Tflk9n8mt7Fhc7"
    assert len({base62(uuid.uuid4().int >> 2) for _ in range(1000)}) == 1000


def test_without_the_link_key_a_token_cannot_be_told_from_random_bits(db):
    """The token is a keyed pseudo-random function of the id (HMAC-SHA256): under another key the
    same ids give tokens that agree with ours on about half their 128 bits, as random ones would."""
    import dataclasses
    import os

    from service.kit.security.crypto import get_vault

    ours = get_vault()
    theirs = dataclasses.replace(ours, fingerprint_key=os.urandom(32))

    def bits(token: str) -> int:
        value = 0
        for ch in token:
            value = value * 62 + ALPHABET.index(ch)
        return value

    agreeing = [
        128 - bin(bits(reward_token(ours, i)) ^ bits(reward_token(theirs, i))).count("1")
        for i in (uuid.uuid4() for _ in range(200))
    ]
    assert 56 <= sum(agreeing) / len(agreeing) <= 72  # 64 expected; a key-independent part would show


def test_different_redemptions_get_unrelated_tokens(db):
    from service.kit.security.crypto import get_vault

    vault = get_vault()
    first, second = uuid.uuid4(), uuid.uuid4()
    a, b = reward_token(vault, first), reward_token(vault, second)
    assert a != b and len(a) == len(b) == 22 and set(a + b) <= set(ALPHABET)
    assert reward_token(vault, first) == a  # derived, the same every time


def test_a_link_keeps_working_after_the_encryption_key_is_rotated(client, keys, use_keys):
    import_codes_for("ARAY-CINEMA-2000", 2)
    made = post_redemption(client, keys).json()
    before = made["reward_url"]
    assert client.get(path_of(before)).status_code == 200
    use_keys(f"{NEW_KEY},{OLD_KEY}")  # the rotation: a new current key, the old one still readable
    again = client.get(f"/v1/redemptions/{made['id']}", headers=keys.header("loyalty")).json()
    assert again["reward_url"] == before
    assert client.get(path_of(before)).status_code == 200
    made_after = post_redemption(client, keys, msisdn="87019990001").json()
    assert client.get(path_of(made_after["reward_url"])).status_code == 200


def test_the_token_hash_is_sha256_of_the_token():
    import hashlib

    assert token_hash("abc") == hashlib.sha256(b"abc").digest()
