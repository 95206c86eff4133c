"""The campaigns desk through the app in process: roles, a draft made and its file uploaded from the
console, the report of a bad line, maker-checker (the submitter may not approve, even as admin), the
audit rows of every move, and the downloads (the browser suite walks the same pages in Chromium)."""

from __future__ import annotations

import re
import uuid

import pytest
from sqlalchemy import text

from service.console import i18n
from service.kit.db.engine import new_session, transaction
from tests.conftest import import_codes_for
from tests.console.helpers import PASSWORD, csrf_of, sign_in
from tests.console.scenario import audit_rows

APPROVER = "approver@operator.kz"
SECOND_APPROVER = "approver2@operator.kz"
PHONES = [f"+7701{n:07d}" for n in range(2000, 2100)]


@pytest.fixture
def approvers(staff):
    from service.console.accounts import create_account

    with transaction() as s:
        create_account(s, email=APPROVER, password=PASSWORD, role="approver")
        create_account(s, email=SECOND_APPROVER, password=PASSWORD, role="approver")
    return staff


def signed_in(client, email: str) -> str:
    """Signs in and returns the session's CSRF token (from the campaigns page: an approver has no
    dashboard)."""
    assert sign_in(client, email).status_code == 303
    page = client.get("/console/campaigns")
    assert page.status_code == 200, page.text
    return csrf_of(page.text)


def csv_of(phones: list[str]) -> bytes:
    return ("phone,offer,ref\n" + "".join(f"{p},,r{i}\n" for i, p in enumerate(phones))).encode()


def create(client, token: str, name: str = "New Year", **fields) -> str:
    body = {"csrf_token": token, "program": "mobile-bonus", "tariff": "basic", "offer": "cinema-2000"}
    response = client.post(
        "/console/campaigns", data={**body, "name": name, **fields}, follow_redirects=False
    )
    assert response.status_code == 303, response.text
    found = re.fullmatch(r"/console/campaigns/([0-9a-f-]{36})\?done=created", response.headers["location"])
    assert found, response.headers["location"]
    return found.group(1)


def upload(client, token: str, campaign_id: str, content: bytes, name: str = "list.csv"):
    return client.post(
        f"/console/campaigns/{campaign_id}/upload",
        data={"csrf_token": token},
        files={"file": (name, content, "text/csv")},
    )


def status_of(campaign_id: str) -> str:
    with new_session() as s:
        return s.execute(
            text("SELECT status FROM campaigns WHERE id = :id"), {"id": uuid.UUID(campaign_id)}
        ).scalar_one()


def submitted_big(client, staff, maker: str | None = None) -> str:
    """60 lines of 2 000: 120 000, above mobile-bonus's 100 000 threshold, so it waits for approval."""
    import_codes_for("ARAY-CINEMA-2000", 60)
    token = signed_in(client, maker or staff.support)
    cid = create(client, token)
    assert upload(client, token, cid, csv_of(PHONES[:60])).status_code == 200
    response = client.post(f"/console/campaigns/{cid}/submit", data={"csrf_token": token})
    assert response.status_code == 200, response.text
    assert status_of(cid) == "submitted"
    return cid


def test_the_page_is_for_support_admin_approver_and_finance_and_not_for_partners(client, approvers):
    for email in (approvers.support, approvers.admin, APPROVER, approvers.finance):
        client.cookies.clear()
        signed_in(client, email)
    client.cookies.clear()
    sign_in(client, approvers.partner)
    assert client.get("/console/campaigns").status_code == 403


def test_an_approver_lands_on_the_campaigns_page_and_may_not_create_one(client, approvers):
    token = signed_in(client, APPROVER)
    landing = client.get("/console/", follow_redirects=False)
    assert landing.headers["location"] == "/console/campaigns"
    assert 'id="create-form"' not in client.get("/console/campaigns").text
    body = {"csrf_token": token, "program": "mobile-bonus", "tariff": "basic", "offer": "cinema-2000"}
    assert client.post("/console/campaigns", data={**body, "name": "x"}).status_code == 403


def test_a_form_without_the_csrf_token_is_refused(client, approvers):
    token = signed_in(client, approvers.support)
    cid = create(client, token)
    response = client.post(f"/console/campaigns/{cid}/submit", data={"csrf_token": "forged"})
    assert response.status_code == 403 and status_of(cid) == "draft"


def test_an_approval_or_rejection_with_a_forged_csrf_token_is_refused(client, approvers):
    signed_in(client, APPROVER)
    for move in ("approve", "reject"):
        response = client.post(
            f"/console/campaigns/{uuid.uuid4()}/{move}", data={"csrf_token": "forged", "reason": "r"}
        )
        assert response.status_code == 403 and i18n.translate("ru", "login.csrf") in response.text


