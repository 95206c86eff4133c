"""Each role sees and may do only what SPEC says: a table over every route and every caller."""

from __future__ import annotations

import pytest

CSV = "code\nROLE-TEST-0001\n"

# route -> expected status per caller. "none" sends no key, "bogus" a malformed one.
ROUTES = {
    ("GET", "/v1/programs", None): dict(
        admin=200, loyalty=200, partner=403, finance=200, support=200, none=401, bogus=401, revoked=401
    ),
    ("GET", "/v1/programs/mobile-bonus", None): dict(
        admin=200, loyalty=200, partner=403, finance=200, support=200, none=401, bogus=401, revoked=401
    ),
    ("GET", "/v1/programs/home-internet", None):  # outside the loyalty key's programs: 404, not 403
    dict(admin=200, loyalty=404, partner=403, finance=200, support=200, none=401, bogus=401, revoked=401),
    ("GET", "/v1/webhooks/events", None): dict(
        admin=200, loyalty=200, partner=403, finance=403, support=200, none=401, bogus=401, revoked=401
    ),
    ("POST", "/v1/webhooks/events/00000000-0000-4000-8000-000000000000/replay", None): dict(
        admin=404, loyalty=404, partner=403, finance=403, support=404, none=401, bogus=401, revoked=401
    ),
    ("GET", "/v1/programs/mobile-bonus/offers", None): dict(
        admin=200, loyalty=200, partner=403, finance=200, support=200, none=401, bogus=401, revoked=401
    ),
    ("GET", "/v1/programs/home-internet/offers", None):  # outside the loyalty key's programs: 404, not 403
    dict(admin=200, loyalty=404, partner=403, finance=200, support=200, none=401, bogus=401, revoked=401),
    ("GET", "/v1/products", None): dict(
        admin=200, loyalty=403, partner=200, finance=200, support=200, none=401, bogus=401, revoked=401
    ),
    ("POST", "/v1/products/ARAY-CINEMA-2000/codes", CSV): dict(
        admin=201,
        loyalty=403,
        partner=201,
        other_partner=404,
        finance=403,
        support=403,
        none=401,
        bogus=401,
        revoked=401,
    ),
    ("GET", "/v1/stock", None): dict(
        admin=200, loyalty=403, partner=200, finance=403, support=200, none=401, bogus=401, revoked=401
    ),
    ("GET", "/healthz", None): dict(none=200, admin=200),
    ("GET", "/readyz", None): dict(none=200, admin=200),
    ("GET", "/metrics", None): dict(none=200),
}

CASES = [
    (method, path, body, caller, status)
    for (method, path, body), table in ROUTES.items()
    for caller, status in table.items()
]


def _headers(keys, caller: str) -> dict[str, str]:
    if caller == "none":
        return {}
    if caller == "bogus":
        return {"Authorization": "Bearer rk_nosuchkey_000000000000000000"}
    return keys.header(caller)


@pytest.mark.parametrize(
    "method,path,body,caller,status", CASES, ids=[f"{c[0]} {c[1]} as {c[3]}" for c in CASES]
)
def test_route_answers_each_caller_as_specified(client, keys, method, path, body, caller, status):
    headers = _headers(keys, caller)
    if body is not None:
        headers["Content-Type"] = "text/csv"
    response = client.request(method, path, headers=headers, content=body)
    assert response.status_code == status, response.text
    if status >= 400:
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["code"] in {401: "unauthorized", 403: "forbidden", 404: "not_found"}[status]


