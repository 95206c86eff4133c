"""The SMPP session against the test SMSC: clean unbinds both ways, what a dropped connection leaves
in doubt and what goes out again at once, and the session's settings (bind mode, system_type,
window, TLS, the source address's TON/NPI)."""

from __future__ import annotations

import datetime as dt
import ipaddress
import socket
import ssl
import struct
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from sqlalchemy import text

from service.delivery.providers import (
    InDoubtSmsError,
    OutgoingSms,
    PermanentSmsError,
    SmppProvider,
    SmppSession,
    UnavailableSmsError,
)
from service.delivery.service import Job, apply_smpp_receipts, deliver_many
from service.delivery.smsc import TestSmsc
from service.kit.db.engine import new_session
from tests.conftest import import_codes_for, post_redemption
from tests.harness.delivery import point_webhooks_at, wait_until


def _ignore(receipts):
    return [None] * len(receipts)


def _sms(i: int, text_: str = "hello") -> OutgoingSms:
    return OutgoingSms(f"r{i}", f"+7701560{i:04d}", "Test", text_, "GSM-7", 1)


@pytest.fixture
def smsc():
    server = TestSmsc(receipt_delay=0.2).start()
    yield server
    server.stop()


def _redeem(client, keys, count: int, prefix: str = "8701888") -> list[Job]:
    point_webhooks_at("http://127.0.0.1:9/hooks")
    import_codes_for("ARAY-CINEMA-2000", count)
    jobs = []
    for i in range(count):
        made = post_redemption(client, keys, msisdn=f"{prefix}{i:04d}")
        assert made.status_code == 201, made.text
        jobs.append(Job(uuid.UUID(made.json()["id"]), 0))
    return jobs


def _sms_rows() -> list:
    with new_session() as s:
        return s.execute(
            text("SELECT msisdn, status, part_ids, attempts FROM sms_messages ORDER BY msisdn")
        ).all()


# --- unbind ---------------------------------------------------------------------------------------


def test_closing_the_session_unbinds_and_closes_after_the_unbind_resp(smsc):
    session = SmppSession(smsc.host, smsc.port, "rewards", "", on_receipts=_ignore)
    session.submit(_sms(1))
    session.close()
    wait_until(lambda: smsc.closed_after_unbind == 1, 5, what="the connection closed after unbind_resp")
    assert smsc.unbinds_received == 1


def test_an_smsc_that_never_answers_unbind_holds_the_shutdown_no_longer_than_the_unbind_timeout(smsc):
    smsc.answer_unbind = False
    session = SmppSession(smsc.host, smsc.port, "rewards", "", on_receipts=_ignore, unbind_timeout=0.5)
    session.submit(_sms(1))
    started = time.monotonic()
    session.close()
    assert time.monotonic() - started < 2.0
    assert smsc.unbinds_received == 1


def test_the_smscs_unbind_is_answered_and_the_session_binds_again(smsc):
    session = SmppSession(smsc.host, smsc.port, "rewards", "", on_receipts=_ignore)
    try:
        session.submit(_sms(1))
        assert smsc.unbind() == 1
        wait_until(lambda: smsc.unbind_resps == 1, 5, what="our unbind_resp")
        wait_until(lambda: len(smsc.binds) == 2, 5, what="a new bind")
        assert isinstance(session.submit(_sms(2)), list)
    finally:
        session.close()


def test_the_answers_to_submits_in_flight_when_the_smsc_unbinds_are_still_read(smsc):
    """The SMSC unbinds while it has submits to answer: the session answers unbind_resp, writes
    nothing more, and reads the answers the SMSC sends before it closes; none of them is in doubt."""
    smsc.response_delay = 0.5
    session = SmppSession(smsc.host, smsc.port, "rewards", "", on_receipts=_ignore)
    try:
        session.submit(_sms(99))
        results: list = []
        sender = threading.Thread(
            target=lambda: results.extend(session.submit_many([_sms(i) for i in range(6)]))
        )
        sender.start()
        wait_until(lambda: smsc.submits >= 1 + 6, 5, what="the submits in flight")
        assert smsc.unbind() == 1
        sender.join(timeout=20)
    finally:
        session.close()
    assert smsc.unbind_resps == 1
    assert all(isinstance(r, list) for r in results), results  # every one answered, none in doubt


