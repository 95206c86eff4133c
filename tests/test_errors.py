"""Every error is RFC 9457 problem+json with a stable code; bad input is never a 500."""

from __future__ import annotations

import re

import pytest

from tests.conftest import assert_problem


def test_unknown_route_is_404assert_problem(client):
    assert_problem(client.get("/v1/nothing-here"), 404, "not_found")


def test_wrong_method_is_405assert_problem(client, keys):
    assert_problem(client.delete("/v1/programs", headers=keys.header("admin")), 405, "method_not_allowed")


def test_missing_key_is_401_with_a_challenge(client):
    response = client.get("/v1/programs")
    assert_problem(response, 401, "unauthorized")
    assert response.headers["www-authenticate"] == "Bearer"


def test_query_validation_names_the_field(client, keys):
    body = assert_problem(
        client.get("/v1/programs?limit=0", headers=keys.header("admin")), 422, "validation_error"
    )
    assert body["errors"][0]["field"] == "query.limit"


@pytest.mark.parametrize(
    "path", ["/v1/programs/Bad%00Code/offers", "/v1/programs/mobile-bonus/offers?tariff=%00"]
)
def test_nul_bytes_are_a_validation_error_not_a_database_error(client, keys, path):
    assert_problem(client.get(path, headers=keys.header("admin")), 422, "validation_error")


def test_unknown_tariff_filter_is_its_own_error(client, keys):
    assert_problem(
        client.get("/v1/programs/mobile-bonus/offers?tariff=gold", headers=keys.header("admin")),
        422,
        "unknown_tariff",
    )


def test_a_cursor_not_of_the_documented_form_is_a_validation_error(client, keys):
    body = assert_problem(
        client.get("/v1/programs?cursor=%25%25", headers=keys.header("admin")), 422, "validation_error"
    )
    assert body["errors"][0]["field"] == "query.cursor"
    for wrong in ("NOT-A-SLUG", "cHJvZ3JhbXM6Tk9UIEEgU0xVRw=="):  # a sku's case; an opaque cursor of old
        response = client.get(f"/v1/programs?cursor={wrong}", headers=keys.header("admin"))
        assert assert_problem(response, 422, "validation_error")["errors"][0]["field"] == "query.cursor"


def test_a_made_up_cursor_of_the_documented_form_is_a_position_in_the_list(client, keys):
    # A program's code is the programs' cursor: any slug is a place in their order, never a refusal.
    for made_up in ("a", "home", "zzz"):
        response = client.get(f"/v1/programs?cursor={made_up}", headers=keys.header("admin"))
        assert response.status_code == 200, made_up
        codes = [p["code"] for p in response.json()["items"]]
        assert codes == sorted(codes) and all(code > made_up for code in codes)


def test_every_list_pages_with_cursors_of_its_documented_form(client, keys):
    document = client.get("/openapi.json").json()
    for url, path in (
        ("/v1/programs?limit=1", "/v1/programs"),
        ("/v1/products?limit=1", "/v1/products"),
        ("/v1/programs/mobile-bonus/offers?limit=1", "/v1/programs/{program}/offers"),
    ):
        (parameter,) = [p for p in document["paths"][path]["get"]["parameters"] if p["name"] == "cursor"]
        cursor = client.get(url, headers=keys.header("admin")).json()["next_cursor"]
        assert re.fullmatch(parameter["schema"]["anyOf"][0]["pattern"], cursor), url
        assert client.get(f"{url}&cursor={cursor}", headers=keys.header("admin")).status_code == 200


def test_a_page_size_that_is_not_plain_decimal_digits_is_refused(client, keys):
    # schemathesis's negative phase found "\f15" taken for 15: the published type is an integer
    for padded in ("%0C15", "%2015", "15%20", "15.0"):
        response = client.get(f"/v1/programs?limit={padded}", headers=keys.header("admin"))
        assert assert_problem(response, 422, "validation_error")["errors"][0]["field"] == "query.limit"
    assert client.get("/v1/programs?limit=15", headers=keys.header("admin")).status_code == 200


def test_declared_oversized_body_is_refused_before_reading(client, keys):
    response = client.post(
        "/v1/products/KITAP-BOOKS-5000/codes",
        content=b"x",
        headers={**keys.header("admin"), "Content-Type": "text/csv", "Content-Length": "99999999999"},
    )
    assert_problem(response, 413, "payload_too_large")


def test_request_id_is_echoed_and_put_in_problems(client):
    response = client.get("/v1/programs", headers={"X-Request-ID": "trace-123"})
    assert response.headers["x-request-id"] == "trace-123"
    assert response.json()["request_id"] == "trace-123"


def test_offers_carry_per_tariff_prices_and_availability(client, keys):
    items = client.get(
        "/v1/programs/mobile-bonus/offers?tariff=unlimited", headers=keys.header("loyalty")
    ).json()["items"]
    cinema = next(o for o in items if o["code"] == "cinema-2000")
    assert cinema["points"] == 1600 and cinema["nominal"] == {"amount": "2000.00", "currency": "KZT"}
    assert cinema["availability"] == {"available": False, "reason": "out_of_stock"}  # no codes uploaded yet
    card = next(o for o in items if o["code"] == "gift-card-5000")
    assert card["nominal"]["amount"] == "6000.00" and card["availability"]["available"] is True
    assert all("unlimited" in o["tariffs"] for o in items)
    basic = client.get(
        "/v1/programs/mobile-bonus/offers?tariff=basic", headers=keys.header("loyalty")
    ).json()["items"]
    assert "taxi-1500" not in {o["code"] for o in basic}


def test_cursor_pagination_walks_every_offer_once(client, keys):
    seen, cursor = [], None
    while True:
        url = "/v1/programs/mobile-bonus/offers?limit=1" + (f"&cursor={cursor}" if cursor else "")
        page = client.get(url, headers=keys.header("admin")).json()
        seen += [o["code"] for o in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert seen == sorted(seen) and len(seen) == len(set(seen)) == 4
