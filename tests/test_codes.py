"""Code pools: uploads dedupe, report per line, and never store a code or PIN in clear."""

from __future__ import annotations

import json
from datetime import UTC

import pytest
from sqlalchemy import text

from service.kit.db.engine import new_session

URL = "/v1/products/KITAP-BOOKS-5000/codes"


def _upload(client, keys, body: str, content_type: str = "text/csv", role: str = "admin", url: str = URL):
    return client.post(url, content=body, headers={**keys.header(role), "Content-Type": content_type})


def _pool(sku: str = "KITAP-BOOKS-5000") -> int:
    with new_session() as s:
        return s.execute(
            text("SELECT count(*) FROM codes c JOIN products p ON p.id = c.product_id WHERE p.sku = :sku"),
            {"sku": sku},
        ).scalar_one()


def test_duplicates_within_one_file_count_once(client, keys):
    body = "code,pin,expires_at\nBOOK-A1,1111,2030-01-01\nBOOK-A2,,\nBOOK-A1,1111,2030-01-01\n"
    result = _upload(client, keys, body).json()
    assert (result["lines"], result["accepted"], result["duplicates"], result["rejected"]) == (3, 2, 1, 0)
    assert result["duplicate_lines"] == [4]
    assert _pool() == 2


def test_re_uploading_the_same_file_adds_nothing(client, keys):
    body = "BOOK-B1\nBOOK-B2\nBOOK-B3\n"
    assert _upload(client, keys, body).json()["accepted"] == 3
    again = _upload(client, keys, body).json()
    assert (again["accepted"], again["duplicates"], again["duplicate_lines"]) == (0, 3, [1, 2, 3])
    assert _pool() == 3


def test_a_code_already_in_another_sku_of_the_same_partner_is_a_duplicate(client, keys):
    assert _upload(client, keys, "SHARED-1\n").json()["accepted"] == 1
    other = _upload(client, keys, "SHARED-1\n", url="/v1/products/KITAP-CERT-2500/codes").json()
    assert other["duplicates"] == 1 and _pool("KITAP-CERT-2500") == 0


def test_bad_lines_are_rejected_with_reasons_and_good_ones_kept(client, keys):
    body = (
        "code,pin,expires_at\nGOOD-1,,\n,1234,\nGOOD-2,,2001-01-01\nGOOD-3,,not-a-date\n"
        "GOOD-4,,2030-01-01T00:00:00\nGOOD-5,1,2,3\n" + "X" * 200 + "\n"
    )
    result = _upload(client, keys, body).json()
    assert result["accepted"] == 1 and result["rejected"] == 6
    reasons = {r["line"]: r["reason"] for r in result["rejected_lines"]}
    assert reasons[3] == "code is empty"
    assert reasons[4] == "code has already expired"
    assert "RFC 3339" in reasons[5]
    assert "time zone" in reasons[6]
    assert "too many columns" in reasons[7]
    assert "longer than" in reasons[8]


def test_json_upload_takes_objects_and_strings(client, keys):
    body = json.dumps(
        {"codes": [{"code": "JSON-1", "pin": "0001", "expires_at": "2031-05-01"}, "JSON-2", {"pin": "x"}]}
    )
    result = _upload(client, keys, body, "application/json").json()
    assert (result["accepted"], result["rejected"]) == (2, 1)


def test_no_code_or_pin_is_stored_in_clear(client, keys):
    code, pin = "PLAINTEXT-CANARY-7731", "918273"
    assert _upload(client, keys, f"{code},{pin},2030-01-01\n").json()["accepted"] == 1
    with new_session() as s:
        row = s.execute(
            text("SELECT c.*::text AS everything, c.last4, c.code_enc, c.pin_enc, c.fingerprint FROM codes c")
        ).one()
        uploads = s.execute(text("SELECT string_agg(u::text, ' ') FROM code_uploads u")).scalar_one()
    assert code not in row.everything and pin not in row.everything and code not in uploads
    for blob in (row.code_enc, row.pin_enc, row.fingerprint):
        assert code.encode() not in bytes(blob) and pin.encode() not in bytes(blob)
    assert row.last4 == "7731"
    from service.kit.security.crypto import get_vault

    assert get_vault().decrypt(bytes(row.code_enc), b"code") == code
    assert get_vault().decrypt(bytes(row.pin_enc), b"pin") == pin