def test_a_session_that_gives_up_on_a_silent_smsc_unbinds_before_it_reconnects(smsc):
    """No submit_sm_resp within the response timeout: the link is suspect. The session unbinds
    (bounded wait), reconnects, and reports the unanswered submit as in doubt."""
    smsc.response_delay = 30.0
    session = SmppSession(
        smsc.host, smsc.port, "rewards", "", on_receipts=_ignore, response_timeout=0.5, unbind_timeout=0.5
    )
    try:
        result = session.submit_many([_sms(1)], timeout=5)[0]
        assert isinstance(result, InDoubtSmsError)
        wait_until(lambda: smsc.unbinds_received == 1, 5, what="our unbind")
        wait_until(lambda: len(smsc.binds) == 2, 5, what="the new bind")
    finally:
        session.close()


# --- a dropped connection -------------------------------------------------------------------------


def test_submits_never_written_when_the_link_drops_go_out_at_once_after_the_rebind(smsc):
    """Window 4, twelve SMS: the SMSC holds the first four unanswered and drops the link. Those four
    may have been taken (in doubt); the other eight never left the session and go out on the new
    link within the same call, a moment after the drop."""
    session = SmppSession(smsc.host, smsc.port, "rewards", "", on_receipts=_ignore, window=4)
    try:
        session.submit(_sms(99))  # bound
        smsc.drop_with_submits_in_flight(4, take="none")
        messages = [_sms(i) for i in range(12)]
        results = session.submit_many(messages, timeout=10)
        in_doubt = [m.to for m, r in zip(messages, results, strict=True) if isinstance(r, InDoubtSmsError)]
        sent = [m.to for m, r in zip(messages, results, strict=True) if isinstance(r, list)]
        assert len(in_doubt) == 4 and len(sent) == 8
        held = {s.to for s in smsc.seen if s.answer == "none"}
        assert held == set(in_doubt)
        dropped_at = max(s.at for s in smsc.seen if s.answer == "none")
        resent = [s.at - dropped_at for s in smsc.seen if s.to in sent]
        assert max(resent) < 3.0, resent  # reconnect and bind, not an in-doubt window
        # nothing twice, none of the held ones taken
        assert sorted(m.to for m in smsc.received if m.to != "+77015600099") == sorted(sent)
    finally:
        session.close()


def test_an_sms_taken_by_the_smsc_before_a_drop_is_settled_by_its_receipt_and_never_resent(
    client, keys, smsc
):
    session = SmppSession(smsc.host, smsc.port, "rewards", "", on_receipts=apply_smpp_receipts)
    try:
        jobs = _redeem(client, keys, 2)
        session.submit(_sms(99))
        smsc.drop_with_submits_in_flight(4, take="all")  # both parts of both SMS held and taken
        outcomes = deliver_many(jobs, provider=SmppProvider(session))
        assert {o.result for o in outcomes.values()} == {"retry"}
        assert {r.status for r in _sms_rows()} == {"submitting"}  # in doubt
        wait_until(lambda: {r.status for r in _sms_rows()} == {"delivered"}, 20, what="the receipts")
        later = deliver_many(jobs, provider=SmppProvider(session), now=datetime.now(UTC) + timedelta(hours=1))
        assert {o.result for o in later.values()} == {"nothing to do"}
        assert len(smsc.received) == 3 and smsc.submits == 1 + 4
    finally:
        session.close()


