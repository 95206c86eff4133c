"""Finance routes: who may call them, the record exports and their filters, problem+json for bad input."""

from __future__ import annotations

import io

import orjson
import pytest

from tests.conftest import assert_problem, import_codes_for
from tests.finance_helpers import almaty, cancel_at, minor, parse_csv, record_sums, redeem_at


@pytest.fixture
def records(keys):
    import_codes_for("ARAY-CINEMA-2000", 5)
    import_codes_for("KITAP-BOOKS-5000", 3)
    redeem_at(almaty(2026, 2, 27, 12))
    redeem_at(almaty(2026, 3, 2, 10))
    redeem_at(almaty(2026, 3, 10, 10), offer="books-5000", points=5000)
    cancel_at(redeem_at(almaty(2026, 3, 31, 23, 40)), almaty(2026, 3, 31, 23, 45))
    redeem_at(
        almaty(2026, 3, 12), program="home-internet", tariff="home-100", offer="cinema-2000", points=2200
    )
    return keys


ROUTES = [
    ("get", "/v1/reconciliation/records", {}),
    ("get", "/v1/periods/2026-03?program=mobile-bonus", {}),
    ("post", "/v1/periods/2026-03/close?program=mobile-bonus", {}),
    ("get", "/v1/periods/2026-03/documents?program=mobile-bonus", {}),
    ("get", "/v1/periods/2026-03/documents/act.pdf?program=mobile-bonus", {}),
    (
        "post",
        "/v1/reconciliation/partners/aray-cinema?period=2026-03",
        {"content": b"code\nX\n", "headers": {"Content-Type": "text/csv"}},
    ),
]


@pytest.mark.parametrize("role", ["loyalty", "partner", "support"])
@pytest.mark.parametrize("method,url,kwargs", ROUTES)
def test_only_finance_and_admin_may_call_finance_routes(client, records, role, method, url, kwargs):
    headers = {**kwargs.get("headers", {}), **records.header(role)}
    extra = {k: v for k, v in kwargs.items() if k != "headers"}
    assert_problem(getattr(client, method)(url, headers=headers, **extra), 403, "forbidden")


@pytest.mark.parametrize("method,url,kwargs", ROUTES)
def test_finance_routes_need_a_key(client, records, method, url, kwargs):
    assert_problem(getattr(client, method)(url, **kwargs), 401, "unauthorized")


@pytest.mark.parametrize("role", ["finance", "admin"])
def test_finance_and_admin_see_every_programs_records(client, records, role):
    response = client.get("/v1/reconciliation/records", headers=records.header(role))
    assert response.status_code == 200, response.text
    rows = parse_csv(response.content)
    assert {r["program"] for r in rows} == {"mobile-bonus", "home-internet"} and len(rows) == 6


def test_the_csv_export_has_the_columns_an_accountant_expects(client, records):
    response = client.get(
        "/v1/reconciliation/records?program=mobile-bonus&period=2026-03", headers=records.header("finance")
    )
    assert response.headers["content-type"].startswith("text/csv")
    assert 'filename="records-mobile-bonus-2026-03.csv"' in response.headers["content-disposition"]
    rows = parse_csv(response.content)
    first = rows[0]
    assert list(first)[:5] == ["document_number", "date", "occurred_at_utc", "booked_period", "type"]
    assert first["date"] == "2026-03-02 10:00:00" and first["document_number"] == ""  # numbered at close
    assert (first["program"], first["tariff"], first["partner"], first["sku"]) == (
        "mobile-bonus",
        "basic",
        "aray-cinema",
        "ARAY-CINEMA-2000",
    )
    assert first["product_name"] == "Aray Cinema ticket voucher 2 000 ₸"
    assert (
        first["quantity"],
        first["face_value"],
        first["cost"],
        first["vat_rate"],
        first["vat_amount"],
    ) == ("1", "2000.00", "1800.00", "16.00", "275.86")
    assert len(first["code_last4"]) == 4 and len(first["code_fingerprint"]) == 64 and first["redemption_id"]
    assert [r["type"] for r in rows] == ["issue", "issue", "issue", "cancel"]
    assert rows[-1]["face_value"] == "-2000.00" and rows[-1]["quantity"] == "-1"
    assert sum(minor(r["face_value"]) for r in rows) == record_sums(booked="2026-03")["face_value_minor"]


def test_the_export_never_contains_a_full_code(client, records):
    body = client.get("/v1/reconciliation/records", headers=records.header("finance")).text
    assert "ARAY-CINEMA-2000-T" not in body and "KITAP-BOOKS-5000-T" not in body


def test_the_jsonl_export_has_one_object_per_record(client, records):
    response = client.get(
        "/v1/reconciliation/records?format=jsonl&program=mobile-bonus", headers=records.header("finance")
    )
    assert response.headers["content-type"].startswith("application/jsonl")
    items = [orjson.loads(line) for line in response.content.splitlines()]
    assert len(items) == 5 and items[0]["quantity"] == 1 and items[0]["face_value"] == "2000.00"
    assert items[0]["booked_period"] == "2026-02" and isinstance(items[0]["vat_amount"], str)


