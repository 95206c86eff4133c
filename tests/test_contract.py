"""The OpenAPI contract holds for generated clients: deliberate operationIds, typed offer limits,
lists whose last page says so, cursors whose published form is never refused, CSV bodies that must
be CSV, downloads as bytes. (tests/test_generated_client.py generates a client and uses it.)"""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from service.events import webhooks
from service.kit.db.engine import new_session
from service.openapi_contract import OPERATION_IDS
from tests.conftest import assert_problem, import_codes_for, post_redemption
from tests.harness.delivery import point_webhooks_at

MSISDN = "+77011234567"


@pytest.fixture(scope="module")
def document(app) -> dict[str, Any]:
    return app.openapi()


def _operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method.upper(), path, operation)
        for path, item in document["paths"].items()
        for method, operation in item.items()
    ]


def test_every_operation_id_is_named_in_the_table_in_camel_case_and_unique(document, app):
    ids = [operation["operationId"] for _, _, operation in _operations(document)]
    assert len(ids) == len(set(ids))
    assert all(re.fullmatch(r"[a-z]+(?:[A-Z][a-z0-9]*)*", name) for name in ids), ids
    assert set(ids) <= set(OPERATION_IDS.values())
    documented = {route.name for route in app.routes if getattr(route, "include_in_schema", False)}
    unnamed = {name for name in documented if name not in OPERATION_IDS}
    assert not unnamed, f"name these operations in service/openapi_contract.OPERATION_IDS: {unnamed}"
    assert "createRedemption" in ids and not any("_" in name for name in ids)


def test_an_offers_limits_have_a_typed_schema(document, client, keys):
    schema = document["components"]["schemas"]["OfferLimits"]
    assert set(schema["properties"]) == {"per_subscriber_per_day", "per_subscriber_per_month"}
    offer = document["components"]["schemas"]["OfferOut"]["properties"]["limits"]
    assert offer == {"$ref": "#/components/schemas/OfferLimits"}
    items = client.get("/v1/programs/mobile-bonus/offers", headers=keys.header("loyalty")).json()["items"]
    assert all(set(o["limits"]) == set(schema["properties"]) for o in items)


# --- lists ----------------------------------------------------------------------------------------


def _lists(document: dict[str, Any]) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """Every operation that pages: (path with its example parameters, cursor schema, operation)."""
    found = []
    for method, path, operation in _operations(document):
        parameters = {p["name"]: p for p in operation.get("parameters", [])}
        if method != "GET" or "cursor" not in parameters:
            continue
        url = path
        for name, parameter in parameters.items():
            if parameter["in"] == "path":
                url = url.replace("{" + name + "}", str(parameter["example"]))
        cursor = next(s for s in parameters["cursor"]["schema"]["anyOf"] if s.get("type") == "string")
        found.append((url, cursor, operation))
    return found


@pytest.fixture
def listed(client, keys):
    """Something in every list: two redemptions of the example subscriber, cancelled, the webhook
    events of their cancelling, and two campaign drafts."""
    import_codes_for("ARAY-CINEMA-2000", 3)
    point_webhooks_at("http://127.0.0.1:9/hooks")
    webhooks._secrets_cache.clear()
    for _ in range(2):
        made = post_redemption(client, keys, msisdn=MSISDN)
        assert made.status_code == 201, made.text
        cancel = client.post(f"/v1/redemptions/{made.json()['id']}/cancel", headers=keys.header("loyalty"))
        assert cancel.status_code == 200, cancel.text
    for name in ("first", "second"):
        body = {"program": "mobile-bonus", "tariff": "basic", "offer": "cinema-2000", "name": name}
        campaign = client.post("/v1/campaigns", json=body, headers=keys.header("loyalty"))
        assert campaign.status_code == 201, campaign.text
    return keys


def _walk(client, keys, url: str, limit: int) -> list[dict[str, Any]]:
    pages, cursor = [], None
    while True:
        query = f"?limit={limit}" + (f"&cursor={cursor}" if cursor else "")
        response = client.get(url + query, headers=keys.header("admin"))
        assert response.status_code == 200, (url, response.text)
        pages.append(response.json())
        cursor = pages[-1]["next_cursor"]
        if cursor is None:
            return pages
        assert len(pages) < 100, url


def test_there_is_a_list_operation_for_every_list_the_api_has(document):
    urls = {url for url, _, _ in _lists(document)}
    # programs, offers, products, redemptions, a subscriber's, webhook events, campaigns
    assert len(urls) == 7, urls


