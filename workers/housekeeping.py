"""Time-driven work every worker pod may run: each step is idempotent and bounded, so pods running it
at the same time only share it."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import structlog

from service.balances.service import check_balances
from service.campaigns.service import send_runners, stalled
from service.cards import lockout
from service.cards.service import expire_cards
from service.delivery.retention import purge_delivered_provider_ids
from service.delivery.service import settle_sandbox_receipts
from service.events.webhooks import purge_finished
from service.holders.reminders import remind_expiring_cards
from service.kit.config import get_settings
from service.kit.db.engine import driver, transaction
from service.kit.db.retention import in_batches
from service.kit.messaging.outbox import purge_published
from service.kit.reliability.idempotency import purge_expired
from service.kit.security import throttle

log = structlog.get_logger("housekeeping")


def retention(now: datetime | None = None) -> dict[str, int]:
    """Removes what is finished and older than RETENTION_DAYS, each kind in batches of its own
    transaction: published outbox rows, delivered SMS's provider ids, finished webhook events.
    Reconciliation records, redemptions and cards are never removed."""
    settings = get_settings()
    before = (now or datetime.now(UTC)) - timedelta(days=settings.retention_days)
    size = settings.retention_batch

    def run(purge: Callable[..., int]) -> int:
        def step() -> int:
            with transaction() as session:
                return int(purge(driver(session), before=before, limit=size))

        return in_batches(step, batch=size, batches=settings.retention_batches)

    return {
        "outbox_purged": run(purge_published),
        "sms_provider_ids_purged": run(purge_delivered_provider_ids),
        "webhook_events_purged": run(purge_finished),
    }


# A running campaign's runner steps about every second; one quiet for this long lost its next step (a
# worker killed between a step's commit and sending the next one) and is sent again. A spare step is
# harmless: steps take their lines with SKIP LOCKED.
CAMPAIGN_STALL = timedelta(seconds=30)


def restart_stalled_campaigns(now: datetime | None = None) -> int:
    now = now or datetime.now(UTC)
    with transaction() as session:
        db = driver(session)
        found = stalled(db, before=now - CAMPAIGN_STALL)
        for campaign_id in found:  # none of its chains stepped: all of them are sent again
            send_runners(db, campaign_id, now=now)
        return len(found)


def housekeeping() -> dict[str, int]:
    """Purge expired idempotency keys and forgotten PIN and sign-in failure counts, expire cards past
    their date and book their breakage, queue the expiry reminders that are due, send the low-stock and
    low-budget events of balances that crossed their threshold, deliver the sandbox's delayed
    receipts, and remove finished rows past their retention."""
    with transaction() as session:
        purged = purge_expired(session)
    with transaction() as session:
        forgotten = throttle.purge(driver(session), datetime.now(UTC), older_than=lockout.FORGET_AFTER)
    with transaction() as session:
        expired = expire_cards(session, datetime.now(UTC)).expired
    with transaction() as session:
        reminded = remind_expiring_cards(session, datetime.now(UTC))
    events = check_balances().by_event()
    receipts = settle_sandbox_receipts()
    removed = retention()
    campaigns = restart_stalled_campaigns()
    if (
        campaigns
        or purged
        or forgotten
        or expired
        or reminded
        or receipts
        or any(events.values())
        or any(removed.values())
    ):
        log.info(
            "housekeeping",
            idempotency_keys_purged=purged,
            failure_counts_purged=forgotten,
            cards_expired=expired,
            expiry_reminders=reminded,
            sandbox_receipts=receipts,
            campaigns_restarted=campaigns,
            **events,
            **removed,
        )
    return {
        "idempotency_keys_purged": purged,
        "failure_counts_purged": forgotten,
        "cards_expired": expired,
        "expiry_reminders": reminded,
        "sandbox_receipts": receipts,
        "campaigns_restarted": campaigns,
        **events,
        **removed,
    }