def test_the_xlsx_export_opens_with_numeric_money_cells(client, records):
    from openpyxl import load_workbook

    response = client.get(
        "/v1/reconciliation/records?format=xlsx&program=mobile-bonus", headers=records.header("finance")
    )
    assert response.status_code == 200
    sheet = load_workbook(io.BytesIO(response.content), read_only=True).active
    rows = list(sheet.iter_rows(values_only=True))
    header, data = rows[0], rows[1:]
    assert header[:2] == ("Номер документа", "Дата (местное время)") and len(data) == 5
    face = header.index("Номинал")
    assert [round(r[face] * 100) for r in data] == [200000, 200000, 500000, 200000, -200000]
    assert data[0][header.index("Товар")] == "Aray Cinema ticket voucher 2 000 ₸"


@pytest.mark.parametrize(
    "query,expected",
    [
        ("period=2026-02", 1),
        ("period=2026-03&program=mobile-bonus", 4),
        ("from=2026-03-01&to=2026-03-31", 5),
        ("from=2026-03-31&to=2026-03-31", 2),  # local dates: 23:40 and 23:45 in Almaty are 31 March there
        ("partner=kitap-books", 1),
        ("sku=ARAY-CINEMA-2000&program=home-internet", 1),
        ("type=cancel", 1),
        ("type=cancel&type=issue&program=mobile-bonus", 5),
    ],
)
def test_export_filters(client, records, query, expected):
    response = client.get(f"/v1/reconciliation/records?{query}", headers=records.header("finance"))
    assert response.status_code == 200, response.text
    assert len(parse_csv(response.content)) == expected


@pytest.mark.parametrize(
    "query,status,code",
    [
        ("format=pdf", 422, "validation_error"),
        ("period=2026-13", 422, "validation_error"),
        ("period=March", 422, "validation_error"),
        ("from=2026-02-30", 422, "validation_error"),
        ("from=0000-00-00", 422, "validation_error"),
        ("to=1999-12-31", 422, "validation_error"),
        ("from=2027-02-29", 422, "validation_error"),
        ("from=2026-03-10&to=2026-03-01", 422, "invalid_range"),
        ("type=refund", 422, "validation_error"),
        ("progam=mobile-bonus", 422, "validation_error"),
        ("program=mobile-bonus&program=home-internet", 422, "validation_error"),
        ("program=no-such-program", 404, "unknown_program"),
        ("partner=no-such-partner", 404, "unknown_partner"),
        ("sku=NO-SUCH-SKU", 404, "unknown_product"),
    ],
)
def test_bad_export_queries_are_problems_not_500s(client, records, query, status, code):
    assert_problem(
        client.get(f"/v1/reconciliation/records?{query}", headers=records.header("finance")), status, code
    )


def test_close_over_http_returns_the_documents_with_their_checksums(client, records):
    import hashlib

    response = client.post(
        "/v1/periods/2026-03/close?program=mobile-bonus", headers=records.header("finance")
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "closed" and body["totals"]["records"] == 4
    listed = client.get(
        "/v1/periods/2026-03/documents?program=mobile-bonus", headers=records.header("finance")
    ).json()
    assert listed["documents"] == body["documents"]
    for doc in body["documents"]:
        file = client.get(doc["href"], headers=records.header("finance"))
        assert file.status_code == 200 and file.headers["content-type"].startswith(
            doc["content_type"].split(";")[0]
        )
        assert hashlib.sha256(file.content).hexdigest() == doc["sha256"] == file.headers["x-content-sha256"]
    again = client.post(
        "/v1/periods/2026-03/close?program=mobile-bonus", headers=records.header("admin")
    ).json()
    assert again == body


@pytest.mark.parametrize(
    "method,url,status,code",
    [
        ("post", "/v1/periods/2099-01/close?program=mobile-bonus", 409, "period_not_ended"),
        ("post", "/v1/periods/2026-3/close?program=mobile-bonus", 422, "validation_error"),
        ("post", "/v1/periods/2026-03/close", 422, "validation_error"),
        ("post", "/v1/periods/2026-03/close?program=nope", 404, "unknown_program"),
        ("get", "/v1/periods/2026-03/documents/act.pdf?program=mobile-bonus", 404, "period_not_closed"),
        ("get", "/v1/periods/2026-03/documents/act.docx?program=mobile-bonus", 422, "validation_error"),
        ("get", "/v1/periods/1999-12?program=mobile-bonus", 422, "validation_error"),
    ],
)
def test_bad_period_requests_are_problems(client, records, method, url, status, code):
    assert_problem(getattr(client, method)(url, headers=records.header("finance")), status, code)


def test_an_open_period_shows_as_open(client, records):
    body = client.get("/v1/periods/2026-03?program=mobile-bonus", headers=records.header("finance")).json()
    assert body["status"] == "open" and body["documents"] == [] and body["ends_at"] == "2026-03-31T19:00:00Z"


def test_a_leap_day_is_a_date_the_export_accepts(client, records):
    # The published date pattern (issue 15) matches 29 February of leap years only, and the server agrees.
    response = client.get("/v1/reconciliation/records?from=2028-02-29", headers=records.header("finance"))
    assert response.status_code == 200, response.text
