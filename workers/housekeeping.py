"""Time-driven work every worker pod may run: each step is idempotent and bounded, so pods running it
at the same time only share it."""

from __future__ import annotations

from datetime import UTC, datetime

import structlog

from service.balances.service import check_balances
from service.cards import lockout
from service.cards.service import expire_cards
from service.delivery.service import settle_sandbox_receipts
from service.holders.reminders import remind_expiring_cards
from service.kit.db.engine import driver, transaction
from service.kit.reliability.idempotency import purge_expired
from service.kit.security import throttle

log = structlog.get_logger("housekeeping")


def housekeeping() -> dict[str, int]:
    """Purge expired idempotency keys and forgotten PIN and sign-in failure counts, expire cards past
    their date and book their breakage, queue the expiry reminders that are due, send the low-stock and
    low-budget events of balances that crossed their threshold, and deliver the sandbox's delayed
    receipts."""
    with transaction() as session:
        purged = purge_expired(session)
    with transaction() as session:
        forgotten = throttle.purge(driver(session), datetime.now(UTC), older_than=lockout.FORGET_AFTER)
    with transaction() as session:
        expired = expire_cards(session, datetime.now(UTC)).expired
    with transaction() as session:
        reminded = remind_expiring_cards(session, datetime.now(UTC))
    events = check_balances()
    receipts = settle_sandbox_receipts()
    if purged or forgotten or expired or reminded or receipts or any(events.values()):
        log.info(
            "housekeeping",
            idempotency_keys_purged=purged,
            failure_counts_purged=forgotten,
            cards_expired=expired,
            expiry_reminders=reminded,
            sandbox_receipts=receipts,
            **events,
        )
    return {
        "idempotency_keys_purged": purged,
        "failure_counts_purged": forgotten,
        "cards_expired": expired,
        "expiry_reminders": reminded,
        "sandbox_receipts": receipts,
        **events,
    }
