"""docs/integration.md's retry example runs as written against the service: a retry with the same
order id replays the first answer, and a refusal is final."""

from __future__ import annotations

import re
from pathlib import Path

from tests.conftest import import_codes_for, redemption_body

GUIDE = Path(__file__).parent.parent / "docs" / "integration.md"


def _retry_example() -> dict:
    blocks = re.findall(r"```python\n(.*?)```", GUIDE.read_text(), flags=re.S)
    source = next(block for block in blocks if "def redeem(" in block)
    namespace: dict = {}
    exec(compile(source, str(GUIDE), "exec"), namespace)
    return namespace


def test_the_guides_retry_example_redeems_once_and_replays_the_first_answer(client, keys):
    import_codes_for("ARAY-CINEMA-2000", 2)
    redeem = _retry_example()["redeem"]
    body = redemption_body(external_id="order-77")
    first = redeem(client, keys.loyalty, body, "77")
    again = redeem(client, keys.loyalty, body, "77")
    assert first.status_code == 201
    assert again.status_code == 201 and again.headers["Idempotent-Replayed"] == "true"
    assert again.json()["id"] == first.json()["id"]


def test_the_guides_retry_example_returns_a_refusal_without_retrying_it(client, keys):
    redeem = _retry_example()["redeem"]
    refused = redeem(client, keys.loyalty, redemption_body(external_id="order-78"), "78")
    assert refused.status_code == 409 and refused.json()["code"] == "out_of_stock"