def test_an_sms_the_smsc_never_took_before_a_drop_stays_in_doubt_and_is_resent_after_the_window(
    client, keys, smsc
):
    """Its submit_sm_resp may have been lost: nothing says it was not taken, so it waits for a
    receipt for SMS_IN_DOUBT_SECONDS; none comes, and the parts are sent again, same reference."""
    session = SmppSession(smsc.host, smsc.port, "rewards", "", on_receipts=apply_smpp_receipts)
    try:
        (job,) = _redeem(client, keys, 1)
        session.submit(_sms(99))
        smsc.drop_with_submits_in_flight(2, take="none")
        start = datetime.now(UTC)
        outcome = deliver_many([job], provider=SmppProvider(session), now=start)[job]
        assert outcome.result == "retry" and outcome.retry_ms is not None
        assert deliver_many([job], provider=SmppProvider(session), now=start)[job].result == "retry"
        assert smsc.submits == 1 + 2  # not resent inside the window
        after = start + timedelta(seconds=125)
        assert deliver_many([job], provider=SmppProvider(session), now=after)[job].result == "sent"
        references = {s.reference for s in smsc.seen if s.to == "+77018880000"}
        assert len(references) == 1 and len(smsc.received) == 2
    finally:
        session.close()


def test_a_drop_between_the_parts_of_a_long_sms_sends_the_unwritten_part_at_once_and_resends_the_unanswered(
    client, keys, smsc, monkeypatch
):
    """Window 1, a 2-part SMS: part 1 is written and held unanswered when the SMSC drops the link;
    part 2 is still behind the window. Part 2 never left the process, so it goes out on the new link
    in the same call, under the same concatenation reference. Part 1 may have been taken: it alone
    is in doubt, and only it goes again, once SMS_IN_DOUBT_SECONDS pass with no receipt for it."""
    from service.kit.config import get_settings

    monkeypatch.setattr(get_settings(), "sms_in_doubt_seconds", 1.5)
    session = SmppSession(smsc.host, smsc.port, "rewards", "", on_receipts=apply_smpp_receipts, window=1)
    to = "+77018880000"
    try:
        (job,) = _redeem(client, keys, 1)
        session.submit(_sms(99))  # bound
        smsc.drop_with_submits_in_flight(1, take="none")
        outcome = deliver_many([job], provider=SmppProvider(session))[job]
        assert outcome.result == "retry" and outcome.retry_ms == 1500  # in doubt
        first = [s for s in smsc.seen if s.to == to]
        assert [(s.part, s.total, s.answer) for s in first] == [(1, 2, "none"), (2, 2, "ok")]
        held, written_after = first
        assert written_after.session != held.session  # on the new link
        assert written_after.reference == held.reference
        assert written_after.at - held.at < 3.0  # the rebind, not an in-doubt window
        (row,) = _sms_rows()
        assert row.status == "submitting" and row.part_ids == [None, written_after.message_id]

        assert deliver_many([job], provider=SmppProvider(session))[job].result == "retry"
        assert len([s for s in smsc.seen if s.to == to]) == 2  # nothing again inside the window
        time.sleep(outcome.retry_ms / 1000)
        assert deliver_many([job], provider=SmppProvider(session))[job].result == "sent"
        later = [s for s in smsc.seen if s.to == to][2:]
        assert [(s.part, s.answer, s.reference) for s in later] == [(1, "ok", held.reference)]
        assert later[0].at - held.at >= 1.5
        (sms,) = [m for m in smsc.received if m.to == to]  # one whole message at the handset
        assert sms.segments == 2 and sms.udh_reference == held.reference
        assert sms.message_ids == [later[0].message_id, written_after.message_id]
        wait_until(lambda: _sms_rows()[0].status == "delivered", 10, what="the receipts of both parts")
    finally:
        session.close()


