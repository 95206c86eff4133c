"""Timing oracles: does an answer's time tell an attacker what its text does not?

Three pairs that must look alike, measured in one process against an embedded PostgreSQL and Redis
with the demo catalog (the tests prove each pair does the same statements and the same hash or PIN
check; this measures what that buys on the wall clock):

- `POST /v1/cards/verify`: an unknown card number against a real card with a wrong PIN;
- the console sign-in: an unknown e-mail against a real account with a wrong password, each try as a
  first failure (argon2's verification), and again with both held back by the throttle;
- the reward page `GET /r/<token>`: a guessed token against the token of a cancelled reward.

Each pair is called back to back, alternating which goes first, N times (each wrong PIN on a fresh
card, each sign-in from a fresh address, so no throttle delay interferes). It prints the medians, their
ratio and how often the first of the pair was the faster, and ends with `ok` when every ratio is within
15 % of 1 and every "faster" share within 30-70 %, otherwise `FAIL`.

    .venv/bin/python bench/oracles.py [--pairs 60]
"""

from __future__ import annotations

import argparse
import base64
import itertools
import os
import re
import secrets
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._stack import demo_database  # noqa: E402

PUBLIC = "https://r.example.kz"
STAFF = "anna@operator.kz"
_phones = itertools.count(1)


def pairwise(
    first: Callable[[int], object],
    second: Callable[[int], object],
    pairs: int,
    before: Callable[[], object] = lambda: None,
) -> dict:
    """Times `first(i)` and `second(i)`, alternating which goes first; `before()`, untimed, ahead of
    each call."""
    took: dict[str, list[float]] = {"first": [], "second": []}
    faster = 0
    for i in range(pairs):
        order = [("first", first), ("second", second)]
        if i % 2:
            order.reverse()
        one: dict[str, float] = {}
        for name, call in order:
            before()
            started = time.perf_counter()
            call(i)
            one[name] = time.perf_counter() - started
        took["first"].append(one["first"])
        took["second"].append(one["second"])
        faster += one["first"] < one["second"]
    a, b = statistics.median(took["first"]), statistics.median(took["second"])
    return {"first_ms": a * 1000, "second_ms": b * 1000, "ratio": a / b, "first_faster": faster / pairs}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pairs", type=int, default=60)
    args = parser.parse_args()

    from service.kit.embedded import EmbeddedRedis

    with demo_database("oracles-") as stack:
        redis = EmbeddedRedis(stack.work / "redis")
        os.environ.update(stack.env)
        # The page's per-token and per-address rate limits would answer the link pairs with 429, and the
        # per-key limit of card lookups the verify pairs.
        os.environ.update(
            REDIS_URL=redis.start(),
            PUBLIC_URL=PUBLIC,
            LOG_LEVEL="WARNING",
            HOLDER_RATE_PER_TOKEN="100000",
            HOLDER_RATE_PER_ADDRESS="100000",
            CARD_RATE_LIMIT="100000",
        )
        try:
            results = run(args.pairs, stack.work)
        finally:
            redis.stop()
    lines = {
        "card verify, unknown number / wrong PIN": results["card"],
        "console sign-in, unknown e-mail / wrong password": results["sign_in"],
        "console sign-in held back, unknown e-mail / known": results["held"],
        "reward page, guessed token / cancelled reward": results["token"],
    }
    ok = True
    for name, r in lines.items():
        good = abs(r["ratio"] - 1) <= 0.15 and 0.3 <= r["first_faster"] <= 0.7
        ok &= good
        print(
            f"{name}: medians {r['first_ms']:.2f} / {r['second_ms']:.2f} ms, ratio {r['ratio']:.3f}, "
            f"first faster in {r['first_faster']:.0%} of {args.pairs} pairs{'' if good else '  <-- apart'}"
        )
    print(
        f"oracles {args.pairs} pairs: card {results['card']['ratio']:.2f}; "
        f"sign-in {results['sign_in']['ratio']:.2f}; held back {results['held']['ratio']:.2f}; "
        f"token {results['token']['ratio']:.2f}; " + ("ok" if ok else "FAIL")
    )
    sys.exit(0 if ok else 1)


