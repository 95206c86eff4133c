"""Settings from the environment (and `.env`), one object for API, workers and CLI."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class RetryClass(BaseModel):
    """How an SMS is retried after one class of error: up to `max_attempts` errors of the class, the
    delay doubling from `first_delay_seconds` to at most `max_delay_seconds` (with jitter)."""

    max_attempts: int = Field(default=5, ge=1)
    first_delay_seconds: float = Field(default=2.0, gt=0)
    max_delay_seconds: float = Field(default=60.0, gt=0)


class SmsRetry(BaseModel):
    """A provider's retry policy per error class (docs/delivery.md). Permanent errors are never
    retried; `unavailable` (no session with the provider) is retried until the SMS's deadline, and
    its `max_attempts` is not used."""

    transient: RetryClass = RetryClass(max_attempts=5, first_delay_seconds=2, max_delay_seconds=60)
    throttled: RetryClass = RetryClass(max_attempts=30, first_delay_seconds=1, max_delay_seconds=30)
    unavailable: RetryClass = RetryClass(max_attempts=1, first_delay_seconds=1, max_delay_seconds=30)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    # Unset URLs mean "embedded default": PostgreSQL and Redis started under data_dir.
    database_url: str | None = None
    redis_url: str | None = None
    data_dir: Path = Field(default=Path("./var"), validation_alias="REWARDS_DATA_DIR")

    # base64 of 32 random bytes; in embedded mode generated into the data folder once.
    encryption_key: SecretStr | None = None
    # Several keys for a rotation: base64 keys separated by commas, the current one first, then the
    # older ones still needed to read what they encrypted (wins over ENCRYPTION_KEY). docs/operations.md
    encryption_keys: SecretStr | None = None

    db_pool_size: int = 20
    db_max_overflow: int = 10
    # Connections of the asyncio pool that serves redemptions in each API process. Requests beyond it
    # queue for a connection, in order; more transactions at once than the database has cores only
    # wait on each other and on the scheduler (2 cores, 2 API processes, 16 clients: 4 gave p99
    # 48 ms, 10 gave 72-97 ms; docs/performance.md). Sum over API processes ~ 2 x database cores.
    db_hot_pool_size: int = 4
    db_lock_timeout_ms: int = 5000
    db_connect_timeout_seconds: int = 5  # libpq's connect_timeout (2 at least)
    db_pool_timeout_seconds: float = 10.0
    # How long a redemption waits for a connection of its pool before it is answered 503 with
    # Retry-After. Under load the wait is tens of milliseconds; it runs long only while the database is
    # away (the pool reconnecting), and then the loyalty system's retry is worth more than a request
    # held open (bench/faults.py: with 10 s, 57 requests of a restart outlived the client's timeout).
    db_hot_pool_timeout_seconds: float = 2.0
    # Threads per API process for blocking handlers. Few: more only queue on the GIL and stretch the tail.
    api_threads: int = 4
    # uvicorn worker processes of `rewards api`/`serve`: one per core is what keeps the tail short.
    api_workers: int = 2
    # An API process keeps the keys it authenticated this long at most. A revocation empties every
    # process's cache at once (a NOTIFY each one listens to); this bounds it only for a process whose
    # listening connection is down (docs/integration.md, Authentication).
    api_key_cache_seconds: float = Field(default=5.0, ge=0)
    log_level: str = "INFO"
    log_json: bool = True
    max_body_bytes: int = 10 * 1024 * 1024
    catalog_path: Path | None = None
    # The base of the reward pages' links in SMS and of `reward_url` (e.g. https://r.example.kz): a
    # short host, every character of an SMS counts. Unset: no links (`rewards serve` sets its own).
    public_url: str | None = Field(default=None, pattern=r"^https?://[^\s/?#]+(/[^\s?#]*)?$")
    # The holders' pages (/r/<token>, /card): requests per minute per client address and per token,
    # and card number + PIN tries per address per 15 minutes (besides each card's own PIN lock).
    holder_rate_per_address: int = Field(default=120, ge=1)
    holder_rate_per_token: int = Field(default=30, ge=1)
    holder_card_tries_per_address: int = Field(default=10, ge=1)

    sms_provider: Literal["file", "smpp", "http"] = "file"
    sms_file: Path | None = None
    smpp_host: str = "127.0.0.1"
    smpp_port: int = 2775
    smpp_system_id: str = ""
    smpp_password: SecretStr | None = None
    # The SMPP session (docs/delivery.md, "SMPP session"): one bind_transceiver, or a transmitter and
    # a receiver; the system_type of the bind; submit_sm in flight at once; TLS (an SMSC behind stunnel).
    smpp_bind: Literal["transceiver", "transmitter+receiver"] = "transceiver"
    smpp_system_type: str = Field(default="", max_length=12)
    smpp_window: int = Field(default=64, ge=1, le=1024)
    smpp_enquire_link_seconds: float = Field(default=20.0, gt=0)
    smpp_response_timeout_seconds: float = Field(default=10.0, gt=0)
    smpp_unbind_timeout_seconds: float = Field(default=2.0, gt=0)
    smpp_tls: bool = False
    smpp_tls_ca_file: Path | None = None
    smpp_tls_verify: bool = True
    smpp_tls_server_name: str | None = None
    smpp_tls_cert_file: Path | None = None
    smpp_tls_key_file: Path | None = None
    # Overrides of the SMPP status classes, e.g. {"0x45": "permanent", "generic_nack": "transient"}
    smpp_error_classes: dict[str, Literal["permanent", "transient", "throttled"]] = {}
    # Retry policies per provider and error class (JSON, e.g. {"transient": {"max_attempts": 3}})
    sms_retry_smpp: SmsRetry = SmsRetry()
    sms_retry_http: SmsRetry = SmsRetry()
    sms_http_url: str | None = None
    sms_http_token: SecretStr | None = None
    sms_receipt_secret: SecretStr | None = None
    # Sandbox keys' SMS always go to this file (default: sms-sandbox.jsonl under the data folder), and
    # the magic number of the delayed receipt is delivered this long after it was sent.
    sms_sandbox_file: Path | None = None
    sandbox_receipt_delay_seconds: float = 60.0

    sms_deadline_hours: float = 24.0
    sms_in_doubt_seconds: float = 120.0
    sms_rate_limit: int = 200  # submit_sm PDUs (SMS parts) per second per provider, across all workers
    # Campaigns' SMS (the bulk queue): their own cap, within sms_rate_limit when they share the
    # account with the reward SMS. A bulk account (a second SMPP bind, or an HTTP key of its own)
    # takes them off the transactional account altogether.
    sms_bulk_rate_limit: int = 50
    # Runner chains per running campaign (each a run_campaign message that sends itself on): lines are
    # taken with SKIP LOCKED and paced together, so more chains only add speed where a worker has
    # threads or processes to spare and the database has headroom.
    campaign_runners: int = Field(default=2, ge=1, le=16)
    # The share of each runner chain's time spent running lines: after a chunk, the chain rests
    # (1 - share) / share of the chunk's time. A campaign at no cap otherwise takes every core the
    # database has, and the on-demand redemptions wait in the run queue behind it (bench/campaign.py
    # flat out: the CPU waited for 69-88 % of the time at 300,000 lines; a p99 of 183 ms over
    # 1,000,000).
    campaign_runner_share: float = Field(default=0.5, gt=0, le=1)
    smpp_bulk_system_id: str | None = None
    smpp_bulk_password: SecretStr | None = None
    sms_http_bulk_token: SecretStr | None = None
    # The relay packs up to this many waiting reward SMS into one job: one claim, one window of
    # submits and one outcome transaction for all of them.
    sms_batch_size: int = 50
    dramatiq_heartbeat_timeout_ms: int = 60_000
    # Chance (per million fetches) that a worker runs broker maintenance, which re-queues the
    # messages of workers that died. Dramatiq's default is 1000.
    dramatiq_maintenance_chance: int = 1000
    # How long an idle Dramatiq consumer may sleep before it looks at its queue again. Dramatiq's
    # default (1 s) would add up to a second to a reward SMS that arrives on a quiet queue.
    dramatiq_worker_timeout_ms: int = 100
    outbox_stale_seconds: int = 300
    # Retention (issue 28): published outbox rows, delivered SMS's provider ids and finished webhook
    # events are removed this long after they finished, by the housekeeping, in batches of
    # RETENTION_BATCH rows, at most RETENTION_BATCHES of each kind per run (once a minute).
    # Reconciliation records, redemptions and cards are never removed.
    retention_days: int = Field(default=30, ge=1)
    retention_batch: int = Field(default=5000, ge=1)
    retention_batches: int = Field(default=20, ge=1)

    # Supervision by `rewards serve` (and of the Dramatiq commands of `rewards worker`): a child that
    # exits is started again after a backoff doubling from RESTART_BACKOFF_SECONDS to
    # RESTART_BACKOFF_MAX_SECONDS; after RESTART_MAX_TRIES failed restarts in a row the command gives
    # up and exits 1. A child up RESTART_STABLE_SECONDS counts its tries from zero again.
    restart_max_tries: int = Field(default=5, ge=0)
    restart_backoff_seconds: float = Field(default=0.25, gt=0)
    restart_backoff_max_seconds: float = Field(default=15.0, gt=0)
    restart_stable_seconds: float = Field(default=30.0, gt=0)
    # How often the API, the workers and the relay check their database and Redis for /healthz,
    # /readyz and the rewards_dependency_up gauge.
    health_check_interval_seconds: float = Field(default=5.0, gt=0)

    stock_low_threshold: int = 50
    stock_expiring_days: int = 30
    # A `budget.low` webhook when a program has spent this share of its monthly budget.
    budget_low_percent: int = Field(default=90, ge=1, le=100)

    # Webhooks also carry the Rewards-* headers of earlier releases (docs/delivery.md: until when).
    webhook_legacy_headers: bool = True

    # The Prometheus exporter of `rewards worker` and `rewards relay` (0: none); workers write their
    # metrics under PROMETHEUS_MULTIPROC_DIR, which these commands make when it is not set.
    metrics_port: int = 9191
    metrics_host: str = "0.0.0.0"
    # The exporter's gauges from SQL and Redis are computed at most this often, however many scrape.
    metrics_cache_seconds: float = 10.0

    # Tracing (OpenTelemetry, OTLP over HTTP): off unless an endpoint is set; then FastAPI,
    # psycopg, Redis and the Dramatiq hop are traced (service/kit/observability/tracing.py).
    otel_exporter_otlp_endpoint: str | None = None
    otel_service_name: str | None = None
    otel_traces_sampler_arg: float = Field(default=1.0, ge=0.0, le=1.0)

    @property
    def embedded(self) -> bool:
        return not self.database_url or not self.redis_url


@lru_cache
def get_settings() -> Settings:
    return Settings()


def reset_settings_cache() -> None:
    get_settings.cache_clear()
