"""Campaigns (issue 27): a draft, its file validated as a whole before anything is reserved, maker-checker
approval, a runner that turns lines into ordinary redemptions, pause/resume/cancel, opt-outs, quiet
hours and the results. One behaviour per test."""

from __future__ import annotations

import csv
import io
import threading
import uuid
from datetime import UTC, datetime

import pytest
from sqlalchemy import text

from service.kit.db.engine import new_session, transaction
from tests.conftest import assert_problem, import_codes_for, table_counts

PHONES = [f"+7701{n:07d}" for n in range(1000, 1100)]


@pytest.fixture
def approver(keys):
    from service.auth.service import create_key
    from service.console.accounts import create_account

    with transaction() as s:
        create_account(s, email="checker@example.kz", password="checker-password-1", role="approver")
        return create_key(s, role="approver", name="second-pair-of-eyes", owner="checker@example.kz").key


@pytest.fixture
def stocked(keys):
    import_codes_for("ARAY-CINEMA-2000", 30)
    return keys


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def create(client, keys, role: str = "loyalty", **overrides) -> dict:
    body = {"program": "mobile-bonus", "tariff": "basic", "offer": "cinema-2000", "name": "New Year"}
    body.update(overrides)
    response = client.post("/v1/campaigns", json=body, headers=keys.header(role))
    assert response.status_code == 201, response.text
    return response.json()


def upload(
    client, keys, campaign_id: str, content: bytes | str, media: str = "text/csv", role: str = "loyalty"
):
    data = content.encode() if isinstance(content, str) else content
    return client.put(
        f"/v1/campaigns/{campaign_id}/lines",
        content=data,
        headers={
            **keys.header(role),
            "Content-Type": media,
            "Content-Disposition": 'attachment; filename="list.csv"',
        },
    )


def csv_of(phones: list[str], offer: str | None = None) -> str:
    lines = ["phone,offer,ref"] + [f"{p},{offer or ''},r{i}" for i, p in enumerate(phones)]
    return "\n".join(lines) + "\n"


def uploaded(client, keys, n: int = 3, role: str = "loyalty", **overrides) -> dict:
    campaign = create(client, keys, role=role, **overrides)
    response = upload(client, keys, campaign["id"], csv_of(PHONES[:n]), role=role)
    assert response.status_code == 200, response.text
    assert response.json()["report"]["problems"] == 0, response.json()["report"]
    return response.json()


def submitted(client, keys, n: int = 3, role: str = "loyalty", **overrides) -> dict:
    campaign = uploaded(client, keys, n, role=role, **overrides)
    response = client.post(f"/v1/campaigns/{campaign['id']}/submit", headers=keys.header(role))
    assert response.status_code == 200, response.text
    return response.json()


def run_all(campaign_id: str) -> None:
    from service.campaigns.service import run_step

    for _ in range(100):
        if run_step(uuid.UUID(campaign_id), budget_s=5.0).again_in_ms is None:
            return
    raise AssertionError("the campaign did not finish")


def approved(client, keys, approver: str, n: int = 3, **overrides) -> dict:
    # 3 cinema codes of 2 000 are 6 000: under mobile-bonus's 100 000 threshold, so approved at once.
    campaign = submitted(client, keys, n, **overrides)
    if campaign["status"] == "submitted":
        response = client.post(f"/v1/campaigns/{campaign['id']}/approve", headers=_auth(approver))
        assert response.status_code == 200, response.text
        campaign = response.json()
    assert campaign["status"] == "approved"
    return campaign


def _big(client, keys) -> dict:
    """A campaign over the program's approval threshold: a budget cap makes none; 60 lines of 2 000."""
    import_codes_for("ARAY-CINEMA-2000", 60)
    return submitted(client, keys, 60)


# --- the draft and its file -----------------------------------------------------------------------


def test_a_draft_takes_a_file_and_says_which_encoding_and_separator_it_found(client, stocked):
    campaign = create(client, stocked)
    assert campaign["status"] == "draft" and campaign["file"] is None
    text_1251 = "Телефон;Оффер;ref\n87011231000;;a\n+7 701 123 10 01;cinema-2000;b\n".encode("cp1251")
    body = upload(client, stocked, campaign["id"], text_1251).json()
    assert body["file"]["encoding"] == "windows-1251" and body["file"]["separator"] == ";"
    assert body["lines"]["total"] == 2 and body["report"]["problems"] == 0
    assert body["total"] == {"amount": "4000.00", "currency": "KZT"}


