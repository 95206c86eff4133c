"""Prometheus metrics. Labels are route templates, never raw paths (which may hold phone numbers)."""

from prometheus_client import Counter, Gauge, Histogram

HTTP_REQUESTS = Counter("rewards_http_requests_total", "HTTP requests", ["method", "route", "status"])
HTTP_LATENCY = Histogram(
    "rewards_http_request_duration_seconds",
    "HTTP request latency",
    ["method", "route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
CODES_IMPORTED = Counter("rewards_codes_imported_total", "Codes accepted into pools", ["sku"])
CARD_PIN_FAILURES = Counter(
    "rewards_card_pin_failures_total", "Wrong PINs (or unknown numbers) offered for universal cards"
)
CARD_LOCKS = Counter(
    "rewards_card_locks_total",
    "Card numbers locked for every client after wrong PINs from several clients (RewardsCardLocked alerts)",
)
CARD_PIN_THROTTLED = Counter(
    "rewards_card_pin_throttled_total", "Wrong PINs after which their client waits before its next try"
)
STAFF_SIGN_IN_THROTTLED = Counter(
    "rewards_staff_sign_in_throttled_total", "Console sign-in attempts held back after wrong passwords"
)
CARD_EXCHANGES = Counter("rewards_card_exchanges_total", "Universal card exchanges for certificates", ["sku"])
CARD_RATE_LIMITED = Counter(
    "rewards_card_rate_limited_total", "Card verify/exchange requests refused by the rate limit"
)
CARDS_EXPIRED = Counter("rewards_cards_expired_total", "Universal cards expired by the expiry job")
SMS_OUTCOMES = Counter("rewards_sms_outcomes_total", "SMS attempts by outcome", ["outcome"])
OUTBOX_PUBLISHED = Counter("rewards_outbox_published_total", "Outbox rows published to the broker", ["actor"])
CODES_TAKEN = Counter(
    "rewards_codes_taken_total", "Codes taken from pools, by redemptions and card exchanges", ["sku"]
)
WEBHOOK_DELIVERIES = Counter(
    "rewards_webhook_deliveries_total", "Webhook delivery attempts by result", ["result"]
)
# Per process 1 while its SMPP session is bound, summed over the live processes of a pod; only
# processes that bind have the series (its absence is not "unbound": the provider is another one).
SMPP_BOUND = Gauge(
    "rewards_smpp_sessions_bound", "SMPP sessions bound to the SMSC", ["smsc"], multiprocess_mode="livesum"
)

# Every label value known in advance exists from the start, at zero: a rate over a series that appears
# only with its first increment misses that increment, and an alert on it sees nothing until then.
for _outcome in ("sent", "delivered", "failed", "transient", "in_doubt"):
    SMS_OUTCOMES.labels(_outcome)
for _result in ("delivered", "retry", "given_up"):
    WEBHOOK_DELIVERIES.labels(_result)
