"""Partner settlement per month, summed from the reconciliation records in the program's time zone."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime

import pytest
from sqlalchemy import text

from service.cards import service as cards
from service.kit.db.engine import new_session, transaction
from service.redemptions import service as redemptions
from service.redemptions.schemas import RedemptionIn
from tests.conftest import import_codes_for

_n = itertools.count(1)
# Asia/Almaty is UTC+5: 19:30Z on 31 October is already 1 November there; 17:30Z is still October.
NOVEMBER_LOCAL = datetime(2026, 10, 31, 19, 30, tzinfo=UTC)
OCTOBER_LOCAL = datetime(2026, 10, 31, 17, 30, tzinfo=UTC)
MID_NOVEMBER = datetime(2026, 11, 15, 12, 0, tzinfo=UTC)
DECEMBER_LOCAL = datetime(2026, 11, 30, 19, 30, tzinfo=UTC)


def redeem(offer: str, points: int, now: datetime, tariff: str = "basic"):
    request = RedemptionIn(
        program="mobile-bonus",
        tariff=tariff,
        offer=offer,
        points=points,
        msisdn=f"8705{next(_n):07d}",
        external_id=f"settle-{next(_n)}",
    )
    with transaction() as s:
        return redemptions.redeem(s, request, scope=redemptions.Scope(None), api_key_id=None, now=now)


def card_of(redemption_id) -> tuple[str, str]:
    from service.kit.security.crypto import get_vault

    with new_session() as s:
        row = s.execute(
            text(
                "SELECT c.number_enc, c.pin_enc FROM cards c JOIN redemptions r ON r.card_id = c.id"
                " WHERE r.id = :id"
            ),
            {"id": redemption_id},
        ).one()
    vault = get_vault()
    return vault.decrypt(bytes(row.number_enc), b"card-number"), vault.decrypt(
        bytes(row.pin_enc), b"card-pin"
    )


def exchange(number: str, pin: str, sku: str, partner: str, now: datetime) -> None:
    with transaction() as s:
        cards.exchange(s, number, pin, sku, partner=partner, now=now, api_key_id=None)


@pytest.fixture
def month_of_records(keys):
    """Aray: 3 cinema codes issued in November (one cancelled), 1 in October, 2 certificates exchanged
    in November and 1 in December; Kitap: 1 certificate in November (not Aray's)."""
    import_codes_for("ARAY-CINEMA-2000", 10)
    import_codes_for("ARAY-CERT-1000", 10)
    import_codes_for("KITAP-CERT-2500", 10)
    first = redeem("cinema-2000", 2000, NOVEMBER_LOCAL)
    redeem("cinema-2000", 2000, MID_NOVEMBER)
    cancelled = redeem("cinema-2000", 2000, MID_NOVEMBER)
    with transaction() as s:
        redemptions.cancel(s, cancelled.id, scope=redemptions.Scope(None), now=MID_NOVEMBER)
    redeem("cinema-2000", 2000, OCTOBER_LOCAL)
    number, pin = card_of(redeem("gift-card-5000", 5000, OCTOBER_LOCAL, tariff="unlimited").id)  # 6000.00
    exchange(number, pin, "ARAY-CERT-1000", "aray-cinema", NOVEMBER_LOCAL)
    exchange(number, pin, "ARAY-CERT-1000", "aray-cinema", MID_NOVEMBER)
    exchange(number, pin, "ARAY-CERT-1000", "aray-cinema", DECEMBER_LOCAL)
    exchange(number, pin, "KITAP-CERT-2500", "kitap-books", MID_NOVEMBER)
    return first


def test_settlement_counts_codes_issued_and_certificates_exchanged_per_product(
    client, keys, month_of_records
):
    response = client.get("/v1/settlements/aray-cinema?period=2026-11", headers=keys.header("finance"))
    assert response.status_code == 200, response.text
    body = response.json()
    products = {p["sku"]: p for p in body["products"]}
    assert set(products) == {"ARAY-CINEMA-2000", "ARAY-CERT-1000"}
    cinema, cert = products["ARAY-CINEMA-2000"], products["ARAY-CERT-1000"]
    assert cinema["issued"] == {
        "count": 2,
        "face_value": {"amount": "4000.00", "currency": "KZT"},
        "cost": {"amount": "3600.00", "currency": "KZT"},
    }
    assert cinema["exchanged"]["count"] == 0
    assert cert["exchanged"] == {
        "count": 2,
        "face_value": {"amount": "2000.00", "currency": "KZT"},
        "cost": {"amount": "1900.00", "currency": "KZT"},
    }
    assert cert["issued"]["count"] == 0
    assert body["totals"] == [
        {
            "currency": "KZT",
            "issued": {
                "count": 2,
                "face_value": {"amount": "4000.00", "currency": "KZT"},
                "cost": {"amount": "3600.00", "currency": "KZT"},
            },
            "exchanged": {
                "count": 2,
                "face_value": {"amount": "2000.00", "currency": "KZT"},
                "cost": {"amount": "1900.00", "currency": "KZT"},
            },
            # all at the partner's desk: none by the holders on the reward page
            "exchanged_online": {
                "count": 0,
                "face_value": {"amount": "0.00", "currency": "KZT"},
                "cost": {"amount": "0.00", "currency": "KZT"},
            },
            "cost_to_pay": {"amount": "5500.00", "currency": "KZT"},
        }
    ]


def test_settlement_totals_equal_the_sums_of_the_partners_records_for_the_period(
    client, keys, month_of_records
):
    from service.kit.values.money import to_minor

    with new_session() as s:
        sums = s.execute(
            text(
                "SELECT count(*) AS records, sum(r.cost_minor) AS cost,"
                " sum(r.face_value_minor) FILTER (WHERE r.type <> 'exchange') AS issued_face,"
                " sum(r.face_value_minor) FILTER (WHERE r.type = 'exchange') AS exchanged_face,"
                " sum(r.quantity) FILTER (WHERE r.type <> 'exchange') AS issued"
                " FROM reconciliation_records r JOIN partners p ON p.id = r.partner_id"
                " WHERE p.code = 'aray-cinema' AND (r.occurred_at AT TIME ZONE 'Asia/Almaty')"
                "  >= '2026-11-01' AND (r.occurred_at AT TIME ZONE 'Asia/Almaty') < '2026-12-01'"
            )
        ).one()
    body = client.get("/v1/settlements/aray-cinema?period=2026-11", headers=keys.header("admin")).json()
    totals = body["totals"][0]
    assert body["records"] == sums.records == 6  # 3 issues, 1 cancel, 2 exchanges
    assert to_minor(totals["cost_to_pay"]["amount"], "KZT") == sums.cost
    assert to_minor(totals["issued"]["face_value"]["amount"], "KZT") == sums.issued_face
    assert to_minor(totals["exchanged"]["face_value"]["amount"], "KZT") == sums.exchanged_face
    assert totals["issued"]["count"] == sums.issued
    per_product = sum(to_minor(p["cost_to_pay"]["amount"], "KZT") for p in body["products"])
    assert per_product == sums.cost


def test_the_month_is_the_programs_local_month(client, keys, month_of_records):
    october = client.get("/v1/settlements/aray-cinema?period=2026-10", headers=keys.header("finance")).json()
    december = client.get("/v1/settlements/aray-cinema?period=2026-12", headers=keys.header("finance")).json()
    assert october["totals"][0]["issued"]["count"] == 1 and october["totals"][0]["exchanged"]["count"] == 0
    assert december["totals"][0]["exchanged"]["count"] == 1 and december["totals"][0]["issued"]["count"] == 0


def test_a_partner_sees_its_own_settlement_only(client, keys, month_of_records):
    assert (
        client.get("/v1/settlements/aray-cinema?period=2026-11", headers=keys.header("partner")).status_code
        == 200
    )
    other = client.get("/v1/settlements/aray-cinema?period=2026-11", headers=keys.header("other_partner"))
    assert other.status_code == 404 and other.json()["code"] == "not_found"
    kitap = client.get(
        "/v1/settlements/kitap-books?period=2026-11", headers=keys.header("other_partner")
    ).json()
    assert [p["sku"] for p in kitap["products"]] == ["KITAP-BOOKS-5000", "KITAP-CERT-2500"]
    assert kitap["totals"][0]["cost_to_pay"] == {"amount": "2350.00", "currency": "KZT"}


@pytest.mark.parametrize("role", ["loyalty", "support"])
def test_loyalty_and_support_keys_see_no_settlements(client, keys, role):
    response = client.get("/v1/settlements/aray-cinema?period=2026-11", headers=keys.header(role))
    assert response.status_code == 403 and response.json()["code"] == "forbidden"


@pytest.mark.parametrize(
    "query", ["period=2026-13", "period=2026-1", "period=0000-01", "", "period=2026-11&x=1"]
)
def test_a_bad_period_is_a_validation_error(client, keys, query):
    response = client.get(f"/v1/settlements/aray-cinema?{query}", headers=keys.header("finance"))
    assert response.status_code == 422 and response.json()["code"] == "validation_error"


def test_an_unknown_partner_is_404(client, keys):
    response = client.get("/v1/settlements/no-such-partner?period=2026-11", headers=keys.header("finance"))
    assert response.status_code == 404 and response.json()["code"] == "not_found"


def test_a_month_without_records_settles_to_zero(client, keys):
    body = client.get("/v1/settlements/aray-cinema?period=2026-01", headers=keys.header("finance")).json()
    assert body["records"] == 0
    assert {p["sku"]: p["cost_to_pay"]["amount"] for p in body["products"]} == {
        "ARAY-CINEMA-2000": "0.00",
        "ARAY-CERT-1000": "0.00",
    }
    assert body["totals"][0]["cost_to_pay"] == {"amount": "0.00", "currency": "KZT"}
