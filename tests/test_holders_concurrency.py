"""A card exchanged at once from several places (two tabs with their one-time codes, a partner's desk)
is never overspent; and a guessed token is answered like a cancelled one: the same work, the same
page, no telling time difference."""

from __future__ import annotations

import threading
import uuid
from datetime import UTC, datetime

from sqlalchemy import text

from service.cards import service as cards
from service.holders import service as holders
from service.kit.db.engine import new_session, transaction
from service.kit.http.errors import Problem
from tests.conftest import import_codes_for, post_redemption
from tests.test_cards import issue_card
from tests.test_holders import deliver_notices, otp_from, path_of
from tests.test_holders import public_url as public_url  # noqa: F401  (the autouse fixture)


def _otps(card, token: str, sku: str, n: int, folder) -> list[tuple[uuid.UUID, str]]:
    made = []
    for _ in range(n):
        with transaction() as s:
            reward = holders.find_reward(s, token)
            sent = holders.request_otp(s, reward, sku, locale="ru", now=datetime.now(UTC))
        made.append(sent.id)
    codes = [otp_from(sms) for sms in deliver_notices(folder)[-n:]]
    return list(zip(made, codes, strict=True))


def test_online_exchanges_and_a_partners_at_once_never_overspend_a_card(client, keys, tmp_path):
    import_codes_for("KITAP-CERT-2500", 10)
    card = issue_card(client, keys)  # 5 000.00
    token = (
        client.get(f"/v1/redemptions/{card.redemption_id}", headers=keys.header("loyalty"))
        .json()["reward_url"]
        .rsplit("/", 1)[1]
    )
    otps = _otps(card, token, "KITAP-CERT-2500", 3, tmp_path)
    start = threading.Barrier(4)
    outcomes: list[str] = []

    def online(otp_id, code) -> None:
        start.wait()
        try:
            with transaction() as s:
                reward = holders.find_reward(s, token)
                holders.confirm_otp(s, reward, otp_id, code, locale="ru", now=datetime.now(UTC))
            outcomes.append("online")
        except holders.Refused as refused:
            outcomes.append(refused.key)

    def desk() -> None:
        start.wait()
        try:
            with transaction() as s:
                cards.exchange(
                    s, card.number, card.pin, "KITAP-CERT-2500", partner="kitap-books", now=datetime.now(UTC),
                    api_key_id=None,
                )  # fmt: skip
            outcomes.append("partner")
        except Problem as problem:
            outcomes.append(problem.code)

    threads = [threading.Thread(target=online, args=otp) for otp in otps] + [threading.Thread(target=desk)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    done = [o for o in outcomes if o in ("online", "partner")]
    assert len(outcomes) == 4 and len(done) == 2, outcomes  # 2 x 2 500.00 = the card's 5 000.00
    assert set(outcomes) - {"online", "partner"} <= {
        "problem.insufficient_balance",
        "problem.card_exhausted",
        "card_exhausted",
        "insufficient_balance",
    }
    with new_session() as s:
        balance, status = s.execute(
            text("SELECT balance_minor, status FROM cards WHERE id = :id"), {"id": card.card_id}
        ).one()
        spent = s.execute(text("SELECT coalesce(sum(amount_minor), 0) FROM exchanges")).scalar_one()
        records = s.execute(
            text("SELECT count(*) FROM reconciliation_records WHERE type = 'exchange'")
        ).scalar_one()
    assert (balance, status, spent, records) == (0, "exhausted", 500000, 2)


def test_one_code_submitted_twice_at_once_exchanges_once(client, keys, tmp_path):
    import_codes_for("ARAY-CERT-1000", 5)
    card = issue_card(client, keys)
    token = (
        client.get(f"/v1/redemptions/{card.redemption_id}", headers=keys.header("loyalty"))
        .json()["reward_url"]
        .rsplit("/", 1)[1]
    )
    ((otp_id, code),) = _otps(card, token, "ARAY-CERT-1000", 1, tmp_path)
    start = threading.Barrier(2)
    results: list[uuid.UUID] = []

    def submit() -> None:
        start.wait()
        with transaction() as s:
            reward = holders.find_reward(s, token)
            results.append(
                holders.confirm_otp(s, reward, otp_id, code, locale="ru", now=datetime.now(UTC)).exchange_id
            )

    threads = [threading.Thread(target=submit) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(results) == 2 and results[0] == results[1]
    with new_session() as s:
        assert s.execute(text("SELECT count(*) FROM exchanges")).scalar_one() == 1
        assert (
            s.execute(
                text("SELECT balance_minor FROM cards WHERE id = :id"), {"id": card.card_id}
            ).scalar_one()
            == 400000
        )


def test_a_guessed_and_a_cancelled_token_cost_the_same_work(client, keys, monkeypatch):
    """The same statement with parameters of the same shape, one indexed lookup by the token's hash,
    and the same page; nothing else touches the database on the way to the 404."""
    from service.kit.security.links import base62

    import_codes_for("ARAY-CINEMA-2000", 1)
    made = post_redemption(client, keys).json()
    client.post(f"/v1/redemptions/{made['id']}/cancel", headers=keys.header("loyalty"))
    cancelled = path_of(made["reward_url"]).rsplit("/", 1)[1]
    guessed = base62(uuid.uuid4().int >> 2)
    real_driver = holders.driver
    seen: list[tuple[str, list[str], list[int]]] = []

    class Recording:
        def __init__(self, conn):
            self.conn = conn

        def cursor(self, *args, **kwargs):
            cursor = self.conn.cursor(*args, **kwargs)

            class Cursor:
                def execute(self, query, params=None):
                    seen.append((query, sorted(params), [len(v) for v in params.values()]))
                    return cursor.execute(query, params)

            return Cursor()

    monkeypatch.setattr(holders, "driver", lambda session: Recording(real_driver(session)))
    answers = {}
    for token in (cancelled, guessed):
        answers[token] = client.get("/r/" + token)
    assert answers[cancelled].status_code == answers[guessed].status_code == 404
    assert answers[cancelled].text == answers[guessed].text
    assert len(seen) == 2 and seen[0] == seen[1] and seen[0][2] == [32]  # sha256 of the token
    with new_session() as s:
        # The lookup can be one probe of the unique index. (A test's table of a page or two may be read
        # whole by the planner's own choice, once its statistics say how small it is.)
        s.execute(text("SET LOCAL enable_seqscan = off"))
        plan = (
            s.execute(text("EXPLAIN SELECT 1 FROM redemptions WHERE link_hash = :h"), {"h": b"x" * 32})
            .scalars()
            .all()
        )
    assert any("uq_redemptions_link_hash" in line for line in plan)