def test_the_last_page_of_every_list_has_next_cursor_null(document, client, listed):
    for url, _, _ in _lists(document):
        (whole,) = _walk(client, listed, url, 200)
        count = len(whole["items"])
        assert count >= 1, url  # the fixture put something in every list
        # A page exactly as long as what is left is the last: no cursor to an empty page.
        (exact,) = _walk(client, listed, url, count)
        assert len(exact["items"]) == count, url
        one_by_one = _walk(client, listed, url, 1)
        assert [len(p["items"]) for p in one_by_one] == [1] * count, url
        assert [p["items"][0] for p in one_by_one] == whole["items"], url


def test_a_cursor_a_page_gives_has_the_form_its_parameter_states(document, client, listed):
    for url, cursor_schema, _ in _lists(document):
        first = client.get(f"{url}?limit=1", headers=listed.header("admin")).json()
        if first["next_cursor"] is not None:
            assert re.fullmatch(cursor_schema["pattern"], first["next_cursor"]), url
            assert len(first["next_cursor"]) <= cursor_schema["maxLength"], url


def _accepts_every_cursor_of_its_form(client, keys, url: str, cursor_schema: dict[str, Any]) -> None:
    cursors = st.from_regex(cursor_schema["pattern"], fullmatch=True).filter(
        lambda c: cursor_schema.get("minLength", 0) <= len(c) <= cursor_schema["maxLength"]
    )

    @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(cursor=cursors)
    def accepted(cursor: str) -> None:
        response = client.get(url, params={"cursor": cursor}, headers=keys.header("admin"))
        assert response.status_code == 200, (url, cursor, response.text)

    accepted()


def test_every_cursor_valid_by_the_schema_is_accepted(document, client, listed):
    for url, cursor_schema, _ in _lists(document):
        _accepts_every_cursor_of_its_form(client, listed, url, cursor_schema)


# --- CSV uploads and downloads --------------------------------------------------------------------


CSV_UPLOADS = [
    ("/v1/products/ARAY-CINEMA-2000/codes", "partner"),
    ("/v1/reconciliation/partners/aray-cinema?period=2026-03", "finance"),
]


@pytest.mark.parametrize(("url", "role"), CSV_UPLOADS)
@pytest.mark.parametrize("body", [b"{}", b'[{"code": "ABC"}]', b"\xef\xbb\xbf{}", b"\xff\xfe"])
def test_a_csv_upload_that_is_json_or_not_text_is_refused_as_not_csv(client, keys, url, role, body):
    headers = {**keys.header(role), "Content-Type": "text/csv"}
    assert_problem(client.post(url, content=body, headers=headers), 422, "not_csv")
    with new_session() as s:
        assert s.execute(text("SELECT count(*) FROM codes")).scalar_one() == 0


@pytest.mark.parametrize(("url", "role"), CSV_UPLOADS)
def test_a_csv_upload_goes_as_the_file_part_of_multipart_too(client, keys, url, role):
    files = {"file": ("codes.csv", b"code\nMULTI-0001\n", "text/csv")}
    response = client.post(url, files=files, headers=keys.header(role))
    assert response.status_code in (200, 201), response.text
    json_in_file = {"file": ("codes.csv", b"{}", "text/csv")}
    assert_problem(client.post(url, files=json_in_file, headers=keys.header(role)), 422, "not_csv")


def test_the_csv_upload_schemas_state_what_a_csv_body_is(document):
    for path in ("/v1/products/{sku}/codes", "/v1/reconciliation/partners/{partner}"):
        content = document["paths"][path]["post"]["requestBody"]["content"]
        pattern = content["text/csv"]["schema"]["pattern"]
        assert re.fullmatch(pattern, "code\nABC\n") and re.fullmatch(pattern, "")
        assert not re.fullmatch(pattern, "{}") and not re.fullmatch(pattern, "\ufeff[1]")
        file = content["multipart/form-data"]["schema"]["properties"]["file"]
        assert file["format"] == "binary"
        assert (
            "not_csv"
            in document["paths"][path]["post"]["responses"]["422"]["content"]["application/problem+json"][
                "examples"
            ]
        )


def test_downloads_are_binary_under_octet_stream_first_and_their_own_media_types(document):
    for path in ("/v1/reconciliation/records", "/v1/periods/{month}/documents/{kind}"):
        content = document["paths"][path]["get"]["responses"]["200"]["content"]
        assert next(iter(content)) == "application/octet-stream"
        assert all(media["schema"]["format"] == "binary" for media in content.values())


def test_a_download_asked_for_as_octet_stream_comes_as_octet_stream(client, keys):
    url = "/v1/reconciliation/records?format=xlsx"
    plain = client.get(url, headers=keys.header("finance"))
    assert plain.headers["content-type"].startswith("application/vnd.openxmlformats")
    asked = client.get(url, headers={**keys.header("finance"), "Accept": "application/octet-stream"})
    assert asked.headers["content-type"] == "application/octet-stream"
    assert asked.content[:2] == plain.content[:2] == b"PK"  # the same XLSX (a zip), as bytes