def test_an_upload_with_a_bad_line_shows_its_report_and_the_whole_report_downloads(client, approvers):
    import_codes_for("ARAY-CINEMA-2000", 5)
    token = signed_in(client, approvers.support)
    cid = create(client, token)
    content = "Телефон;Оффер;ref\n87012342000;;a\n7.70123E+10;;b\n+7 701 234 20 02;;c\n".encode("cp1251")
    page = upload(client, token, cid, content)
    assert page.status_code == 200, page.text
    html = page.text
    assert 'id="report"' in html and "<td data-label" in html
    row = re.search(r'<table class="list small" id="report">.*?</table>', html, re.S).group(0)
    assert ">3<" in row  # the bad line, by its number (the header is line 1)
    assert "Номер в экспоненциальной записи" in row  # the code described in the page's language
    assert 'id="file-encoding">windows-1251<' in html and 'id="file-separator">;<' in html
    assert 'id="submit" disabled' in html  # a draft with problems is not submitted
    refused = client.post(f"/console/campaigns/{cid}/submit", data={"csrf_token": token})
    assert refused.status_code == 409 and 'id="flash-error"' in refused.text
    report = client.get(f"/console/campaigns/{cid}/report.csv")
    assert report.status_code == 200 and report.headers["content-type"].startswith("text/csv")
    lines = report.text.splitlines()
    assert lines[0] == "line,code,message" and lines[1].startswith("3,")
    actions = [(r["action"], r["outcome"]) for r in audit_rows() if r["action"].startswith("campaign_")]
    assert actions == [
        ("campaign_create", "ok"),
        ("campaign_upload", "ok"),
        ("campaign_submit", "campaign_not_valid"),
    ]


def test_a_file_that_cannot_be_read_is_refused_in_words_and_audited(client, approvers):
    token = signed_in(client, approvers.support)
    cid = create(client, token)
    page = upload(client, token, cid, b"phone,offer,ref\n")
    assert page.status_code == 422 and 'id="flash-error"' in page.text
    assert i18n.translate("ru", "problem.upload_refused", detail="")[:10] in page.text
    assert audit_rows()[-1]["action"] == "campaign_upload" and audit_rows()[-1]["outcome"] == "upload_refused"


def test_the_approver_sees_the_frozen_snapshot_and_the_submitter_may_not_approve(client, approvers):
    cid = submitted_big(client, approvers)
    with new_session() as s:
        sha = s.execute(
            text("SELECT submitted_sha256 FROM campaigns WHERE id = :id"), {"id": uuid.UUID(cid)}
        ).scalar_one()
    # the submitter sees the snapshot, no approve button (support may not approve at all)
    own = client.get(f"/console/campaigns/{cid}").text
    assert sha.hex() in own and 'id="approve"' not in own
    assert client.post(f"/console/campaigns/{cid}/approve", data={"csrf_token": "x"}).status_code == 403

    client.cookies.clear()
    token = signed_in(client, APPROVER)
    page = client.get(f"/console/campaigns/{cid}").text
    assert f'id="snapshot-sha">{sha.hex()}<' in page
    assert 'id="snapshot-lines">60<' in page
    assert "120\u00a0000,00\u00a0₸" in page
    assert 'id="approve"' in page and 'id="reject"' in page and 'id="submit"' not in page
    done = client.post(
        f"/console/campaigns/{cid}/approve", data={"csrf_token": token, "file_sha256": sha.hex()}
    )
    assert done.status_code == 200 and 'id="flash"' in done.text and status_of(cid) == "approved"
    approve = [r for r in audit_rows() if r["action"] == "campaign_approve"]
    assert [(r["email"], r["role"], r["target"], r["outcome"]) for r in approve] == [
        (APPROVER, "approver", cid, "ok")
    ]


def test_an_approver_who_submitted_is_refused_with_a_message_not_a_500(client, approvers):
    """Maker-checker holds whatever the role: an admin who submits cannot approve (no approve role),
    and the domain refuses an approver-submitter too. Here the submitter's id is an approver's."""
    import_codes_for("ARAY-CINEMA-2000", 60)
    token = signed_in(client, approvers.admin)
    cid = create(client, token)
    assert upload(client, token, cid, csv_of(PHONES[:60])).status_code == 200
    client.post(f"/console/campaigns/{cid}/submit", data={"csrf_token": token})
    with new_session() as s:
        approver_id = s.execute(
            text("SELECT id FROM staff_accounts WHERE email = :e"), {"e": APPROVER}
        ).scalar_one()
    with transaction() as s:  # as if the approver had submitted it (the API takes any maker's key)
        s.execute(
            text("UPDATE campaigns SET submitted_by = :by WHERE id = :id"),
            {"by": f"staff:{approver_id}", "id": uuid.UUID(cid)},
        )
    client.cookies.clear()
    token = signed_in(client, APPROVER)
    page = client.get(f"/console/campaigns/{cid}").text
    assert 'id="own-submission"' in page
    refused = client.post(f"/console/campaigns/{cid}/approve", data={"csrf_token": token})
    assert refused.status_code == 403
    assert i18n.translate("ru", "problem.same_person") in refused.text
    assert status_of(cid) == "submitted"
    last = audit_rows()[-1]
    assert (last["action"], last["outcome"], last["email"]) == ("campaign_approve", "same_person", APPROVER)


