"""Partner reconciliation: their activated codes against our issued ones, by fingerprint only."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from service.kit.db.engine import new_session
from tests.conftest import import_codes_for
from tests.finance_helpers import almaty, cancel_at, redeem_at

CODES = ["ARAY-RECON-0001", "ARAY-RECON-0002", "ARAY-RECON-0003", "ARAY-RECON-0004"]
URL = "/v1/reconciliation/partners/aray-cinema?period=2026-03"


@pytest.fixture
def issued(keys):
    import_codes_for("ARAY-CINEMA-2000", CODES)
    redeem_at(almaty(2026, 3, 1, 10))
    redeem_at(almaty(2026, 3, 20, 10))
    redeem_at(almaty(2026, 3, 25, 10))
    cancel_at(redeem_at(almaty(2026, 3, 26, 10)), almaty(2026, 3, 26, 10, 5))  # cancelled: back in the pool
    return keys


def _codes_in_issue_order() -> list[str]:
    """The pool decides which code each redemption gets: read it back (by last 4) in issue order."""
    with new_session() as s:
        last4 = (
            s.execute(
                text(
                    "SELECT code_last4 FROM reconciliation_records WHERE type = 'issue' ORDER BY occurred_at"
                )
            )
            .scalars()
            .all()
        )
    return [f"ARAY-RECON-{x}" for x in last4]


def _post(client, keys, body: str, role: str = "finance", url: str = URL):
    return client.post(url, content=body.encode(), headers={**keys.header(role), "Content-Type": "text/csv"})


def test_discrepancies_are_leaks_unactivated_codes_and_amounts(client, issued):
    first, second, third, cancelled = _codes_in_issue_order()
    report = (
        "code,activated_at,amount\n"
        f"{first},2026-03-02T12:00:00+05:00,2000.00\n"
        f"{second},2026-03-21,1500.00\n"
        "ARAY-LEAKED-9999,2026-03-22,2000.00\n"
        f"{cancelled},2026-03-27,2000.00\n"
    )
    response = _post(client, issued, report)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["lines"] == 4 and body["matched"] == 2
    assert [(x["line"], x["last4"]) for x in body["activated_not_issued"]] == [
        (4, "9999"),
        (5, cancelled[-4:]),
    ]
    (mismatch,) = body["amount_mismatches"]
    assert (mismatch["last4"], mismatch["reported"]["amount"], mismatch["expected"]["amount"]) == (
        second[-4:],
        "1500.00",
        "2000.00",
    )
    (unused,) = body["issued_not_activated"]
    assert unused["last4"] == third[-4:] and unused["age_days"] == 6 and unused["sku"] == "ARAY-CINEMA-2000"
    assert len(unused["fingerprint"]) == 64


def test_the_answer_never_echoes_a_full_code(client, issued):
    text = _post(client, issued, "ARAY-RECON-0001\nARAY-LEAKED-9999\n").text
    assert "ARAY-RECON" not in text and "ARAY-LEAKED" not in text


def test_bad_lines_are_rejected_by_line_and_duplicates_counted(client, issued):
    first, second, *_ = _codes_in_issue_order()
    body = _post(client, issued, f"{first},yesterday\n{first},,12.345\n{second}\n{second}\na,b,c,d\n").json()
    assert [r["line"] for r in body["rejected"]] == [1, 2, 5] and body["duplicate_lines"] == [4]
    assert body["counts"]["rejected"] == 3 and body["matched"] == 1


@pytest.mark.parametrize("role", ["partner", "loyalty", "support"])
def test_only_finance_and_admin_may_reconcile(client, issued, role):
    response = _post(client, issued, "ARAY-RECON-0001\n", role=role)
    assert response.status_code == 403 and response.json()["code"] == "forbidden"


@pytest.mark.parametrize(
    "url,content_type,status,code",
    [
        ("/v1/reconciliation/partners/nobody?period=2026-03", "text/csv", 404, "unknown_partner"),
        ("/v1/reconciliation/partners/aray-cinema?period=2026-3", "text/csv", 422, "validation_error"),
        ("/v1/reconciliation/partners/aray-cinema", "text/csv", 422, "validation_error"),
        (URL, "application/json", 415, "unsupported_media_type"),
    ],
)
def test_bad_reconciliation_requests_are_problems(client, issued, url, content_type, status, code):
    response = client.post(
        url, content=b"x\n", headers={**issued.header("admin"), "Content-Type": content_type}
    )
    assert response.status_code == status and response.json()["code"] == code


def test_a_report_that_is_not_utf8_is_not_csv(client, issued):
    response = client.post(
        URL, content=b"\xff\xfe\x00", headers={**issued.header("finance"), "Content-Type": "text/csv"}
    )
    assert response.status_code == 422 and response.json()["code"] == "not_csv"