# Routes whose answer for an admitted caller depends on state (a card, a period): the table says who
# is admitted (anything but 401/403) and everyone else must get 403 (or 401 without a key).
ROLE_ROUTES = {  # (method, path): (admitted roles, body)
    ("GET", "/v1/reconciliation/records?format=jsonl"): ({"finance"}, None),
    ("GET", "/v1/periods/2026-10?program=mobile-bonus"): ({"finance"}, None),
    ("POST", "/v1/periods/2099-01/close?program=mobile-bonus"): ({"finance"}, None),
    ("GET", "/v1/periods/2026-10/documents?program=mobile-bonus"): ({"finance"}, None),
    ("GET", "/v1/periods/2026-10/documents/act.pdf?program=mobile-bonus"): ({"finance"}, None),
    ("POST", "/v1/reconciliation/partners/aray-cinema?period=2026-10"): ({"finance"}, "code\nX-1\n"),
    ("POST", "/v1/cards/verify"): (
        {"partner", "other_partner"},
        {"number": "9398000000000001", "pin": "1234"},
    ),
    ("POST", "/v1/cards/exchanges"): (
        {"partner", "other_partner"},
        {"number": "9398000000000001", "pin": "1234", "sku": "ARAY-CERT-1000"},
    ),
    ("GET", "/v1/cards/by-redemption/01a20698-17c3-7275-9796-b8bd861fdf1e"): ({"support"}, None),
    ("POST", "/v1/cards/by-redemption/01a20698-17c3-7275-9796-b8bd861fdf1e/block"): (
        {"support"},
        {"reason": "fraud"},
    ),
    ("POST", "/v1/cards/by-redemption/01a20698-17c3-7275-9796-b8bd861fdf1e/unblock"): (
        {"support"},
        {"reason": "ok"},
    ),
    ("POST", "/v1/cards/by-redemption/01a20698-17c3-7275-9796-b8bd861fdf1e/unlock"): (
        {"support"},
        {"reason": "ok"},
    ),
    ("GET", "/v1/settlements/aray-cinema?period=2026-10"): ({"finance", "partner"}, None),
    ("POST", "/v1/redemptions"): (
        {"loyalty"},
        {
            "program": "mobile-bonus",
            "tariff": "basic",
            "offer": "cinema-2000",
            "msisdn": "87011234567",
            "points": 2000,
            "external_id": "roles",
        },
    ),
    ("GET", "/v1/redemptions"): ({"loyalty", "support"}, None),
    ("GET", "/v1/redemptions/01a20698-17c3-7275-9796-b8bd861fdf1e"): ({"loyalty", "support"}, None),
    ("GET", "/v1/subscribers/87011234567/redemptions"): ({"support"}, None),
    ("POST", "/v1/redemptions/01a20698-17c3-7275-9796-b8bd861fdf1e/cancel"): ({"loyalty", "support"}, None),
    ("POST", "/v1/redemptions/01a20698-17c3-7275-9796-b8bd861fdf1e/resend"): ({"loyalty", "support"}, None),
    ("POST", "/v1/campaigns"): (
        {"loyalty", "support"},
        {"program": "mobile-bonus", "tariff": "basic", "offer": "cinema-2000", "name": "roles"},
    ),
    ("GET", "/v1/campaigns"): ({"loyalty", "support", "finance", "approver"}, None),
    ("GET", "/v1/campaigns/01a20698-17c3-7275-9796-b8bd861fdf1e"): (
        {"loyalty", "support", "finance", "approver"},
        None,
    ),
    ("PATCH", "/v1/campaigns/01a20698-17c3-7275-9796-b8bd861fdf1e"): ({"loyalty", "support"}, {"name": "x"}),
    ("PUT", "/v1/campaigns/01a20698-17c3-7275-9796-b8bd861fdf1e/lines"): (
        {"loyalty", "support"},
        "phone\n87011234567\n",
    ),
    ("GET", "/v1/campaigns/01a20698-17c3-7275-9796-b8bd861fdf1e/report"): (
        {"loyalty", "support", "finance", "approver"},
        None,
    ),
    ("GET", "/v1/campaigns/01a20698-17c3-7275-9796-b8bd861fdf1e/results"): (
        {"loyalty", "support", "finance", "approver"},
        None,
    ),
    ("POST", "/v1/campaigns/01a20698-17c3-7275-9796-b8bd861fdf1e/submit"): ({"loyalty", "support"}, None),
    ("POST", "/v1/campaigns/01a20698-17c3-7275-9796-b8bd861fdf1e/pause"): ({"loyalty", "support"}, None),
    ("POST", "/v1/campaigns/01a20698-17c3-7275-9796-b8bd861fdf1e/resume"): ({"loyalty", "support"}, None),
    ("POST", "/v1/campaigns/01a20698-17c3-7275-9796-b8bd861fdf1e/cancel"): ({"loyalty", "support"}, None),
    ("POST", "/v1/campaigns/01a20698-17c3-7275-9796-b8bd861fdf1e/approve"): ({"approver"}, None),
    ("POST", "/v1/campaigns/01a20698-17c3-7275-9796-b8bd861fdf1e/reject"): (
        {"approver"},
        {"reason": "roles"},
    ),
    ("POST", "/v1/programs/mobile-bonus/bulk-opt-outs"): (
        {"loyalty", "support"},
        {"msisdns": ["87011234567"]},
    ),
    ("POST", "/v1/programs/mobile-bonus/bulk-opt-outs/remove"): (
        {"loyalty", "support"},
        {"msisdns": ["87011234567"]},
    ),
}
# Admin may call everything except taking a partner's certificate: only the partner sees its codes.
ADMIN_REFUSED = {("POST", "/v1/cards/exchanges")}
# Another partner's resource is outside the key's scope: 404, not a leak of its existence.
OUT_OF_SCOPE = {("GET", "/v1/settlements/aray-cinema?period=2026-10", "other_partner")}
CALLERS = ["admin", "loyalty", "partner", "other_partner", "finance", "support", "approver"]
ROLE_CASES = [(m, p, c) for (m, p) in ROLE_ROUTES for c in CALLERS + ["none"]]


