"""Each role sees and may do only what SPEC says: a table over every route and every caller."""
from __future__ import annotations

import pytest

CSV = "code\nROLE-TEST-0001\n"

# route -> expected status per caller. "none" sends no key, "bogus" a malformed one.
ROUTES = {
    ("GET", "/v1/programs", None):
        dict(admin=200, loyalty=200, partner=403, finance=200, support=200, none=401, bogus=401, revoked=401),
    ("GET", "/v1/programs/mobile-bonus/offers", None):
        dict(admin=200, loyalty=200, partner=403, finance=200, support=200, none=401, bogus=401, revoked=401),
    ("GET", "/v1/programs/home-internet/offers", None):  # outside the loyalty key's programs: 404, not 403
        dict(admin=200, loyalty=404, partner=403, finance=200, support=200, none=401, bogus=401, revoked=401),
    ("GET", "/v1/products", None):
        dict(admin=200, loyalty=403, partner=200, finance=200, support=200, none=401, bogus=401, revoked=401),
    ("POST", "/v1/products/ARAY-CINEMA-2000/codes", CSV):
        dict(admin=201, loyalty=403, partner=201, other_partner=404, finance=403, support=403, none=401,
             bogus=401, revoked=401),
    ("GET", "/v1/stock", None):
        dict(admin=200, loyalty=403, partner=200, finance=403, support=200, none=401, bogus=401, revoked=401),
    ("GET", "/healthz", None): dict(none=200, admin=200),
    ("GET", "/readyz", None): dict(none=200, admin=200),
    ("GET", "/metrics", None): dict(none=200),
}

CASES = [(method, path, body, caller, status)
         for (method, path, body), table in ROUTES.items() for caller, status in table.items()]


def _headers(keys, caller: str) -> dict[str, str]:
    if caller == "none":
        return {}
    if caller == "bogus":
        return {"Authorization": "Bearer rk_nosuchkey_000000000000000000"}
    return keys.header(caller)


@pytest.mark.parametrize("method,path,body,caller,status", CASES,
                         ids=[f"{c[0]} {c[1]} as {c[3]}" for c in CASES])
def test_route_answers_each_caller_as_specified(client, keys, method, path, body, caller, status):
    headers = _headers(keys, caller)
    if body is not None:
        headers["Content-Type"] = "text/csv"
    response = client.request(method, path, headers=headers, content=body)
    assert response.status_code == status, response.text
    if status >= 400:
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["code"] in {401: "unauthorized", 403: "forbidden", 404: "not_found"}[status]


def test_every_api_route_is_in_the_table(app):
    documented = {(m, r.path) for r in app.routes for m in getattr(r, "methods", ()) if m not in ("HEAD", "OPTIONS")}
    tested = {(m, p.replace("mobile-bonus", "{program}").replace("ARAY-CINEMA-2000", "{sku}"))
              for (m, p, _b) in ROUTES}
    missing = {r for r in documented if r[1].startswith("/v1") or r[1] in ("/healthz", "/readyz", "/metrics")} - tested
    assert not missing


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
    from service.db import transaction

    assert client.get("/v1/programs", headers=keys.header("finance")).status_code == 200
    with transaction() as s:
        revoke_key(s, keys.finance.split("_")[1])
    assert client.get("/v1/programs", headers=keys.header("finance")).status_code == 401


def test_keys_are_stored_hashed(keys, db):
    from sqlalchemy import text

    from service.db import new_session

    with new_session() as s:
        stored = s.execute(text("SELECT key_id, secret_hash, name FROM api_keys")).all()
    secret = keys.admin.split("_", 2)[2]
    assert all(secret.encode() not in row.secret_hash and secret not in row.name for row in stored)