def test_validation_reports_each_bad_line_by_number_and_reserves_nothing(client, stocked):
    campaign = create(client, stocked)
    content = (
        "phone,offer,ref\n87011231000,,a\n7.70123E+10,,b\n87172123456,,c\n"
        "87011231003,no-such-offer,d\n87011231004,,a\n"
    )
    body = upload(client, stocked, campaign["id"], content).json()
    report = client.get(f"/v1/campaigns/{campaign['id']}/report", headers=stocked.header("loyalty"))
    assert report.status_code == 200
    rows = list(csv.DictReader(io.StringIO(report.text)))
    by_line = {int(r["line"]): r["code"] for r in rows if r["line"]}
    assert by_line == {
        3: "phone_scientific_notation",
        4: "not_mobile",
        5: "unknown_offer",
        6: "duplicate_ref",
    }
    assert body["report"]["problems"] == 4
    assert "87172123456" not in report.text and "7172123456" not in report.text  # phones masked
    counts = table_counts("redemptions", "reconciliation_records", "outbox")
    assert counts == {"redemptions": 0, "reconciliation_records": 0, "outbox": 0}
    with new_session() as s:
        assert s.execute(text("SELECT count(*) FROM codes WHERE status <> 'available'")).scalar_one() == 0


def test_a_draft_with_problems_cannot_be_submitted(client, stocked):
    campaign = create(client, stocked)
    upload(client, stocked, campaign["id"], "phone\n12345\n")
    response = client.post(f"/v1/campaigns/{campaign['id']}/submit", headers=stocked.header("loyalty"))
    assert_problem(response, 409, "campaign_not_valid")


def test_the_stock_for_the_whole_campaign_is_checked_against_the_pool(client, keys):
    import_codes_for("ARAY-CINEMA-2000", 2)
    campaign = create(client, keys)
    body = upload(client, keys, campaign["id"], csv_of(PHONES[:3])).json()
    assert [p["code"] for p in body["report"]["first"]] == ["out_of_stock"]
    assert "needs 3 codes, the pool holds 2" in body["report"]["first"][0]["message"]


def test_the_value_is_checked_against_the_campaigns_budget_cap(client, stocked):
    campaign = create(client, stocked, budget_cap="5000.00")
    body = upload(client, stocked, campaign["id"], csv_of(PHONES[:3])).json()
    assert [p["code"] for p in body["report"]["first"]] == ["over_budget_cap"]


def test_a_program_without_a_kazakh_template_is_refused_at_validation(client, stocked, demo_catalog):
    from dataclasses import replace

    from service.catalog.service import apply_catalog

    programs = []
    for p in demo_catalog.spec.programs:
        if p.code == "mobile-bonus":
            code = p.templates.code.model_copy(update={"kk": None})
            p = p.model_copy(update={"templates": p.templates.model_copy(update={"code": code})})
        programs.append(p)
    spec = demo_catalog.spec.model_copy(update={"programs": tuple(programs)})
    with transaction() as s:
        apply_catalog(s, replace(demo_catalog, spec=spec, digest="without-kk"))
    campaign = create(client, stocked)
    body = upload(client, stocked, campaign["id"], csv_of(PHONES[:1])).json()
    assert [p["code"] for p in body["report"]["first"]] == ["no_kk_template"]


@pytest.mark.parametrize(
    ("content", "reason"),
    [(b"", "empty_file"), (b"phone,offer,ref\n", "header_only"), (bytes(range(256)) * 40, "unreadable_file")],
)
def test_a_file_that_cannot_be_read_is_refused_and_writes_nothing(client, stocked, content, reason):
    campaign = create(client, stocked)
    body = assert_problem(upload(client, stocked, campaign["id"], content), 422, "upload_refused")
    assert body["reason"] == reason
    assert table_counts("campaign_lines", "campaign_problems") == {
        "campaign_lines": 0,
        "campaign_problems": 0,
    }


def test_another_media_type_is_refused(client, stocked):
    campaign = create(client, stocked)
    body = assert_problem(
        upload(client, stocked, campaign["id"], "x", media="image/png"), 422, "upload_refused"
    )
    assert body["reason"] == "unknown_format"


def test_a_new_upload_replaces_the_drafts_lines_and_report(client, stocked):
    campaign = create(client, stocked)
    upload(client, stocked, campaign["id"], "phone\n12345\n")
    body = upload(client, stocked, campaign["id"], csv_of(PHONES[:2])).json()
    assert body["report"]["problems"] == 0 and body["lines"]["total"] == 2


def test_an_upload_to_a_campaign_that_is_no_longer_a_draft_is_409(client, stocked):
    campaign = submitted(client, stocked)
    assert_problem(upload(client, stocked, campaign["id"], csv_of(PHONES[:2])), 409, "campaign_not_draft")


