"""The HTTP gateway provider: JSON submit with a bearer token, 5xx retried, receipts by callback."""

from __future__ import annotations

import json
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.conftest import post_redemption
from tests.harness.delivery import Worker, flush_queues, statuses, wait_until


class Gateway:
    def __init__(self, fail_first: int = 0):
        self.requests: list[dict] = []
        self.fail_first = fail_first
        gateway = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if gateway.fail_first > 0:
                    gateway.fail_first -= 1
                    self.send_response(503)
                    self.end_headers()
                    return
                gateway.requests.append({"body": body, "auth": self.headers.get("Authorization")})
                reply = json.dumps({"message_id": f"gw-{len(gateway.requests)}"}).encode()
                self.send_response(202)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/sms"


@pytest.fixture
def gateway(services, keys):
    from workers.broker import broker
    from workers.relay import Relay

    flush_queues()
    gw = Gateway(fail_first=2)
    env = {
        **os.environ,
        "SMS_PROVIDER": "http",
        "SMS_HTTP_URL": gw.url,
        "SMS_HTTP_TOKEN": "gw-token",
        "LOG_LEVEL": "WARNING",
    }
    relay = Relay(broker).start()
    worker = Worker(env).start()
    yield gw
    worker.stop()
    relay.stop()
    gw.server.shutdown()


def test_the_gateway_gets_the_sms_after_its_5xx_and_a_receipt_callback_delivers_it(
    client, keys, gateway, monkeypatch
):
    monkeypatch.setenv("SMS_RECEIPT_SECRET", "receipt-secret")
    from service.kit.config import reset_settings_cache

    reset_settings_cache()
    post_redemption(client, keys, offer="gift-card-5000", points=5000, msisdn="87012345000")
    wait_until(lambda: statuses().get("sent") == 1, 40, what="sent through the gateway")
    (request,) = gateway.requests
    assert request["auth"] == "Bearer gw-token"
    assert request["body"]["to"] == "+77012345000" and request["body"]["encoding"] == "UCS-2"
    assert "ПИН" in request["body"]["text"] and request["body"]["segments"] >= 2
    refused = client.post(
        "/v1/sms/receipts/http",
        json={"message_id": "gw-1", "status": "delivered"},
        headers={"X-Receipt-Secret": "wrong"},
    )
    assert refused.status_code == 401
    accepted = client.post(
        "/v1/sms/receipts/http",
        json={"message_id": "gw-1", "status": "delivered"},
        headers={"X-Receipt-Secret": "receipt-secret"},
    )
    assert accepted.status_code == 200 and accepted.json() == {"known": True}
    assert statuses() == {"delivered": 1}
    reset_settings_cache()