def test_partner_may_not_upload_into_another_partners_product(client, keys):
    response = _upload(client, keys, "X-1\n", role="partner")  # aray-cinema key, kitap-books sku
    assert response.status_code == 404 and response.json()["code"] == "not_found"
    assert _pool() == 0


def test_a_universal_card_has_no_code_pool(client, keys):
    response = _upload(client, keys, "X-1\n", url="/v1/products/QAZAQ-GIFT-CARD/codes")
    assert response.status_code == 422 and response.json()["code"] == "not_a_code_product"


def test_a_partner_learns_nothing_about_a_product_not_its_own_not_even_its_kind(client, keys):
    response = _upload(client, keys, "X-1\n", role="partner", url="/v1/products/QAZAQ-GIFT-CARD/codes")
    assert response.status_code == 404 and response.json()["code"] == "not_found"


def test_unknown_sku_is_404(client, keys):
    assert _upload(client, keys, "X-1\n", url="/v1/products/NO-SUCH-SKU/codes").status_code == 404


def test_malformed_json_upload_is_400_and_writes_nothing(client, keys):
    response = _upload(client, keys, '{"codes": [', "application/json")
    assert response.status_code == 400 and response.json()["code"] == "malformed_json"
    with new_session() as s:
        assert s.execute(text("SELECT count(*) FROM code_uploads")).scalar_one() == 0


def test_other_media_types_are_415(client, keys):
    response = _upload(client, keys, "<codes/>", "application/xml")
    assert response.status_code == 415 and response.json()["code"] == "unsupported_media_type"


def test_oversized_upload_is_413(client, keys, monkeypatch):
    big = "C-" + "9" * 60 + "\n"
    response = _upload(client, keys, big * 200_000)  # ~12.6 MB, over the 10 MB default
    assert response.status_code == 413 and response.json()["code"] == "payload_too_large"
    assert _pool() == 0


def test_stock_counts_available_expiring_and_low(client, keys):
    _upload(client, keys, "S-1,,2030-01-01\nS-2,,\n")
    from datetime import datetime, timedelta

    soon = (datetime.now(UTC) + timedelta(days=3)).isoformat()
    _upload(client, keys, f"S-3,,{soon}\n")
    item = next(
        i
        for i in client.get("/v1/stock", headers=keys.header("support")).json()["items"]
        if i["sku"] == "KITAP-BOOKS-5000"
    )
    assert (item["available"], item["expiring_soon"], item["reserved"], item["issued"]) == (3, 1, 0, 0)
    assert item["low_stock"] is True


def test_cli_import_of_a_file_dedupes_against_the_api(client, keys, tmp_path, services):
    import subprocess
    import sys

    _upload(client, keys, "CLI-1\n")
    path = tmp_path / "codes.csv"
    path.write_text("code,pin\nCLI-1,\nCLI-2,\nCLI-3,1234\n")
    result = subprocess.run(
        [sys.executable, "-m", "service.cli", "codes", "import", "KITAP-BOOKS-5000", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert (summary["lines"], summary["accepted"], summary["duplicates"]) == (3, 2, 1)
    assert _pool() == 3


def test_json_items_that_are_neither_string_nor_object_refuse_the_whole_body(client, keys):
    """Issue 15: `[null, null]` (or a number) is a body the schema forbids: 422, nothing imported."""
    before = _pool()
    response = _upload(client, keys, "[null, null]", content_type="application/json")
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["code"] == "validation_error"
    assert _pool() == before


@pytest.mark.parametrize(
    "item", ['{"code": 123}', '{"code": "X-1", "pin": 1234}', '{"code": "X-1", "expires_at": []}']
)
def test_a_json_item_whose_fields_are_not_strings_refuses_the_whole_body(client, keys, item):
    """Issue 15: the schema says code, pin and expires_at are strings (or null): 422, nothing imported."""
    before = _pool()
    response = _upload(client, keys, f'{{"codes": ["OK-1", {item}]}}', content_type="application/json")
    assert response.status_code == 422 and response.json()["code"] == "validation_error", response.text
    assert response.json()["errors"][0]["field"].startswith("body.codes[1].")
    assert _pool() == before