def test_xlsx_and_jsonl_files_are_taken(client, stocked):
    from openpyxl import Workbook

    book = Workbook()
    sheet = book.active
    sheet.append(["phone", "ref"])
    sheet.append([77011231000, "x1"])
    sheet.append(["+77011231001", "x2"])
    out = io.BytesIO()
    book.save(out)
    campaign = create(client, stocked)
    media = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
    body = upload(client, stocked, campaign["id"], out.getvalue(), media=media).json()
    assert (
        body["file"]["format"] == "xlsx" and body["lines"]["total"] == 2 and body["report"]["problems"] == 0
    )
    other = create(client, stocked)
    jsonl = '{"phone": "87011231000", "ref": "j1"}\n{"phone": "87011231001"}\n'
    body = upload(client, stocked, other["id"], jsonl, media="application/jsonl").json()
    assert body["file"]["format"] == "jsonl" and body["lines"]["total"] == 2


# --- maker-checker --------------------------------------------------------------------------------


def test_below_the_threshold_a_submitted_campaign_is_approved_at_once(client, stocked):
    campaign = submitted(client, stocked, 3)
    assert campaign["status"] == "approved"
    assert campaign["submission"]["needs_approval"] is False
    assert campaign["reserved"] == {"amount": "6000.00", "currency": "KZT"}


def test_above_the_threshold_it_waits_for_a_second_person_and_shows_the_frozen_snapshot(client, keys):
    campaign = _big(client, keys)
    assert campaign["status"] == "submitted"
    submission = campaign["submission"]
    assert submission["lines"] == 60 and submission["total"] == {"amount": "120000.00", "currency": "KZT"}
    assert submission["file_sha256"] == campaign["file"]["sha256"] and len(submission["file_sha256"]) == 64


def test_the_submitter_may_never_approve_even_as_admin(client, keys):
    import_codes_for("ARAY-CINEMA-2000", 60)
    campaign = submitted(client, keys, 60, role="admin")
    response = client.post(f"/v1/campaigns/{campaign['id']}/approve", headers=keys.header("admin"))
    assert_problem(response, 403, "same_person")


def test_a_key_and_a_console_account_of_one_person_are_one_submitter(client, keys):
    """The person who holds the submitting key may not approve with a key of theirs either."""
    from service.auth.service import create_key
    from service.console.accounts import create_account

    with transaction() as s:
        create_account(s, email="maker@example.kz", password="maker-password-1", role="approver")
        maker = create_key(
            s, role="loyalty", name="maker", programs=["mobile-bonus"], owner="maker@example.kz"
        )
        own_approver = create_key(s, role="approver", name="maker-too", owner="maker@example.kz")
    import_codes_for("ARAY-CINEMA-2000", 60)
    campaign = create(client, keys)
    client.put(
        f"/v1/campaigns/{campaign['id']}/lines",
        content=csv_of(PHONES[:60]).encode(),
        headers={**_auth(maker.key), "Content-Type": "text/csv"},
    )
    response = client.post(f"/v1/campaigns/{campaign['id']}/submit", headers=_auth(maker.key))
    assert response.json()["status"] == "submitted", response.text
    response = client.post(f"/v1/campaigns/{campaign['id']}/approve", headers=_auth(own_approver.key))
    assert_problem(response, 403, "same_person")


def test_an_approver_key_is_always_a_persons():
    from service.auth.service import create_key

    with transaction() as s, pytest.raises(ValueError, match="owner"):
        create_key(s, role="approver", name="nobody's")


def test_a_key_without_an_owner_may_not_decide_on_a_campaign(client, keys):
    """An admin key without an owner (an approver key made before owners existed is the same)."""
    import_codes_for("ARAY-CINEMA-2000", 60)
    campaign = submitted(client, keys, 60)
    response = client.post(f"/v1/campaigns/{campaign['id']}/approve", headers=keys.header("admin"))
    assert_problem(response, 403, "approver_not_identified")
    response = client.post(
        f"/v1/campaigns/{campaign['id']}/reject", json={"reason": "no"}, headers=keys.header("admin")
    )
    assert_problem(response, 403, "approver_not_identified")


def test_only_the_approver_role_approves(client, keys):
    campaign = _big(client, keys)
    for role in ("loyalty", "support", "finance"):
        response = client.post(f"/v1/campaigns/{campaign['id']}/approve", headers=keys.header(role))
        assert_problem(response, 403, "forbidden")