@pytest.mark.parametrize(
    "method,path,caller", ROLE_CASES, ids=[f"{c[0]} {c[1]} as {c[2]}" for c in ROLE_CASES]
)
def test_each_role_is_admitted_only_where_spec_says(client, keys, method, path, caller):
    admitted, body = ROLE_ROUTES[(method, path)]
    headers = {"Idempotency-Key": f"roles-{caller}-{method}-{path}"[:255], **_headers(keys, caller)}
    if isinstance(body, str):
        response = client.request(method, path, headers={**headers, "Content-Type": "text/csv"}, content=body)
    else:
        response = client.request(method, path, headers=headers, json=body)
    route = (method, path.split("?")[0])
    if caller == "none":
        assert response.status_code == 401, response.text
    elif (method, path, caller) in OUT_OF_SCOPE:
        assert response.status_code == 404, response.text
    elif (caller in admitted or caller == "admin") and not (
        caller == "admin" and any(route[1] == r[1] for r in ADMIN_REFUSED)
    ):
        assert response.status_code not in (401, 403), response.text
        assert response.status_code < 500, response.text
    else:
        assert response.status_code == 403, response.text


def test_every_api_route_is_in_a_table():
    """Read from the committed OpenAPI document, so a new route without role tests fails here."""
    import json
    import re
    from pathlib import Path

    document = json.loads((Path(__file__).parent.parent / "openapi" / "openapi.json").read_text())
    documented = {(m.upper(), p) for p, item in document["paths"].items() for m in item}
    assert len(documented) > 20
    tested = [(m, p.split("?")[0]) for (m, p, _b) in ROUTES] + [
        (m, p.split("?")[0]) for (m, p) in ROLE_ROUTES
    ]

    def covered(method: str, template: str) -> bool:
        pattern = "^" + re.sub(r"\{[^/]+\}", "[^/]+", template) + "$"
        return any(m == method and re.match(pattern, p) for m, p in tested)

    missing = sorted(r for r in documented if not covered(*r) and r[1] != "/v1/sms/receipts/{provider}")
    assert not missing, missing


def test_loyalty_key_lists_only_its_programs(client, keys):
    codes = [p["code"] for p in client.get("/v1/programs", headers=keys.header("loyalty")).json()["items"]]
    assert codes == ["mobile-bonus"]
    assert len(client.get("/v1/programs", headers=keys.header("finance")).json()["items"]) == 3


def test_partner_sees_only_its_own_products_and_stock(client, keys):
    products = client.get("/v1/products", headers=keys.header("partner")).json()["items"]
    assert {p["partner"] for p in products} == {"aray-cinema"}
    stock = client.get("/v1/stock", headers=keys.header("partner")).json()["items"]
    assert {s["partner"] for s in stock} == {"aray-cinema"}
    everything = client.get("/v1/products", headers=keys.header("support")).json()["items"]
    assert len(everything) > len(products)