def run(pairs: int, work: Path) -> dict:
    from fastapi.testclient import TestClient
    from sqlalchemy import text

    from service.kit.observability.logging import configure_logging

    configure_logging("WARNING", json=True)

    import service.models  # noqa: F401
    from service.app import create_app
    from service.auth.service import create_key
    from service.cards.service import new_card_number
    from service.console import accounts
    from service.kit.db.engine import new_session, transaction
    from service.kit.security.crypto import get_vault
    from service.pools.service import RawLine, import_codes

    with transaction() as s:
        loyalty = create_key(s, role="loyalty", name="bench", programs=["mobile-bonus"]).key
        partner = create_key(s, role="partner", name="bench", partner="aray-cinema").key
        import_codes(
            s, "ARAY-CINEMA-2000", [RawLine(1, f"ORACLE-{secrets.token_hex(6)}", None, None)], source="bench"
        )
        accounts.create_account(s, email=STAFF, password="a long enough password 1", role="support")

    def redeem(offer: str, points: int) -> dict:
        body = {
            "program": "mobile-bonus",
            "tariff": "basic",
            "offer": offer,
            "msisdn": f"8701{next(_phones):07d}",
            "points": points,
            "external_id": uuid.uuid4().hex,
        }
        answer = client.post(
            "/v1/redemptions",
            json=body,
            headers={"Authorization": f"Bearer {loyalty}", "Idempotency-Key": uuid.uuid4().hex},
        )
        assert answer.status_code == 201, answer.text
        return answer.json()

    with TestClient(create_app(), raise_server_exceptions=False) as client:
        # Cards: one fresh card per pair, so each wrong PIN is its number's first (no delay).
        cards = []
        vault = get_vault()
        for _ in range(pairs + 2):
            made = redeem("gift-card-5000", 5000)
            with new_session() as s:
                number_enc = s.execute(
                    text(
                        "SELECT c.number_enc FROM cards c JOIN redemptions r ON r.card_id = c.id"
                        " WHERE r.id = :id"
                    ),
                    {"id": made["id"]},
                ).scalar_one()
            cards.append(vault.decrypt(bytes(number_enc), b"card-number"))
        partner_headers = {"Authorization": f"Bearer {partner}"}

        def verify(number: str) -> None:
            answer = client.post(
                "/v1/cards/verify", json={"number": number, "pin": "000000"}, headers=partner_headers
            )
            assert answer.status_code == 422, answer.text

        verify(new_card_number())
        verify(cards[-1])  # warm both paths
        card = pairwise(lambda i: verify(new_card_number()), lambda i: verify(cards[i]), pairs)

        # Sign-in, through the domain function the page calls (the page's address is the TCP peer's,
        # which one process cannot vary): each attempt from an address of its own, so no throttle starts.
        def sign_in(email: str, i: int) -> None:
            with transaction() as s:
                try:
                    accounts.sign_in(
                        s,
                        email,
                        "wrong password!",
                        address=f"10.{i // 250}.{i % 250}.{1 + (email == STAFF)}",
                        now=datetime.now(UTC),
                    )
                except accounts.SignInRefused:
                    return
            raise AssertionError("a wrong password signed in")

        def unthrottled() -> None:  # every try as a first failure: the path with argon2's verification
            with transaction() as s:
                s.execute(text("DELETE FROM auth_throttle"))

        unthrottled()
        sign_in("nobody@operator.kz", 10_000)
        sign_in(STAFF, 10_001)
        signin = pairwise(
            lambda i: sign_in("nobody@operator.kz", i), lambda i: sign_in(STAFF, i), pairs, before=unthrottled
        )
        # And held back: both e-mails over their count from one address, so every try is refused early.
        for _ in range(12):
            sign_in("nobody@operator.kz", 20_000)
            sign_in(STAFF, 20_000)
        nobody, known = "nobody@operator.kz", STAFF
        held = pairwise(lambda i: sign_in(nobody, 20_000), lambda i: sign_in(known, 20_000), pairs)

        # Reward page: a cancelled reward's link against made-up tokens of the same form.
        made = redeem("cinema-2000", 2000)
        cancelled = client.post(
            f"/v1/redemptions/{made['id']}/cancel", headers={"Authorization": f"Bearer {loyalty}"}
        )
        assert cancelled.status_code == 200, cancelled.text
        path = made["reward_url"][len(PUBLIC) :]

        def page(p: str) -> None:
            answer = client.get(p)
            assert answer.status_code == 404, answer.status_code

        def guessed() -> str:
            raw = base64.b64encode(secrets.token_bytes(24)).decode()
            return "/r/" + re.sub(r"[^A-Za-z0-9]", "", raw)[:22]

        page(path)
        page(guessed())
        token = pairwise(lambda i: page(guessed()), lambda i: page(path), pairs)
    return {"card": card, "sign_in": signin, "held": held, "token": token}


if __name__ == "__main__":
    main()
