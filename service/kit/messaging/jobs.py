"""The one place that names the work the workers do: its queues and its Dramatiq actors. The outbox
writes these names into its rows, the relay publishes them, the worker processes consume them."""

from __future__ import annotations

from dataclasses import dataclass

# Reward SMS have worker processes of their own: a slow webhook receiver or a bulk campaign never
# stands in front of a code somebody is waiting for.
SMS_QUEUE = "sms_transactional"
BULK_SMS_QUEUE = "sms_bulk"
WEBHOOK_QUEUE = "webhooks"


@dataclass(frozen=True)
class Job:
    queue: str
    actor: str


REWARD_SMS = Job(SMS_QUEUE, "deliver_reward_sms")  # kwargs: redemption_id, send
REWARD_SMS_BATCH = Job(SMS_QUEUE, "deliver_reward_sms_batch")  # kwargs: jobs [[redemption_id, send], ...]
# SMS to holders that are not the reward: one-time codes and certificates from the reward page go
# with the reward SMS; expiry reminders are bulk and wait out quiet hours. kwargs: notice_id
NOTICE_SMS = Job(SMS_QUEUE, "deliver_notice_sms")
BULK_NOTICE_SMS = Job(BULK_SMS_QUEUE, "deliver_bulk_notice_sms")
# A campaign's work: its runner turns the next lines into redemptions at the campaign's rate (kwargs:
# campaign_id), on a queue of its own; its lines' reward SMS go bulk and wait out quiet hours
# (kwargs: redemption_id, send).
CAMPAIGN_QUEUE = "campaigns"
RUN_CAMPAIGN = Job(CAMPAIGN_QUEUE, "run_campaign")
CAMPAIGN_SMS = Job(BULK_SMS_QUEUE, "deliver_campaign_sms")
WEBHOOK = Job(WEBHOOK_QUEUE, "send_webhook")  # kwargs: event_id
WEBHOOKS = Job(WEBHOOK_QUEUE, "send_webhooks")  # kwargs: event_ids