def test_a_revoked_key_stops_working_at_once(client, keys, db):
    from service.auth.service import revoke_key
    from service.kit.db.engine import transaction

    assert client.get("/v1/programs", headers=keys.header("finance")).status_code == 200
    with transaction() as s:
        revoke_key(s, keys.finance.split("_")[1])
    assert client.get("/v1/programs", headers=keys.header("finance")).status_code == 401


def test_keys_are_stored_hashed(keys, db):
    from sqlalchemy import text

    from service.kit.db.engine import new_session

    with new_session() as s:
        stored = s.execute(text("SELECT key_id, secret_hash, name FROM api_keys")).all()
    secret = keys.admin.split("_", 2)[2]
    assert all(secret.encode() not in row.secret_hash and secret not in row.name for row in stored)


# --- support keys scoped to programs (issue 29, 6) ------------------------------------------------


def _cli(*args: str):
    from typer.testing import CliRunner

    from service.cli import app

    try:
        return CliRunner().invoke(app, list(args), env={"COLUMNS": "200"})
    finally:  # the CLI points logging at the runner's stream, which closes
        from service.kit.observability.logging import configure_logging

        configure_logging("INFO", json=True)


@pytest.fixture
def scoped_support(client, keys) -> dict[str, str]:
    """A support key scoped to home-internet, made by the CLI as an operator would."""
    result = _cli("keys", "create", "--role", "support", "--program", "home-internet", "--name", "desk-hi")
    assert result.exit_code == 0, result.output
    return {"Authorization": f"Bearer {result.stdout.strip().splitlines()[-1]}"}


def test_a_scoped_support_key_lists_only_its_programs(client, scoped_support):
    listed = client.get("/v1/programs", headers=scoped_support).json()["items"]
    assert [p["code"] for p in listed] == ["home-internet"]
    assert client.get("/v1/programs/home-internet", headers=scoped_support).status_code == 200
    assert client.get("/v1/programs/mobile-bonus", headers=scoped_support).status_code == 404
    assert client.get("/v1/programs/mobile-bonus/offers", headers=scoped_support).status_code == 404


def test_a_scoped_support_key_finds_no_redemption_of_another_program(client, keys, scoped_support):
    from tests.test_cards import issue_card

    card = issue_card(client, keys)  # mobile-bonus
    rid = card.redemption_id
    for method, path in (
        ("GET", f"/v1/redemptions/{rid}"),
        ("POST", f"/v1/redemptions/{rid}/resend"),
        ("POST", f"/v1/redemptions/{rid}/cancel"),
        ("GET", f"/v1/cards/by-redemption/{rid}"),
        ("POST", f"/v1/cards/by-redemption/{rid}/block"),
    ):
        response = client.request(method, path, headers=scoped_support, json={"reason": "probe"})
        assert response.status_code == 404, (method, path, response.text)
    assert client.get("/v1/redemptions", headers=scoped_support).json()["items"] == []
    msisdn = client.get(f"/v1/redemptions/{rid}", headers=keys.header("support")).json()["msisdn"]
    listed = client.get(f"/v1/subscribers/{msisdn}/redemptions", headers=scoped_support)
    assert listed.status_code == 200 and listed.json()["items"] == []
    # the unscoped support key still sees it
    assert client.get(f"/v1/cards/by-redemption/{rid}", headers=keys.header("support")).status_code == 200


def test_a_scoped_support_key_sees_no_webhook_event_of_another_program(client, keys, scoped_support):
    from tests.test_cards import issue_card

    rid = issue_card(client, keys).redemption_id
    client.post(f"/v1/redemptions/{rid}/cancel", headers=keys.header("loyalty"))
    everything = client.get("/v1/webhooks/events", headers=keys.header("support")).json()["items"]
    assert everything
    assert client.get("/v1/webhooks/events", headers=scoped_support).json()["items"] == []
    replay = client.post(f"/v1/webhooks/events/{everything[0]['id']}/replay", headers=scoped_support)
    assert replay.status_code == 404


def test_keys_list_shows_a_support_keys_programs(client, scoped_support):
    result = _cli("keys", "list")
    assert result.exit_code == 0 and "home-internet" in result.stdout