def test_approval_reserves_the_value_against_the_programs_budget(client, keys, approver):
    campaign = _big(client, keys)
    response = client.post(
        f"/v1/campaigns/{campaign['id']}/approve",
        json={"file_sha256": campaign["file"]["sha256"]},
        headers=_auth(approver),
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "approved" and body["approval"]["by"].startswith("staff:")
    with new_session() as s:
        assert s.execute(text("SELECT spent_minor FROM program_budget_usage")).scalar_one() == 12_000_000


def test_an_approval_of_another_snapshot_than_the_one_submitted_is_refused(client, keys, approver):
    campaign = _big(client, keys)
    response = client.post(
        f"/v1/campaigns/{campaign['id']}/approve", json={"file_sha256": "0" * 64}, headers=_auth(approver)
    )
    assert_problem(response, 409, "campaign_changed")


def test_a_rejection_records_who_and_why_and_returns_the_campaign_to_draft(client, keys, approver):
    campaign = _big(client, keys)
    response = client.post(
        f"/v1/campaigns/{campaign['id']}/reject", json={"reason": "wrong tariff"}, headers=_auth(approver)
    )
    body = response.json()
    assert body["status"] == "draft" and body["rejection"]["reason"] == "wrong tariff"
    assert body["rejection"]["by"].startswith("staff:")


def test_a_change_after_submission_sends_the_campaign_back_to_draft(client, keys):
    campaign = _big(client, keys)
    response = client.patch(
        f"/v1/campaigns/{campaign['id']}", json={"rate_per_second": 5}, headers=keys.header("loyalty")
    )
    body = response.json()
    assert body["status"] == "draft" and body["submission"] is None and body["rate_per_second"] == 5


def test_every_move_is_in_the_campaigns_history(client, keys, approver):
    campaign = _big(client, keys)
    client.post(f"/v1/campaigns/{campaign['id']}/approve", headers=_auth(approver))
    with new_session() as s:
        moves = s.execute(
            text("SELECT action, to_status, actor FROM campaign_moves WHERE campaign_id = :c ORDER BY id"),
            {"c": campaign["id"]},
        ).all()
    assert [(m.action, m.to_status) for m in moves] == [
        ("create", "draft"),
        ("upload", "draft"),
        ("submit", "submitted"),
        ("approve", "approved"),
    ]
    assert "second-pair-of-eyes" not in moves[2].actor and "approver" in moves[3].actor
    with new_session() as s:
        audited = s.execute(
            text("SELECT action, role FROM staff_audit_log WHERE target = :c ORDER BY id"),
            {"c": campaign["id"]},
        ).all()
    assert [(a.action, a.role) for a in audited] == [
        ("campaign_create", "loyalty"),
        ("campaign_upload", "loyalty"),
        ("campaign_submit", "loyalty"),
        ("campaign_approve", "approver"),
    ]


# --- running --------------------------------------------------------------------------------------


def test_each_line_becomes_an_ordinary_redemption_with_its_campaign_key_and_no_points(
    client, stocked, approver
):
    campaign = approved(client, stocked, approver, 3)
    run_all(campaign["id"])
    with new_session() as s:
        rows = s.execute(
            text(
                "SELECT r.external_id, r.points, r.status, r.campaign_id::text AS campaign,"
                " rec.campaign_id::text AS booked FROM redemptions r"
                " JOIN reconciliation_records rec ON rec.redemption_id = r.id ORDER BY r.external_id"
            )
        ).all()
        sms = s.execute(text("SELECT queue, actor FROM outbox WHERE actor LIKE '%sms%'")).all()
    assert [r.external_id for r in rows] == [f"campaign:{campaign['id']}:r{i}" for i in range(3)]
    assert all(r.points == 0 and r.campaign == campaign["id"] == r.booked for r in rows)
    assert sms and all((q.queue, q.actor) == ("sms_bulk", "deliver_campaign_sms") for q in sms)
    body = client.get(f"/v1/campaigns/{campaign['id']}", headers=stocked.header("loyalty")).json()
    assert body["status"] == "done" and body["lines"]["done"] == 3
    assert body["spent"] == {"amount": "6000.00", "currency": "KZT"}


def test_when_done_the_unused_reservation_goes_back_to_the_budget(client, keys, approver):
    import_codes_for("ARAY-CINEMA-2000", 60)
    campaign = submitted(client, keys, 60)
    client.post(f"/v1/campaigns/{campaign['id']}/approve", headers=_auth(approver))
    with transaction() as s:  # a third of the pool is taken meanwhile: 20 lines will find no code
        s.execute(
            text(
                "UPDATE codes SET status = 'voided'"
                " WHERE id IN (SELECT id FROM codes WHERE status = 'available' LIMIT 20)"
            )
        )
    run_all(campaign["id"])
    body = client.get(f"/v1/campaigns/{campaign['id']}", headers=keys.header("loyalty")).json()
    assert body["lines"]["done"] == 40 and body["lines"]["failed"] == 20
    with new_session() as s:
        assert s.execute(text("SELECT spent_minor FROM program_budget_usage")).scalar_one() == 40 * 200_000
        events = dict(
            s.execute(text("SELECT type, payload FROM webhook_events WHERE type LIKE 'campaign.%'")).all()
        )
    from service.events.schemas import EVENT_TYPES

    # each body is what the OpenAPI document's webhooks section declares for its type
    for kind in ("campaign.approved", "campaign.completed"):
        data = events[kind]["data"] if "data" in events[kind] else events[kind]
        EVENT_TYPES[kind][0].model_validate(data)
    completed = events["campaign.completed"].get("data", events["campaign.completed"])
    assert (completed["done"], completed["failed"]) == (40, 20)
    assert completed["spent"] == {"amount": "80000.00", "currency": "KZT"}


def test_two_workers_running_one_campaign_at_once_run_no_line_twice(client, keys, approver):
    import_codes_for("ARAY-CINEMA-2000", 60)
    campaign = submitted(client, keys, 60)
    client.post(f"/v1/campaigns/{campaign['id']}/approve", headers=_auth(approver))
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            run_all(campaign["id"])
        except BaseException as exc:  # noqa: BLE001  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    with new_session() as s:
        made = s.execute(text("SELECT count(*), count(DISTINCT external_id) FROM redemptions")).one()
        lines = s.execute(text("SELECT count(*) FROM campaign_lines WHERE status = 'done'")).scalar_one()
    assert tuple(made) == (60, 60) and lines == 60


def test_a_chunk_cut_midway_leaves_its_lines_to_run_again_once(client, stocked, approver):
    from service.campaigns.service import run_step
    from service.kit.reliability import faults

    campaign = approved(client, stocked, approver, 3)
    seen = []

    def crash() -> None:
        seen.append(1)
        if len(seen) == 2:
            raise RuntimeError("killed")

    faults.inject("campaign.after_line", crash)
    try:
        with pytest.raises(RuntimeError):
            run_step(uuid.UUID(campaign["id"]))
    finally:
        faults.clear()
    assert table_counts("redemptions")["redemptions"] == 0  # the chunk's transaction rolled back
    run_all(campaign["id"])
    with new_session() as s:
        made = s.execute(text("SELECT count(*), count(DISTINCT external_id) FROM redemptions")).one()
    assert tuple(made) == (3, 3)


def test_a_line_whose_redemption_exists_already_takes_it_and_makes_no_second(client, stocked, approver):
    from service.redemptions.schemas import RedemptionIn
    from service.redemptions.service import Scope, redeem

    campaign = approved(client, stocked, approver, 2)
    request = RedemptionIn.model_construct(
        program="mobile-bonus",
        tariff="basic",
        offer="cinema-2000",
        msisdn=PHONES[0],
        points=0,
        external_id=f"campaign:{campaign['id']}:r0",
        locale="kk",
    )
    with transaction() as s:
        first = redeem(s, request, scope=Scope(None), api_key_id=None, campaign_id=uuid.UUID(campaign["id"]))
    run_all(campaign["id"])
    with new_session() as s:
        assert s.execute(text("SELECT count(*) FROM redemptions")).scalar_one() == 2
        line = s.execute(text("SELECT status, redemption_id FROM campaign_lines WHERE line_no = 2")).one()
    assert line.status == "done" and line.redemption_id == first.id


def _runner_messages() -> int:
    with new_session() as s:
        return s.execute(text("SELECT count(*) FROM outbox WHERE actor = 'run_campaign'")).scalar_one()


def test_approval_resume_and_a_stall_each_send_the_configured_number_of_runner_chains(
    client, stocked, approver, monkeypatch
):
    from service.kit.config import get_settings
    from workers.housekeeping import CAMPAIGN_STALL, restart_stalled_campaigns

    monkeypatch.setattr(get_settings(), "campaign_runners", 3)
    campaign = approved(client, stocked, approver, 3)
    assert _runner_messages() == 3
    client.post(f"/v1/campaigns/{campaign['id']}/pause", headers=stocked.header("loyalty"))
    client.post(f"/v1/campaigns/{campaign['id']}/resume", headers=stocked.header("loyalty"))
    assert _runner_messages() == 6
    # no chain stepped for longer than the stall: all of them are sent again
    assert restart_stalled_campaigns(now=datetime.now(UTC) + CAMPAIGN_STALL * 2) == 1
    assert _runner_messages() == 9


def test_the_runners_first_step_gives_the_planner_the_uploaded_lines(client, stocked, approver):
    """The lines come in by COPY; a plan made with the table's statistics from before them read the
    whole of campaign_lines for every chunk until autovacuum's analyze came, a minute later."""
    from service.campaigns.service import run_step

    def counted_by_the_planner() -> float:
        with new_session() as s:
            return s.execute(
                text("SELECT reltuples FROM pg_class WHERE relname = 'campaign_lines'")
            ).scalar_one()

    with transaction() as s:
        s.execute(text("ANALYZE campaign_lines"))  # the statistics of an empty table
    campaign = approved(client, stocked, approver, 3, rate_per_second=1)
    assert counted_by_the_planner() <= 0
    run_step(uuid.UUID(campaign["id"]), budget_s=0.2)
    assert counted_by_the_planner() == 3


def test_pause_stops_new_lines_and_resume_goes_on_where_it_stopped(client, stocked, approver):
    from service.campaigns.service import run_step

    campaign = approved(client, stocked, approver, 3, rate_per_second=1)
    run_step(uuid.UUID(campaign["id"]), budget_s=0.2)  # one line: a rate of 1 a second
    paused = client.post(f"/v1/campaigns/{campaign['id']}/pause", headers=stocked.header("loyalty")).json()
    assert paused["status"] == "paused" and paused["lines"]["done"] == 1
    assert run_step(uuid.UUID(campaign["id"])).again_in_ms is None
    assert table_counts("redemptions")["redemptions"] == 1
    resumed = client.post(f"/v1/campaigns/{campaign['id']}/resume", headers=stocked.header("loyalty")).json()
    assert resumed["status"] == "running"
    run_all(campaign["id"])
    assert table_counts("redemptions")["redemptions"] == 3


def test_cancel_stops_the_lines_not_run_keeps_the_ones_that_ran_and_releases_the_rest(
    client, stocked, approver
):
    from service.campaigns.service import run_step

    campaign = approved(client, stocked, approver, 3, rate_per_second=1)
    run_step(uuid.UUID(campaign["id"]), budget_s=0.2)
    body = client.post(f"/v1/campaigns/{campaign['id']}/cancel", headers=stocked.header("loyalty")).json()
    assert body["status"] == "cancelled" and body["lines"]["done"] == 1 and body["lines"]["cancelled"] == 2
    assert body["reserved"] == {"amount": "2000.00", "currency": "KZT"}  # what the line that ran used
    with new_session() as s:
        assert s.execute(text("SELECT spent_minor FROM program_budget_usage")).scalar_one() == 200_000


def test_the_rate_paces_the_lines(client, stocked, approver):
    from service.campaigns.service import run_step

    campaign = approved(client, stocked, approver, 10, rate_per_second=2)
    step = run_step(uuid.UUID(campaign["id"]), budget_s=0.5)
    # a second's burst of a rate of 2: two lines, then the step waits for the next slot
    assert step.ran == 2 and step.again_in_ms is not None and step.again_in_ms > 0


class _RunnerClock:
    """The runner's clock (its module's `time`): each chunk of lines takes 0.1 s, a rest takes what it
    asks for, and the rests are recorded."""

    def __init__(self) -> None:
        self.now, self.rests = 0.0, []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.rests.append(round(seconds, 6))
        self.now += seconds


@pytest.fixture
def runner_clock(monkeypatch) -> _RunnerClock:
    from service.campaigns import service as campaign_service

    clock = _RunnerClock()
    run_chunk = campaign_service._run_chunk

    def chunk_of_a_tenth_of_a_second(*args, **kwargs):
        taken = run_chunk(*args, **kwargs)
        clock.now += 0.1
        return taken

    monkeypatch.setattr(campaign_service, "time", clock)
    monkeypatch.setattr(campaign_service, "_run_chunk", chunk_of_a_tenth_of_a_second)
    return clock


@pytest.mark.parametrize(("share", "rest"), [(0.5, 0.1), (0.25, 0.3), (1.0, 0.0)])
def test_a_runner_chain_rests_after_each_chunk_to_run_lines_for_its_share_of_the_time(
    client, stocked, approver, monkeypatch, runner_clock, share, rest
):
    from service.campaigns.service import run_step
    from service.kit.config import get_settings

    monkeypatch.setattr(get_settings(), "campaign_runner_share", share)
    import_codes_for("ARAY-CINEMA-2000", 60)
    campaign = approved(client, stocked, approver, 40)  # two chunks of 20 lines, then the drained one
    step = run_step(uuid.UUID(campaign["id"]), budget_s=5.0)
    assert step.ran == 40 and step.again_in_ms is None
    assert runner_clock.rests == [rest, rest]


def test_a_rest_past_the_steps_budget_delays_the_chains_next_step_instead(
    client, stocked, approver, monkeypatch, runner_clock
):
    from service.campaigns.service import run_step
    from service.kit.config import get_settings

    monkeypatch.setattr(get_settings(), "campaign_runner_share", 0.25)
    import_codes_for("ARAY-CINEMA-2000", 60)
    campaign = approved(client, stocked, approver, 40)
    step = run_step(uuid.UUID(campaign["id"]), budget_s=0.5)
    # 0.1 s of lines, 0.3 s of rest, 0.1 s of lines: the second rest is the next message's delay
    assert step.ran == 40 and step.again_in_ms == 300
    assert runner_clock.rests == [0.3]


def test_an_opted_out_subscriber_gets_the_reward_and_no_bulk_sms(client, stocked, approver):
    response = client.post(
        "/v1/programs/mobile-bonus/bulk-opt-outs",
        json={"msisdns": ["8 701 000 10 00"]},
        headers=stocked.header("loyalty"),
    )
    assert response.json() == {"changed": 1}
    campaign = approved(client, stocked, approver, 2)
    run_all(campaign["id"])
    with new_session() as s:
        rows = s.execute(text("SELECT msisdn, status, status_reason FROM redemptions ORDER BY msisdn")).all()
        queued = s.execute(
            text("SELECT count(*) FROM outbox WHERE actor = 'deliver_campaign_sms'")
        ).scalar_one()
    assert [(r.msisdn, r.status, r.status_reason) for r in rows] == [
        (PHONES[0], "failed", "bulk_opt_out"),
        (PHONES[1], "accepted", None),
    ]
    assert queued == 1
    body = client.get(f"/v1/campaigns/{campaign['id']}", headers=stocked.header("loyalty")).json()
    assert body["lines"]["without_sms"] == 1


def test_the_results_list_each_line_with_a_masked_phone_in_csv_and_xlsx(client, stocked, approver):
    from openpyxl import load_workbook

    campaign = approved(client, stocked, approver, 3)
    run_all(campaign["id"])
    url = f"/v1/campaigns/{campaign['id']}/results"
    rows = list(csv.DictReader(io.StringIO(client.get(url, headers=stocked.header("loyalty")).text)))
    assert [r["ref"] for r in rows] == ["r0", "r1", "r2"]
    assert all(r["status"] == "done" and len(r["redemption_id"]) == 36 for r in rows)
    assert all(PHONES[i][5:] not in rows[i]["phone"] for i in range(3))
    xlsx = client.get(url + "?format=xlsx", headers=stocked.header("loyalty"))
    sheet = load_workbook(io.BytesIO(xlsx.content)).active
    values = list(sheet.iter_rows(values_only=True))
    assert values[0][:3] == ("line", "ref", "phone") and len(values) == 4


def test_a_campaign_outside_the_keys_programs_is_not_found(client, stocked):
    from service.auth.service import create_key

    campaign = create(client, stocked)
    with transaction() as s:
        other = create_key(s, role="loyalty", name="home", programs=["home-internet"]).key
    response = client.get(f"/v1/campaigns/{campaign['id']}", headers=_auth(other))
    assert_problem(response, 404, "not_found")


# --- quiet hours ----------------------------------------------------------------------------------


def test_a_campaign_sms_in_quiet_hours_waits_until_they_end_on_almatys_wall_clock(client, stocked, approver):
    from service.campaigns.service import bulk_sms_not_before

    campaign = approved(client, stocked, approver, 1)
    run_all(campaign["id"])
    with new_session() as s:
        rid = s.execute(text("SELECT id FROM redemptions")).scalar_one()
    with transaction() as s:
        from service.kit.db.engine import driver

        db = driver(s)
        late = datetime(2026, 12, 7, 17, 30, tzinfo=UTC)  # 22:30 in Almaty (UTC+5 since 1 March 2024)
        assert bulk_sms_not_before(db, rid, late) == datetime(2026, 12, 8, 4, 0, tzinfo=UTC)  # 09:00
        day = datetime(2026, 12, 7, 6, 0, tzinfo=UTC)  # 11:00 in Almaty
        assert bulk_sms_not_before(db, rid, day) == day


def test_almaty_is_utc_plus_5_after_march_2024():
    from service.kit.values.zones import zone

    assert datetime(2026, 12, 7, 12, tzinfo=zone("Asia/Almaty")).utcoffset().total_seconds() == 5 * 3600


def test_a_file_over_the_size_limit_is_413_and_writes_nothing(client, stocked, monkeypatch):
    from service.campaigns import routes

    monkeypatch.setattr(routes, "MAX_UPLOAD_BYTES", 1000)
    campaign = create(client, stocked)
    response = upload(client, stocked, campaign["id"], csv_of(PHONES[:100]))
    assert_problem(response, 413, "payload_too_large")
    assert table_counts("campaign_lines", "campaign_problems") == {
        "campaign_lines": 0,
        "campaign_problems": 0,
    }


def test_the_downloadable_report_has_every_problem_not_only_the_first(client, stocked):
    campaign = create(client, stocked)
    content = "phone,ref\n" + "".join(f"12345,bad{i}\n" for i in range(3000))
    body = upload(client, stocked, campaign["id"], content).json()
    # 3000 bad lines, and the campaign as a whole has no line that can run (listed first)
    assert body["report"]["problems"] == 3001 and len(body["report"]["first"]) == 50
    report = client.get(f"/v1/campaigns/{campaign['id']}/report", headers=stocked.header("loyalty"))
    rows = list(csv.DictReader(io.StringIO(report.text)))
    assert len(rows) == 3001 and (rows[0]["line"], rows[0]["code"]) == ("", "no_lines")
    assert [int(r["line"]) for r in rows[1:4]] == [2, 3, 4]


def test_the_eta_counts_the_wait_for_the_start_and_the_rate(client, stocked, approver):
    from datetime import timedelta

    starts = (datetime.now(UTC) + timedelta(hours=1)).isoformat().replace("+00:00", "Z")
    campaign = approved(client, stocked, approver, 3, rate_per_second=1, starts_at=starts)
    # an hour's wait, then 3 lines at 1 a second
    assert 3600 <= campaign["eta_seconds"] <= 3604


def test_a_campaign_file_is_not_held_to_the_json_body_limit():
    import re

    from starlette.responses import PlainTextResponse
    from starlette.testclient import TestClient

    from service.app import RequestContext

    async def echo(scope, receive, send):
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        await PlainTextResponse(str(len(body)))(scope, receive, send)

    app = RequestContext(
        echo, max_body_bytes=10, large_bodies=(("PUT", re.compile(r"^/v1/campaigns/[^/]+/lines$"), 1000),)
    )
    client = TestClient(app)
    assert client.put("/v1/campaigns/x/lines", content=b"7" * 500).text == "500"
    assert client.post("/v1/redemptions", content=b"7" * 500).status_code == 413
    assert client.put("/v1/campaigns/x/lines", content=b"7" * 1001).status_code == 413


def test_creating_with_an_idempotency_key_twice_makes_one_draft(client, stocked):
    body = {"program": "mobile-bonus", "tariff": "basic", "offer": "cinema-2000", "name": "once"}
    headers = {**stocked.header("loyalty"), "Idempotency-Key": "campaign-once"}
    first = client.post("/v1/campaigns", json=body, headers=headers)
    again = client.post("/v1/campaigns", json=body, headers=headers)
    assert first.status_code == again.status_code == 201
    assert again.json()["id"] == first.json()["id"] and again.headers["Idempotent-Replayed"] == "true"
    other = client.post("/v1/campaigns", json={**body, "name": "twice"}, headers=headers)
    assert_problem(other, 422, "idempotency_conflict")
    assert table_counts("campaigns")["campaigns"] == 1


def test_the_list_pages_newest_first_with_a_cursor_and_filters_by_status(client, stocked):
    made = [create(client, stocked, name=f"c{i}")["id"] for i in range(3)]
    first = client.get("/v1/campaigns?limit=2", headers=stocked.header("loyalty")).json()
    assert [c["id"] for c in first["items"]] == made[::-1][:2] and first["next_cursor"] == made[1]
    rest = client.get(
        f"/v1/campaigns?limit=2&cursor={first['next_cursor']}", headers=stocked.header("loyalty")
    )
    assert [c["id"] for c in rest.json()["items"]] == [made[0]] and rest.json()["next_cursor"] is None
    client.post(f"/v1/campaigns/{made[0]}/cancel", headers=stocked.header("loyalty"))
    cancelled = client.get("/v1/campaigns?status=cancelled", headers=stocked.header("loyalty")).json()
    assert [c["id"] for c in cancelled["items"]] == [made[0]]


def test_a_campaign_approved_at_a_months_end_keeps_its_value_in_that_month_when_its_lines_run_in_the_next(
    client, keys, approver
):
    """Approved at 23:30 in Almaty on 31 December, run on 1 January: the reservation, what the lines
    used and what goes back at the end all stay in December's budget; January's is untouched."""
    from service.campaigns.service import Actor, approve, run_step

    import_codes_for("ARAY-CINEMA-2000", 60)
    campaign = submitted(client, keys, 60)
    with transaction() as s:  # 20 lines will find no code: their value goes back at the end
        s.execute(
            text(
                "UPDATE codes SET status = 'voided'"
                " WHERE id IN (SELECT id FROM codes WHERE status = 'available' LIMIT 20)"
            )
        )
        checker = s.execute(
            text("SELECT id FROM staff_accounts WHERE email = 'checker@example.kz'")
        ).scalar_one()
    with transaction() as s:
        approve(
            s,
            uuid.UUID(campaign["id"]),
            actor=Actor(id=f"staff:{checker}", name="checker", role="approver", staff_id=checker),
            programs=None,
            now=datetime(2026, 12, 31, 18, 30, tzinfo=UTC),  # 23:30 in Asia/Almaty (UTC+5)
        )

    def usage() -> dict[str, int]:
        with new_session() as s:
            rows = s.execute(text("SELECT month, spent_minor FROM program_budget_usage")).all()
        return {f"{month:%Y-%m}": spent for month, spent in rows}

    assert usage() == {"2026-12": 60 * 200_000}
    january = datetime(2027, 1, 1, 4, 0, tzinfo=UTC)  # 09:00 in Almaty: after the quiet hours
    for _ in range(100):
        if run_step(uuid.UUID(campaign["id"]), now=january, budget_s=5.0).again_in_ms is None:
            break
    else:
        raise AssertionError("the campaign did not finish")
    body = client.get(f"/v1/campaigns/{campaign['id']}", headers=keys.header("loyalty")).json()
    assert (body["status"], body["lines"]["done"], body["lines"]["failed"]) == ("done", 40, 20)
    assert usage() == {"2026-12": 40 * 200_000}
