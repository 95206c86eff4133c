"""No full code, PIN, API key or phone number reaches a log line (SPEC invariant 6)."""

from __future__ import annotations

import io
import json
import logging

import pytest
import structlog

from service.kit.observability.logging import configure_logging, mask_secrets


@pytest.fixture
def captured_logs():
    stream = io.StringIO()
    configure_logging("DEBUG", json=True, stream=stream)
    yield stream
    configure_logging("INFO", json=True)


def test_requests_carrying_secrets_leave_none_in_the_logs(client, keys, captured_logs):
    code, pin, phone_local, phone_e164 = "LEAKCHECK-CODE-5521", "804117", "87017654321", "+77017654321"
    client.post(
        "/v1/products/KITAP-BOOKS-5000/codes",
        content=f"{code},{pin},2030-01-01\n",
        headers={**keys.header("admin"), "Content-Type": "text/csv"},
    )
    client.post(
        "/v1/products/KITAP-BOOKS-5000/codes",
        content=json.dumps({"codes": [{"code": code, "pin": pin}]}),
        headers={**keys.header("partner"), "Content-Type": "application/json"},
    )
    client.get(f"/v1/subscribers/{phone_local}/redemptions", headers=keys.header("support"))
    client.get(
        f"/v1/subscribers/{phone_e164}/redemptions?msisdn={phone_e164}", headers=keys.header("support")
    )
    client.get("/v1/programs", headers={"Authorization": f"Bearer {keys.admin}x"})
    structlog.get_logger("test").info(
        "delivery",
        to=phone_e164,
        code=code,
        pin=pin,
        api_key=keys.admin,
        text=f"Код: {code}, ПИН {pin}, key {keys.admin}",
    )
    logging.getLogger("thirdparty").warning("calling %s with Bearer %s", phone_e164, keys.admin)

    output = captured_logs.getvalue()
    lines = [json.loads(line) for line in output.splitlines()]
    assert any(line.get("route") == "/v1/products/{sku}/codes" for line in lines)
    assert any(line.get("event") == "codes_uploaded" for line in lines)
    for secret in (
        code,
        pin,
        phone_local,
        phone_e164,
        phone_e164[1:],
        keys.admin,
        keys.admin.split("_", 2)[2],
    ):
        assert secret not in output, f"{secret[:3]}… leaked into the logs"
    assert "7654321"[-4:] in output  # masked forms keep the last 4 for support


def test_masking_keeps_the_last_four_of_codes_and_phones_and_drops_secrets():
    event = mask_secrets(
        None,
        "info",
        {
            "code": "ABCD-EFGH-1234",
            "msisdn": "+77011234567",
            "pin": "1234",
            "authorization": "Bearer rk_abc_def",
            "nested": {"card_number": "9398123412341234"},
        },
    )
    assert event["code"].endswith("1234") and "ABCD" not in event["code"]
    assert event["msisdn"].endswith("4567") and "701123" not in event["msisdn"]
    assert event["pin"] == "[REDACTED]" and event["authorization"] == "[REDACTED]"
    assert event["nested"]["card_number"].endswith("1234") and "9398" not in event["nested"]["card_number"]
