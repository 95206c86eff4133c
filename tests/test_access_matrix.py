"""Every operation of the API against every kind of key (issue 29: the probe's matrix, kept as a test).

The operations come from the OpenAPI document (openapi/openapi.json, which test_openapi.py keeps equal
to the code): an operation without a row in MATRIX fails here, so a new one cannot skip the table.
Each row says which keys are admitted (they must get neither 401, 403 nor 404: the request is built
so that an admitted key succeeds or meets a business refusal), which are admitted to the operation but
ask for something outside their scope (404, as if it did not exist); every other key is refused with
403, and a missing, unknown or revoked key with 401. The admitted roles must be the roles the
document's `security` names for the operation.

State, built per operation through the domain functions and the API: program A is mobile-bonus
(a card redemption R, a cancelled redemption whose webhook event is E), program B home-internet,
partner X aray-cinema (R's card can be exchanged for X's certificates), partner Y kitap-books."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from service.auth.service import create_key, revoke_key
from service.kit.db.engine import new_session, transaction
from tests.conftest import import_codes_for

DOCUMENT = json.loads((Path(__file__).parent.parent / "openapi" / "openapi.json").read_text())
OPERATIONS = sorted((method.upper(), path) for path, item in DOCUMENT["paths"].items() for method in item)

# kind of key -> (role, how it is made)
KINDS: dict[str, tuple[str | None, dict[str, Any]]] = {
    "admin": ("admin", {}),
    "loyalty_a": ("loyalty", {"programs": ["mobile-bonus"]}),
    "loyalty_b": ("loyalty", {"programs": ["home-internet"]}),
    "sandbox_a": ("loyalty", {"programs": ["mobile-bonus"], "sandbox": True}),
    "partner_x": ("partner", {"partner": "aray-cinema"}),
    "partner_y": ("partner", {"partner": "kitap-books"}),
    "finance": ("finance", {}),
    "support": ("support", {}),
    "support_b": ("support", {"programs": ["home-internet"]}),
    "approver": ("approver", {"owner": "matrix-approver@example.kz"}),
    "revoked": ("admin", {}),
    "unknown": (None, {}),
    "missing": (None, {}),
}
UNAUTHENTICATED = {"revoked", "unknown", "missing"}
MONTH = "2026-10"  # closed in the fixture: its documents exist
# What a key outside its scope is told: the answer for something that does not exist.
NOT_FOUND_CODES = ("not_found", "unknown_program", "unknown_product", "unknown_partner", "card_not_found")


@dataclass(frozen=True)
class Row:
    """`ok`: admitted kinds; `hidden`: admitted to the operation, but the thing asked for is outside
    their scope (404). Other keys: 403; no valid key: 401. `public`: no key needed, everyone is ok."""

    ok: str = ""
    hidden: str = ""
    public: bool = False
    query: str = ""
    body: Any = None
    csv: str | None = None
    every: dict[str, int] = field(default_factory=dict)  # a fixed status for every kind

    def expected(self, kind: str) -> str | int:
        if self.every:
            return self.every[kind] if kind in self.every else self.every["*"]
        if self.public:
            return "ok"
        if kind in UNAUTHENTICATED:
            return 401
        if kind in self.ok.split():
            return "ok"
        if kind in self.hidden.split():
            return 404
        return 403


REASON = {"reason": "matrix probe"}
MATRIX: dict[tuple[str, str], Row] = {
    ("GET", "/healthz"): Row(public=True),
    ("GET", "/readyz"): Row(public=True),
    ("GET", "/v1/programs"): Row(ok="admin loyalty_a loyalty_b sandbox_a finance support support_b"),
    ("GET", "/v1/programs/{program}"): Row(
        ok="admin loyalty_a sandbox_a finance support", hidden="loyalty_b support_b"
    ),
    ("GET", "/v1/programs/{program}/offers"): Row(
        ok="admin loyalty_a sandbox_a finance support", hidden="loyalty_b support_b"
    ),
    ("GET", "/v1/products"): Row(ok="admin partner_x partner_y finance support support_b"),
    ("POST", "/v1/products/{sku}/codes"): Row(
        ok="admin partner_x", hidden="partner_y", csv="code\n{kind}-1\n"
    ),
    ("GET", "/v1/stock"): Row(ok="admin partner_x partner_y support support_b"),
    ("POST", "/v1/redemptions"): Row(ok="admin loyalty_a sandbox_a", hidden="loyalty_b", body="redemption"),
    ("GET", "/v1/redemptions"): Row(ok="admin loyalty_a loyalty_b sandbox_a support support_b"),
    ("GET", "/v1/redemptions/{redemption_id}"): Row(
        ok="admin loyalty_a support", hidden="loyalty_b sandbox_a support_b"
    ),
    ("GET", "/v1/subscribers/{msisdn}/redemptions"): Row(ok="admin support support_b"),
    ("POST", "/v1/redemptions/{redemption_id}/cancel"): Row(
        ok="admin loyalty_a support", hidden="loyalty_b sandbox_a support_b"
    ),
    ("POST", "/v1/redemptions/{redemption_id}/resend"): Row(
        ok="admin loyalty_a support", hidden="loyalty_b sandbox_a support_b"
    ),
    ("GET", "/v1/reconciliation/records"): Row(ok="admin finance", query="format=jsonl"),
    ("GET", "/v1/periods/{month}"): Row(ok="admin finance", query="program=mobile-bonus"),
    ("POST", "/v1/periods/{month}/close"): Row(ok="admin finance", query="program=mobile-bonus"),
    ("GET", "/v1/periods/{month}/documents"): Row(ok="admin finance", query="program=mobile-bonus"),
    ("GET", "/v1/periods/{month}/documents/{kind}"): Row(ok="admin finance", query="program=mobile-bonus"),
    ("POST", "/v1/reconciliation/partners/{partner}"): Row(
        ok="admin finance", query=f"period={MONTH}", csv="code\nX-1\n"
    ),
    # The gateway's receipts authenticate with its shared secret, never with an API key.
    ("POST", "/v1/sms/receipts/{provider}"): Row(
        every={"*": 401}, body={"message_id": "m-1", "status": "delivered"}
    ),
    ("GET", "/v1/webhooks/events"): Row(ok="admin loyalty_a loyalty_b sandbox_a support support_b"),
    ("POST", "/v1/webhooks/events/{event_id}/replay"): Row(
        ok="admin loyalty_a support", hidden="loyalty_b sandbox_a support_b"
    ),
    ("POST", "/v1/cards/verify"): Row(ok="admin partner_x partner_y", body="card"),
    # Admin has no products of its own: only a partner exchanges, into its own certificates.
    ("POST", "/v1/cards/exchanges"): Row(ok="partner_x", hidden="partner_y", body="exchange"),
    ("GET", "/v1/cards/by-redemption/{card}"): Row(ok="admin support", hidden="support_b"),
    ("POST", "/v1/cards/by-redemption/{card}/block"): Row(
        ok="admin support", hidden="support_b", body=REASON
    ),
    ("POST", "/v1/cards/by-redemption/{card}/unblock"): Row(
        ok="admin support", hidden="support_b", body=REASON
    ),
    ("POST", "/v1/cards/by-redemption/{card}/unlock"): Row(
        ok="admin support", hidden="support_b", body=REASON
    ),
    ("GET", "/v1/settlements/{partner}"): Row(
        ok="admin partner_x finance", hidden="partner_y", query=f"period={MONTH}"
    ),
    ("POST", "/v1/campaigns"): Row(
        ok="admin loyalty_a support", hidden="loyalty_b support_b", body="campaign"
    ),
    ("GET", "/v1/campaigns"): Row(ok="admin loyalty_a loyalty_b finance support support_b approver"),
    ("GET", "/v1/campaigns/{campaign_id}"): Row(
        ok="admin loyalty_a finance support approver", hidden="loyalty_b support_b"
    ),
    ("PATCH", "/v1/campaigns/{campaign_id}"): Row(
        ok="admin loyalty_a support", hidden="loyalty_b support_b", body={"name": "renamed"}
    ),
    ("PUT", "/v1/campaigns/{campaign_id}/lines"): Row(
        ok="admin loyalty_a support", hidden="loyalty_b support_b", csv="phone\n87011234567\n"
    ),
    ("GET", "/v1/campaigns/{campaign_id}/report"): Row(
        ok="admin loyalty_a finance support approver", hidden="loyalty_b support_b"
    ),
    ("GET", "/v1/campaigns/{campaign_id}/results"): Row(
        ok="admin loyalty_a finance support approver", hidden="loyalty_b support_b"
    ),
    **{
        ("POST", f"/v1/campaigns/{{campaign_id}}/{move}"): Row(
            ok="admin loyalty_a support", hidden="loyalty_b support_b"
        )
        for move in ("submit", "pause", "resume", "cancel")
    },
    ("POST", "/v1/campaigns/{campaign_id}/approve"): Row(ok="admin approver"),
    ("POST", "/v1/campaigns/{campaign_id}/reject"): Row(ok="admin approver", body=REASON),
    ("POST", "/v1/programs/{program}/bulk-opt-outs"): Row(
        ok="admin loyalty_a support", hidden="loyalty_b support_b", body={"msisdns": ["87011234567"]}
    ),
    ("POST", "/v1/programs/{program}/bulk-opt-outs/remove"): Row(
        ok="admin loyalty_a support", hidden="loyalty_b support_b", body={"msisdns": ["87011234567"]}
    ),
}


def test_every_operation_of_the_document_has_a_row():
    missing = [op for op in OPERATIONS if op not in MATRIX]
    stale = [op for op in MATRIX if op not in OPERATIONS]
    assert not missing, f"operations without a row in MATRIX: {missing}"
    assert not stale, f"rows for operations the document no longer has: {stale}"


@pytest.mark.parametrize("operation", [op for op in OPERATIONS if op in MATRIX], ids=" ".join)
def test_the_admitted_roles_are_the_documents_security(operation):
    """What the document promises (one bearer scheme per role in `security`) is what the table,
    and so the service, admits."""
    row = MATRIX[operation]
    method, path = operation
    schemes = {name for req in DOCUMENT["paths"][path][method.lower()].get("security", []) for name in req}
    if row.public or row.every:
        assert not {s for s in schemes if s.endswith("Key") and s[:-3] in {k[0] for k in KINDS.values()}}
        return
    admitted = {KINDS[kind][0] for kind in (row.ok + " " + row.hidden).split()}
    assert {f"{role}Key" for role in admitted} == schemes


# --- the state each operation is called against ----------------------------------------------------


@dataclass
class World:
    keys: dict[str, str]
    values: dict[str, str]


@pytest.fixture
def world(client, demo_catalog) -> World:
    from service.console.accounts import create_account
    from service.ledger.periods import close_month
    from tests.test_cards import issue_card

    made: dict[str, str] = {}
    with transaction() as s:
        create_account(s, email="matrix-approver@example.kz", password="approver-password-1", role="approver")
        for kind, (role, scope) in KINDS.items():
            if role is not None:
                made[kind] = create_key(s, role=role, name=f"matrix {kind}", **scope).key
        revoke_key(s, made["revoked"].split("_")[1])
    made["unknown"] = "rk_nosuchkey000_" + "0" * 43
    import_codes_for("ARAY-CERT-1000", 20)
    import_codes_for("KITAP-CERT-2500", 5)

    class _Keys:  # what tests.test_cards.issue_card expects
        def header(self, role: str) -> dict[str, str]:
            return {"Authorization": f"Bearer {made['loyalty_a']}"}

    card = issue_card(client, _Keys())
    cancelled = issue_card(client, _Keys())
    response = client.post(f"/v1/redemptions/{cancelled.redemption_id}/cancel", headers=_Keys().header(""))
    assert response.status_code == 200, response.text
    with new_session() as s:
        event = s.scalar(
            text("SELECT id FROM webhook_events WHERE redemption_id = :r"), {"r": cancelled.redemption_id}
        )
        msisdn = s.scalar(text("SELECT msisdn FROM redemptions WHERE id = :r"), {"r": card.redemption_id})
    assert event is not None
    close_month("mobile-bonus", date(2026, 10, 1))
    campaign = client.post(
        "/v1/campaigns",
        json={"program": "mobile-bonus", "tariff": "basic", "offer": "cinema-2000", "name": "matrix"},
        headers=_Keys().header(""),
    )
    assert campaign.status_code == 201, campaign.text
    values = {
        "program": "mobile-bonus",
        "sku": "ARAY-CINEMA-2000",
        "redemption_id": card.redemption_id,
        "card": card.redemption_id,
        "msisdn": msisdn,
        "month": MONTH,
        "kind": "act.pdf",
        "partner": "aray-cinema",
        "provider": "http",
        "event_id": str(event),
        "number": card.number,
        "pin": card.pin,
        "campaign_id": campaign.json()["id"],
    }
    return World(made, values)


def _body(row: Row, world: World, kind: str) -> Any:
    v = world.values
    if row.body == "redemption":
        return {
            "program": "mobile-bonus",
            "tariff": "basic",
            "offer": "gift-card-5000",
            "msisdn": "87011234567",
            "points": 5000,
            "external_id": f"matrix-{kind}",
        }
    if row.body == "card":
        return {"number": v["number"], "pin": v["pin"]}
    if row.body == "exchange":
        return {"number": v["number"], "pin": v["pin"], "sku": "ARAY-CERT-1000"}
    if row.body == "campaign":
        return {
            "program": "mobile-bonus",
            "tariff": "basic",
            "offer": "cinema-2000",
            "name": f"matrix {kind}",
        }
    return row.body


def call(client, world: World, operation: tuple[str, str], kind: str):
    method, template = operation
    row = MATRIX[operation]
    path = re.sub(r"\{(\w+)\}", lambda m: world.values[m.group(1)], template)
    if row.query:
        path += "?" + row.query
    headers = {"Idempotency-Key": f"matrix-{kind}"}
    if kind != "missing":
        headers["Authorization"] = f"Bearer {world.keys[kind]}"
    if row.csv is not None:
        headers["Content-Type"] = "text/csv"
        return client.request(method, path, headers=headers, content=row.csv.format(kind=kind))
    body = _body(row, world, kind)
    return client.request(method, path, headers=headers, json=body if method in ("POST", "PATCH") else None)


@pytest.mark.parametrize("operation", [op for op in OPERATIONS if op in MATRIX], ids=" ".join)
def test_each_key_kind_gets_what_the_table_says(client, world, operation):
    got: dict[str, str | int] = {}
    for kind in KINDS:
        response = call(client, world, operation, kind)
        status = response.status_code
        assert status < 500, (kind, response.text)
        got[kind] = "ok" if status not in (401, 403, 404) else status
        if status in (401, 403, 404) and operation[1] not in ("/healthz", "/readyz"):
            body = response.json()
            assert response.headers["content-type"] == "application/problem+json", (kind, body)
            if status == 404:  # out of scope looks like nothing there: never a word of the thing
                assert body["code"] in NOT_FOUND_CODES, (kind, body)
    expected = {kind: MATRIX[operation].expected(kind) for kind in KINDS}
    assert got == expected