class _WriteOfSubmitFails(socket.socket):
    """A socket whose next submit_sm gets half written before sendall raises (a reset mid-write)."""

    armed = threading.Event()

    def sendall(self, data, flags=0):
        if self.armed.is_set() and struct.unpack_from(">L", data, 4)[0] == 0x00000004:
            self.armed.clear()
            super().sendall(data[: len(data) // 2], flags)
            raise BrokenPipeError(32, "Broken pipe")
        return super().sendall(data, flags)


def test_an_sms_whose_write_failed_is_not_in_doubt_and_reaches_the_smsc_after_the_rebind(
    client, keys, smsc, monkeypatch
):
    """The socket's sendall raised while writing a submit_sm: the PDU never left whole, so the SMSC
    cannot have taken it. The SMS is not in doubt: it goes out again on the new link, in the same
    call, within seconds, and the SMSC takes it once."""
    from service.delivery import providers

    def create_socket(client_):
        sock = _WriteOfSubmitFails(socket.AF_INET, socket.SOCK_STREAM)
        sock.settimeout(client_.timeout)
        return sock

    monkeypatch.setattr(providers._Client, "_create_socket", create_socket)
    session = SmppSession(smsc.host, smsc.port, "rewards", "", on_receipts=apply_smpp_receipts)
    to = "+77018880000"
    try:
        (job,) = _redeem(client, keys, 1)
        session.submit(_sms(99))  # bound
        _WriteOfSubmitFails.armed.set()
        started = time.monotonic()
        outcome = deliver_many([job], provider=SmppProvider(session))[job]
        took = time.monotonic() - started
    finally:
        session.close()
    assert not _WriteOfSubmitFails.armed.is_set()  # the write did fail
    assert outcome.result == "sent" and took < 5.0
    assert len(smsc.binds) == 2  # on a new link
    assert [(s.part, s.answer) for s in smsc.seen if s.to == to] == [(1, "ok"), (2, "ok")]
    assert {s.session for s in smsc.seen if s.to == to} == {smsc.binds[1].session}
    assert [m.segments for m in smsc.received if m.to == to] == [2]
    (row,) = _sms_rows()
    assert row.status in ("sent", "delivered") and row.attempts == 1


# --- settings -------------------------------------------------------------------------------------


def test_separate_transmitter_and_receiver_binds_carry_the_submits_and_the_receipts(client, keys, smsc):
    session = SmppSession(
        smsc.host, smsc.port, "rewards", "", on_receipts=apply_smpp_receipts, bind="transmitter+receiver"
    )
    try:
        jobs = _redeem(client, keys, 2)
        assert {o.result for o in deliver_many(jobs, provider=SmppProvider(session)).values()} == {"sent"}
        wait_until(lambda: {r.status for r in _sms_rows()} == {"delivered"}, 15, what="receipts")
    finally:
        session.close()
    assert sorted(b.kind for b in smsc.binds) == ["receiver", "transmitter"]
    transmitter = next(b.session for b in smsc.binds if b.kind == "transmitter")
    assert {s.session for s in smsc.seen} == {transmitter}


def test_the_system_type_goes_in_the_bind(smsc):
    session = SmppSession(smsc.host, smsc.port, "rewards", "", on_receipts=_ignore, system_type="VMA")
    try:
        session.submit(_sms(1))
    finally:
        session.close()
    assert [(b.kind, b.system_id, b.system_type) for b in smsc.binds] == [("transceiver", "rewards", "VMA")]


@pytest.mark.parametrize("window", [1, 3])
def test_no_more_submits_are_in_flight_than_the_window(smsc, window):
    smsc.response_delay = 0.05
    session = SmppSession(smsc.host, smsc.port, "rewards", "", on_receipts=_ignore, window=window)
    try:
        results = session.submit_many([_sms(i) for i in range(12)], timeout=10)
    finally:
        session.close()
    assert all(isinstance(r, list) for r in results)
    assert smsc.max_outstanding == window


def _self_signed(tmp_path) -> tuple[str, str]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "smsc.test")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("smsc.test"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = tmp_path / "smsc.pem", tmp_path / "smsc.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return str(cert_file), str(key_file)


@pytest.fixture
def tls_smsc(tmp_path):
    cert, key = _self_signed(tmp_path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server = TestSmsc(receipt_delay=0.2, ssl_context=context).start()
    server.cert_file = cert
    yield server
    server.stop()


def test_the_session_binds_over_tls_and_checks_the_smscs_certificate(client, keys, tls_smsc):
    context = ssl.create_default_context(cafile=tls_smsc.cert_file)
    session = SmppSession(
        tls_smsc.host,
        tls_smsc.port,
        "rewards",
        "",
        on_receipts=apply_smpp_receipts,
        ssl_context=context,
        server_hostname="smsc.test",
    )
    try:
        jobs = _redeem(client, keys, 2)
        assert {o.result for o in deliver_many(jobs, provider=SmppProvider(session)).values()} == {"sent"}
        wait_until(lambda: {r.status for r in _sms_rows()} == {"delivered"}, 15, what="receipts over TLS")
    finally:
        session.close()
    assert [b.tls for b in tls_smsc.binds] == [True]
    wait_until(lambda: tls_smsc.closed_after_unbind == 1, 5, what="a clean unbind over TLS")


@pytest.fixture
def provider_from_settings(tls_smsc, monkeypatch):
    """The SMPP provider as a worker builds it: from SMPP_* in the environment, through build_provider,
    against the TLS test SMSC."""
    from service.delivery.providers import build_provider
    from service.kit.config import reset_settings_cache

    for name, value in {
        "SMS_PROVIDER": "smpp",
        "SMPP_HOST": tls_smsc.host,
        "SMPP_PORT": str(tls_smsc.port),
        "SMPP_SYSTEM_ID": "rewards",
        "SMPP_BIND": "transmitter+receiver",
        "SMPP_SYSTEM_TYPE": "VMA",
        "SMPP_WINDOW": "2",
        "SMPP_TLS": "true",
        "SMPP_TLS_CA_FILE": tls_smsc.cert_file,
        "SMPP_ERROR_CLASSES": '{"0x45": "permanent"}',
    }.items():
        monkeypatch.setenv(name, value)
    reset_settings_cache()
    provider = build_provider(on_receipts=_ignore)
    yield provider
    provider.close()
    reset_settings_cache()


def test_smpp_bind_and_smpp_system_type_from_the_settings_make_the_binds(tls_smsc, provider_from_settings):
    assert isinstance(provider_from_settings.submit(_sms(1)), list)
    wait_until(lambda: len(tls_smsc.binds) == 2, 5, what="both binds")
    assert sorted((b.kind, b.system_id, b.system_type) for b in tls_smsc.binds) == [
        ("receiver", "rewards", "VMA"),
        ("transmitter", "rewards", "VMA"),
    ]


def test_smpp_window_from_the_settings_bounds_the_submits_in_flight(tls_smsc, provider_from_settings):
    tls_smsc.response_delay = 0.05
    results = provider_from_settings.submit_many([_sms(i) for i in range(12)])
    assert all(isinstance(r, list) for r in results), results
    assert tls_smsc.max_outstanding == 2


def test_smpp_tls_and_its_ca_file_from_the_settings_bind_over_tls(tls_smsc, provider_from_settings):
    """The test SMSC serves TLS only, with a self-signed certificate that SMPP_TLS_CA_FILE holds."""
    assert isinstance(provider_from_settings.submit(_sms(1)), list)
    assert tls_smsc.binds and {b.tls for b in tls_smsc.binds} == {True}


def test_smpp_error_classes_from_the_settings_decide_a_statuss_class(tls_smsc, provider_from_settings):
    """0x45 (ESME_RSUBMITFAIL) is transient by default; the setting makes it permanent."""
    tls_smsc.throttle(3600, status=0x45)
    (result,) = provider_from_settings.submit_many([_sms(1)])
    assert isinstance(result, PermanentSmsError) and result.code == "0x45"


def test_a_certificate_the_session_does_not_trust_never_gets_a_bind(tls_smsc):
    session = SmppSession(
        tls_smsc.host,
        tls_smsc.port,
        "rewards",
        "",
        on_receipts=_ignore,
        ssl_context=ssl.create_default_context(),  # the system's CAs only
        server_hostname="smsc.test",
    )
    try:
        result = session.submit_many([_sms(1)], timeout=2)[0]
    finally:
        session.close()
    assert isinstance(result, UnavailableSmsError)
    assert tls_smsc.binds == [] and tls_smsc.submits == 0


def test_a_programs_numeric_short_code_goes_out_as_ton_3_and_an_alphanumeric_sender_as_ton_5(
    client, keys, smsc, tmp_path
):
    import shutil

    from catalog import DEMO_CATALOG
    from catalog.loader import load_catalog
    from service.catalog.service import apply_catalog
    from service.catalog.snapshot import invalidate_snapshot
    from service.kit.db.engine import transaction

    copy = tmp_path / "catalog"
    shutil.copytree(DEMO_CATALOG, copy, ignore=shutil.ignore_patterns("codes"))
    programs = copy / "programs.yaml"
    programs.write_text(programs.read_text().replace("sms_sender: QazaqBiz", 'sms_sender: "7575"'))
    with transaction() as s:
        apply_catalog(s, load_catalog(copy))
    invalidate_snapshot()
    point_webhooks_at("http://127.0.0.1:9/hooks")
    import_codes_for("ARAY-CINEMA-2000", 1)
    business = post_redemption(
        client,
        keys,
        role="admin",
        program="business",
        tariff="biz-start",
        offer="gift-card-20000",
        points=20000,
        msisdn="87015550101",
    )
    mobile = post_redemption(client, keys, msisdn="87015550102")
    jobs = [Job(uuid.UUID(r.json()["id"]), 0) for r in (business, mobile)]
    session = SmppSession(smsc.host, smsc.port, "rewards", "", on_receipts=_ignore)
    try:
        assert {o.result for o in deliver_many(jobs, provider=SmppProvider(session)).values()} == {"sent"}
    finally:
        session.close()
    by_to = {m.to: (m.sender, m.source_ton, m.source_npi) for m in smsc.received}
    assert by_to == {"+77015550101": ("7575", 3, 0), "+77015550102": ("QazaqBonus", 5, 0)}


def test_a_worker_process_unbinds_before_it_exits(services, smsc):
    """`rewards worker` binds its reward-SMS processes at boot and unbinds them on SIGTERM."""
    import os
    import signal

    from tests.harness.delivery import Worker

    env = {
        **os.environ,
        "SMS_PROVIDER": "smpp",
        "SMPP_HOST": smsc.host,
        "SMPP_PORT": str(smsc.port),
        "SMPP_SYSTEM_ID": "rewards",
        "LOG_LEVEL": "WARNING",
    }
    worker = Worker(env, processes=1).start()
    try:
        wait_until(lambda: smsc.bound_sessions == 1, 60, what="the worker's bind")
        os.kill(worker.proc.pid, signal.SIGTERM)  # as an orchestrator does: the main process only
        worker.proc.wait(timeout=30)
    finally:
        worker.stop()
    wait_until(lambda: smsc.closed_after_unbind == 1, 10, what="the unbind before the exit")
    assert smsc.unbinds_received == 1


def test_rewards_smsc_serves_tls_for_local_stacks(tmp_path):
    import os
    import subprocess
    import sys

    from tests.harness.stack import free_port

    cert, key = _self_signed(tmp_path)
    port = free_port()
    smsc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "service.cli",
            "smsc",
            "--port",
            str(port),
            "--tls-cert",
            cert,
            "--tls-key",
            key,
        ],
        env={**os.environ, "LOG_LEVEL": "WARNING"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    session = SmppSession(
        "127.0.0.1",
        port,
        "rewards",
        "",
        on_receipts=_ignore,
        ssl_context=ssl.create_default_context(cafile=cert),
        server_hostname="smsc.test",
    )
    try:
        deadline = time.monotonic() + 30
        result = None
        while time.monotonic() < deadline and not isinstance(result, list):
            result = session.submit_many([_sms(1)], timeout=5)[0]
        assert isinstance(result, list) and len(result) == 1
    finally:
        session.close()
        smsc.terminate()
        smsc.wait(timeout=10)
