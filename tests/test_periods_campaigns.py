"""Campaign grants in the ledger (issue 27): a campaign grant debits no points, its records carry the
campaign, the records export and the registry show it in a column, and the act sums campaigns on
lines of their own (per product, and per source), its totals still the sums of the records."""

from __future__ import annotations

import hashlib
import io
from datetime import date, timedelta

import orjson
import pytest
from sqlalchemy import text

from service.kit.db.engine import new_session
from service.ledger.periods import close_month, find_document, iter_document, month_end, read_period
from service.ledger.routes import period_body
from tests.conftest import import_codes_for
from tests.finance_helpers import ALMATY, cancel_at, minor, now_utc, parse_csv, record_sums, redeem_at
from tests.test_campaigns import approved, run_all

NAME = "Новый год 2027"


def _document(month: date, kind: str) -> bytes:
    return b"".join(iter_document(find_document("mobile-bonus", month, kind).document_id))


def _pdf_text(pdf: bytes) -> str:
    from pypdf import PdfReader

    text_ = "\n".join(page.extract_text() for page in PdfReader(io.BytesIO(pdf)).pages)
    return text_.replace("\u202f", " ")


@pytest.fixture
def granted(client, keys) -> dict:
    """A campaign of 3 cinema vouchers run through the domain, one of its grants cancelled, and an
    on-demand redemption of the same product, in the current month; returns the campaign, its
    redemptions, the on-demand one and the month (not closed)."""
    import_codes_for("ARAY-CINEMA-2000", 10)
    campaign = approved(client, keys, keys.approver, 3, name=NAME)
    run_all(campaign["id"])
    with new_session() as s:
        grants = [
            row[0]
            for row in s.execute(
                text("SELECT id FROM redemptions WHERE campaign_id = :c ORDER BY external_id"),
                {"c": campaign["id"]},
            ).all()
        ]
    assert len(grants) == 3
    cancel_at(grants[0], now_utc())
    on_demand = redeem_at(now_utc())
    with new_session() as s:
        months = s.execute(text("SELECT DISTINCT booked_period FROM reconciliation_records")).scalars().all()
    assert len(months) == 1, months  # a run across midnight at a month's end would split them
    return {"campaign": campaign, "grants": grants, "on_demand": on_demand, "month": months[0]}


def _close(month: date) -> dict:
    return period_body(close_month("mobile-bonus", month, now=month_end(month, ALMATY) + timedelta(hours=1)))


def test_a_grants_records_carry_the_campaign_and_debit_no_points_its_cancel_too(granted):
    with new_session() as s:
        rows = s.execute(
            text(
                "SELECT rec.type, rec.campaign_id::text AS campaign, r.points FROM reconciliation_records rec"
                " JOIN redemptions r ON r.id = rec.redemption_id WHERE rec.redemption_id = ANY(:ids)"
                " ORDER BY rec.occurred_at, rec.id"
            ),
            {"ids": [granted["grants"][0], granted["on_demand"]]},
        ).all()
    campaign = granted["campaign"]["id"]
    assert [(r.type, r.campaign, r.points) for r in rows] == [
        ("issue", campaign, 0),
        ("cancel", campaign, 0),
        ("issue", None, 2000),
    ]


def test_the_export_has_the_campaign_column_in_csv_jsonl_and_xlsx(client, keys, granted):
    from openpyxl import load_workbook

    campaign = granted["campaign"]["id"]
    url = "/v1/reconciliation/records?program=mobile-bonus"
    rows = parse_csv(client.get(url, headers=keys.header("finance")).content)
    by_redemption = [(r["redemption_id"], r["type"], r["campaign"], r["campaign_name"]) for r in rows]
    expected = sorted(
        [(str(g), "issue", campaign, NAME) for g in granted["grants"]]
        + [(str(granted["grants"][0]), "cancel", campaign, NAME)]
        + [(str(granted["on_demand"]), "issue", "", "")]
    )
    assert sorted(by_redemption) == expected

    jsonl = client.get(url + "&format=jsonl", headers=keys.header("finance")).content
    items = [orjson.loads(line) for line in jsonl.splitlines()]
    on_demand = [i for i in items if i["redemption_id"] == str(granted["on_demand"])]
    assert [(i["campaign"], i["campaign_name"]) for i in on_demand] == [(None, None)]
    assert sorted(i["campaign"] for i in items if i["campaign"]) == [campaign] * 4

    xlsx = client.get(url + "&format=xlsx", headers=keys.header("finance")).content
    sheet = load_workbook(io.BytesIO(xlsx), read_only=True).active
    header, *data = list(sheet.iter_rows(values_only=True))
    column, name = header.index("ID кампании"), header.index("Кампания")
    assert sorted((r[column] or "", r[name] or "") for r in data) == sorted(
        [(campaign, NAME)] * 4 + [("", "")]
    )