def test_a_rejection_needs_a_reason_and_sends_the_campaign_back_to_draft(client, approvers):
    cid = submitted_big(client, approvers)
    client.cookies.clear()
    token = signed_in(client, SECOND_APPROVER)
    assert client.post(f"/console/campaigns/{cid}/reject", data={"csrf_token": token}).status_code == 422
    done = client.post(
        f"/console/campaigns/{cid}/reject", data={"csrf_token": token, "reason": "wrong tariff"}
    )
    assert done.status_code == 200 and status_of(cid) == "draft"
    assert "wrong tariff" in done.text and 'id="rejection"' in done.text
    (row,) = [r for r in audit_rows() if r["action"] == "campaign_reject"]
    assert row["details"] == {"reason": "wrong tariff"}


def test_an_approval_of_a_snapshot_other_than_the_one_shown_is_refused(client, approvers):
    cid = submitted_big(client, approvers)
    client.cookies.clear()
    token = signed_in(client, APPROVER)
    refused = client.post(
        f"/console/campaigns/{cid}/approve", data={"csrf_token": token, "file_sha256": "00" * 32}
    )
    assert refused.status_code == 409 and status_of(cid) == "submitted"


def test_pause_resume_cancel_show_by_state_and_are_audited_and_results_download(client, approvers):
    from service.campaigns.service import run_step

    import_codes_for("ARAY-CINEMA-2000", 3)
    token = signed_in(client, approvers.support)
    cid = create(client, token, rate_per_second="1")
    assert upload(client, token, cid, csv_of(PHONES[:3])).status_code == 200
    page = client.post(f"/console/campaigns/{cid}/submit", data={"csrf_token": token})
    assert status_of(cid) == "approved"  # 6 000: within the threshold, approved at once
    assert 'id="pause"' in page.text and 'id="resume"' not in page.text
    assert 'hx-trigger="every 3s"' in page.text  # the progress refreshes itself
    run_step(uuid.UUID(cid), budget_s=0.2)
    fragment = client.get(f"/console/campaigns/{cid}/progress")
    assert fragment.status_code == 200 and 'id="lines-done">1<' in fragment.text
    paused = client.post(f"/console/campaigns/{cid}/pause", data={"csrf_token": token})
    assert status_of(cid) == "paused" and 'id="resume"' in paused.text and 'id="pause"' not in paused.text
    assert "hx-trigger" not in paused.text
    client.post(f"/console/campaigns/{cid}/resume", data={"csrf_token": token})
    assert status_of(cid) == "running"
    asked = client.post(f"/console/campaigns/{cid}/cancel", data={"csrf_token": token})
    assert 'id="cancel-confirm"' in asked.text and status_of(cid) == "running"
    done = client.post(f"/console/campaigns/{cid}/cancel", data={"csrf_token": token, "confirm": "yes"})
    assert done.status_code == 200 and status_of(cid) == "cancelled"
    assert 'id="cancel"' not in done.text and 'id="lines-cancelled">2<' in done.text
    results = client.get(f"/console/campaigns/{cid}/results?format=csv")
    assert results.status_code == 200
    rows = results.text.splitlines()
    assert rows[0].startswith("line,ref,phone") and len(rows) == 4
    assert "+77012002000" not in results.text  # phones masked
    xlsx = client.get(f"/console/campaigns/{cid}/results?format=xlsx")
    assert xlsx.status_code == 200 and xlsx.content.startswith(b"PK")
    moves = [r["action"] for r in audit_rows() if r["action"].startswith("campaign_")]
    assert moves == [
        "campaign_create",
        "campaign_upload",
        "campaign_submit",
        "campaign_pause",
        "campaign_resume",
        "campaign_cancel",
    ]


def test_a_support_agent_scoped_to_another_program_sees_no_campaign_of_this_one(client, approvers):
    token = signed_in(client, approvers.support)
    cid = create(client, token)
    client.cookies.clear()
    signed_in(client, approvers.support_business)
    assert cid not in client.get("/console/campaigns").text
    assert client.get(f"/console/campaigns/{cid}").status_code == 404
    assert client.get(f"/console/campaigns/{cid}/report.csv").status_code == 404


def test_the_page_speaks_kazakh_and_english(client, approvers):
    token = signed_in(client, approvers.support)
    cid = create(client, token)
    for locale in ("kk", "en"):
        client.get(f"/console/lang/{locale}", params={"next": "/console/campaigns"})
        html = client.get(f"/console/campaigns/{cid}").text
        assert i18n.translate(locale, "camp.file") in html and f'<html lang="{locale}">' in html