def test_the_totals_give_each_campaign_its_own_line_and_still_sum_the_records(granted):
    month = granted["month"]
    totals = _close(month)["totals"]
    campaign = granted["campaign"]["id"]
    cinema = [p for p in totals["by_product"] if p["sku"] == "ARAY-CINEMA-2000"]
    assert [(p["campaign"], p["campaign_name"], p["records"], p["quantity"]) for p in cinema] == [
        (None, None, 1, 1),  # on-demand first
        (campaign, NAME, 4, 2),  # three grants, one cancelled
    ]
    assert cinema[1]["face_value"] == {"amount": "4000.00", "currency": "KZT"}
    sources = [(c["campaign"], c["campaign_name"], c["records"]) for c in totals["by_campaign"]]
    assert sources == [(None, None, 1), (campaign, NAME, 4)]
    sums = record_sums(booked=f"{month:%Y-%m}")
    for key, money in (("face_value_minor", "face_value"), ("cost_minor", "cost"), ("vat_minor", "vat")):
        assert sum(minor(p[money]["amount"]) for p in totals["by_product"]) == sums[key]
        assert sum(minor(c[money]["amount"]) for c in totals["by_campaign"]) == sums[key]
    assert sum(c["records"] for c in totals["by_campaign"]) == sums["records"] == totals["records"]
    assert sum(c["quantity"] for c in totals["by_campaign"]) == sums["quantity"]


def test_the_act_names_the_campaign_on_its_own_lines(granted):
    month = granted["month"]
    _close(month)
    text_ = _pdf_text(_document(month, "act.pdf"))
    flat = text_.replace("\n", " ")
    assert "Основание" in text_ and "Итоги по основаниям выдачи" in text_
    assert "По запросу (за баллы)" in flat
    assert f"Кампания «{NAME}»" in flat
    assert "4 000,00" in flat  # the campaign's net face value (3 grants, one cancelled)
    assert "без списания баллов" in flat
    csv_doc = find_document("mobile-bonus", month, "registry.csv")
    assert csv_doc.sha256 in text_.replace("\n", "")


def test_the_registry_lists_the_campaign_of_each_record_numbered_without_gaps(granted):
    from openpyxl import load_workbook

    month = granted["month"]
    period = _close(month)
    campaign = granted["campaign"]["id"]
    data = _document(month, "registry.csv")
    documents = {d["kind"]: d for d in period["documents"]}
    assert hashlib.sha256(data).hexdigest() == documents["registry.csv"]["sha256"]
    rows = parse_csv(data)
    assert [int(r["line"]) for r in rows] == [1, 2, 3, 4, 5]
    numbers = [int(r["document_number"].removeprefix("RR-")) for r in rows]
    assert numbers == list(range(numbers[0], numbers[0] + 5))
    assert sorted((r["type"], r["campaign"], r["campaign_name"]) for r in rows) == sorted(
        [("issue", campaign, NAME)] * 3 + [("cancel", campaign, NAME), ("issue", "", "")]
    )
    xlsx = _document(month, "registry.xlsx")
    assert hashlib.sha256(xlsx).hexdigest() == documents["registry.xlsx"]["sha256"]
    sheet = load_workbook(io.BytesIO(xlsx), read_only=True).active
    sheet_rows = list(sheet.iter_rows(values_only=True))
    header, body = sheet_rows[2], sheet_rows[3:-1]
    column = header.index("Кампания")
    assert sorted(r[column] or "" for r in body) == sorted([NAME] * 4 + [""])
    assert read_period("mobile-bonus", month).status == "closed"


def test_totals_frozen_before_campaigns_still_render():
    from service.ledger.periods import render_totals

    line = {
        "sku": "ARAY-CINEMA-2000",
        "name": "Aray",
        "partner": "aray-cinema",
        "partner_name": "Aray Cinema",
        "currency": "KZT",
        "vat_rate_bp": 1600,
        "records": 2,
        "quantity": 2,
        "face_value_minor": 400000,
        "cost_minor": 360000,
        "vat_minor": 55172,
    }
    sums = {k: line[k] for k in ("records", "quantity", "face_value_minor", "cost_minor", "vat_minor")}
    frozen = {
        "records": 2,
        "by_currency": {"KZT": sums},
        "by_product": [line],
        "by_type": [],
        "late_records": 0,
    }
    rendered = render_totals(frozen)  # as read back from periods.totals of a month closed before
    assert rendered.by_product[0].campaign is None
    assert [(c.campaign, c.records) for c in rendered.by_campaign] == [(None, 2)]


def test_the_acts_signatures_share_a_page_with_its_checksums_and_every_page_names_the_act(granted):
    """A page of signatures alone could be put under any act: the record count and the registry's
    checksums stand on the page that is signed, and each page says which act and which page it is."""
    from pypdf import PdfReader

    month = granted["month"]
    period = _close(month)
    pages = [page.extract_text() for page in PdfReader(io.BytesIO(_document(month, "act.pdf"))).pages]
    assert len(pages) >= 2  # the campaign's lines push the signatures past the first page
    (signed,) = [text_ for text_ in pages if "Исполнитель" in text_]
    assert "Всего записей сверки" in signed and "SHA-256 реестра (CSV)" in signed
    for number, text_ in enumerate(pages, start=1):
        assert f"Акт № {period['act_number']} — стр. {number} из {len(pages)}" in text_
