"""Staff accounts, sign-in and sessions.

Passwords are argon2id hashes (argon2-cffi's defaults). Sign-in tells nobody which accounts exist: a
known and an unknown e-mail get the same answers, the same work (an argon2 verification against a
dummy hash, the same statements) and the same throttle, which is keyed by the e-mail as typed.

Wrong passwords hold back the place they come from (its address; IPv6 by its /64), not the account's
owner (service/kit/security/throttle.py, table auth_throttle; docs/console.md gives the numbers):
- per e-mail and place: 5 wrong passwords, then the next try from there waits 1 minute, doubling up to
  1 hour; a right password clears it;
- per place across e-mails: 20, then the same delays (one place trying many accounts);
- per e-mail across places, each place counting with its first 5: 10, then the same delays, but
  only for places the account has not signed in from in the last 90 days: the right password from
  the usual place still works while someone elsewhere tries.
Counts are forgotten 24 hours after their last failure; a new password clears the account's.

A session is a 256-bit random token in an HttpOnly cookie; only its SHA-256 is
stored, with the session's CSRF token. A session ends on sign-out, after `idle` without a request,
after twelve hours in any case, and when the account is disabled or its password changed."""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from psycopg import Connection
from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from service.catalog.models import Partner, Program
from service.console.models import STAFF_ROLES, StaffAccount, StaffSession, StaffSignInPlace
from service.kit.db.engine import driver
from service.kit.observability.metrics import STAFF_SIGN_IN_THROTTLED
from service.kit.security import throttle
from service.kit.security.throttle import Policy

THROTTLE = "sign_in"
PLACE_POLICY = Policy(
    free=5, first_delay=timedelta(minutes=1), max_delay=timedelta(hours=1), forget_after=timedelta(hours=24)
)
ADDRESS_POLICY = Policy(
    free=20, first_delay=timedelta(minutes=1), max_delay=timedelta(hours=1), forget_after=timedelta(hours=24)
)
ACCOUNT_POLICY = Policy(
    free=10, first_delay=timedelta(minutes=1), max_delay=timedelta(hours=1), forget_after=timedelta(hours=24)
)
USUAL_PLACE_FOR = timedelta(days=90)  # a place the account signed in from this recently is its own
SESSION_LIFETIME = timedelta(hours=12)
TOUCH_EVERY = timedelta(seconds=60)  # last_seen_at is written at most once a minute per session
MIN_PASSWORD_LENGTH = 10
EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]+\.[^@\s]+$")

_hasher = PasswordHasher()
# Verified against when the e-mail is unknown, so both failures take an argon2 verification's time.
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))


class StaffError(ValueError):
    """A refused account operation (CLI input); the message says why."""


@dataclass(frozen=True)
class Staff:
    """The signed-in person, as pages and domain calls need them."""

    id: int
    email: str
    role: str
    programs: frozenset[str]
    partner: str | None

    @property
    def program_scope(self) -> frozenset[str] | None:
        """Programs this person may see; None means all (finance, admin, unscoped support)."""
        if self.role == "partner":
            return frozenset()
        if self.role == "support" and self.programs:
            return self.programs
        return None

    def sees_program(self, code: str) -> bool:
        scope = self.program_scope
        return scope is None or code in scope


@dataclass(frozen=True)
class SignedIn:
    staff: Staff
    token: str
    csrf_token: str


@dataclass(frozen=True)
class SignInRefused(Exception):
    """`reason` (for the audit log only: the page says the same for all but `throttled`):
    wrong_password (also an unknown e-mail), disabled, throttled (try again after `locked_until`)."""

    reason: str
    locked_until: datetime | None = None
    account_id: int | None = None


def normalize_email(email: str) -> str:
    email = email.strip().lower()
    if not EMAIL.match(email):
        raise StaffError(f"not an e-mail address: {email!r}")
    return email


def check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise StaffError(f"the password must have at least {MIN_PASSWORD_LENGTH} characters")
    if len(password) > 1024:
        raise StaffError("the password is longer than 1024 characters")


def _staff(account: StaffAccount) -> Staff:
    return Staff(
        account.id, account.email, account.role, frozenset(account.programs or ()), account.partner_code
    )


def create_account(
    session: Session,
    *,
    email: str,
    password: str,
    role: str,
    programs: list[str] | None = None,
    partner: str | None = None,
) -> StaffAccount:
    email = normalize_email(email)
    programs = sorted(set(programs or []))
    if role not in STAFF_ROLES:
        raise StaffError(f"role must be one of {', '.join(STAFF_ROLES)}")
    if programs and role != "support":
        raise StaffError("only support accounts are scoped to programs (--program)")
    if role == "partner" and not partner:
        raise StaffError("a partner account needs --partner")
    if role != "partner" and partner:
        raise StaffError("only partner accounts belong to a partner")
    check_password(password)
    if programs:
        known = set(session.scalars(select(Program.code).where(Program.code.in_(programs))))
        if missing := sorted(set(programs) - known):
            raise StaffError(f"unknown program(s): {', '.join(missing)}")
    if partner and session.scalar(select(Partner.id).where(Partner.code == partner)) is None:
        raise StaffError(f"unknown partner: {partner}")
    if session.scalar(select(StaffAccount.id).where(StaffAccount.email == email)) is not None:
        raise StaffError(f"{email} already has an account")
    account = StaffAccount(
        email=email, password_hash=_hasher.hash(password), role=role, programs=programs, partner_code=partner
    )
    session.add(account)
    session.flush()
    return account


def list_accounts(session: Session) -> list[StaffAccount]:
    return list(session.scalars(select(StaffAccount).order_by(StaffAccount.email)))


def _account(session: Session, email: str) -> StaffAccount:
    account = session.scalar(
        select(StaffAccount).where(StaffAccount.email == email.strip().lower()).with_for_update()
    )
    if account is None:
        raise StaffError(f"no account {email}")
    return account


def disable_account(session: Session, email: str, *, now: datetime | None = None) -> StaffAccount:
    """Disabled at once: its sessions are deleted and it cannot sign in again."""
    account = _account(session, email)
    if account.disabled_at is None:
        account.disabled_at = now or datetime.now(UTC)
    session.execute(delete(StaffSession).where(StaffSession.staff_account_id == account.id))
    return account


def set_password(session: Session, email: str, password: str, *, now: datetime | None = None) -> StaffAccount:
    """A new password ends every session of the account and clears a lockout."""
    check_password(password)
    account = _account(session, email)
    account.password_hash = _hasher.hash(password)
    account.password_changed_at = now or datetime.now(UTC)
    lift_throttle(session, account.email)
    session.execute(delete(StaffSession).where(StaffSession.staff_account_id == account.id))
    return account


def lift_throttle(session: Session, email: str) -> int:
    """Forgets the wrong passwords counted for this e-mail, from every place (a new password does it
    too; a place's count across e-mails stays)."""
    return throttle.clear(driver(session), THROTTLE, _target(email))


def throttled_until(session: Session, email: str, now: datetime) -> datetime | None:
    """Until when places the account has not signed in from wait (wrong passwords from several)."""
    return throttle.count(
        driver(session), THROTTLE, _target(email), throttle.ANY, ACCOUNT_POLICY, now
    ).blocked_until


def _verify(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def _token_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def _target(email: str) -> bytes:
    """What the counts of an e-mail are keyed by: its hash, as typed (known or not)."""
    return hashlib.sha256(email.strip().lower()[:254].encode()).digest()


def _held_back(
    db: Connection[Any], target: bytes, place: str, *, usual: bool, now: datetime
) -> datetime | None:
    """Until when this try waits: the e-mail's count from this place, the place's across e-mails, and
    the e-mail's across places (not for a usual place)."""
    mine = throttle.blocked(db, THROTTLE, target, [place, throttle.ANY], now)
    waits = [until for client, until in mine.items() if not (usual and client == throttle.ANY)]
    waits += throttle.blocked(db, THROTTLE, b"", [place], now).values()
    return max(waits) if waits else None


def _count_failure(db: Connection[Any], target: bytes, place: str, now: datetime) -> None:
    mine = throttle.fail(db, THROTTLE, target, place, PLACE_POLICY, now)
    throttle.fail(db, THROTTLE, b"", place, ADDRESS_POLICY, now)
    if mine.failures <= PLACE_POLICY.free:  # the place's share of the account's count
        throttle.fail(db, THROTTLE, target, throttle.ANY, ACCOUNT_POLICY, now)


def sign_in(session: Session, email: str, password: str, *, address: str | None, now: datetime) -> SignedIn:
    """Checks the password and opens a session. Raises SignInRefused; the caller commits the counted
    failure. A known and an unknown e-mail run the same statements and one argon2 verification each
    (a dummy hash for an unknown or disabled account), and are throttled alike."""
    email_key = email.strip().lower()[:254]
    target, place = _target(email_key), throttle.address_client(address)
    db = driver(session)
    usual = session.scalar(
        select(StaffSignInPlace.last_signed_in_at).where(
            StaffSignInPlace.target == target,
            StaffSignInPlace.client == place,
            StaffSignInPlace.last_signed_in_at > now - USUAL_PLACE_FOR,
        )
    )
    # The throttle first, before the account's row is locked: a held-back try then costs the same for
    # a known and an unknown e-mail (a row lock is a write, which an unknown e-mail would not do).
    until = _held_back(db, target, place, usual=usual is not None, now=now)
    if until is not None:
        STAFF_SIGN_IN_THROTTLED.inc()
        known = session.scalar(select(StaffAccount.id).where(StaffAccount.email == email_key))
        raise SignInRefused("throttled", until, known)
    account = session.scalar(select(StaffAccount).where(StaffAccount.email == email_key).with_for_update())
    account_id = account.id if account is not None else None
    usable = account is not None and account.disabled_at is None
    if not _verify(account.password_hash if usable and account else _DUMMY_HASH, password) or not usable:
        _count_failure(db, target, place, now)
        reason = "disabled" if account is not None and account.disabled_at is not None else "wrong_password"
        raise SignInRefused(reason, account_id=account_id)
    assert account is not None
    throttle.clear(db, THROTTLE, target, place)
    db.execute(
        "INSERT INTO staff_sign_in_places (target, client, last_signed_in_at) VALUES (%(t)s, %(c)s, %(now)s)"
        " ON CONFLICT (target, client) DO UPDATE SET last_signed_in_at = EXCLUDED.last_signed_in_at",
        {"t": target, "c": place, "now": now},
    )
    account.last_login_at = now
    if _hasher.check_needs_rehash(account.password_hash):
        account.password_hash = _hasher.hash(password)
    token = secrets.token_urlsafe(32)
    csrf = secrets.token_urlsafe(32)
    session.add(
        StaffSession(
            token_hash=_token_hash(token),
            staff_account_id=account.id,
            csrf_token=csrf,
            address=address,
            created_at=now,
            last_seen_at=now,
        )
    )
    session.flush()
    return SignedIn(_staff(account), token, csrf)


@dataclass(frozen=True)
class ActiveSession:
    staff: Staff
    csrf_token: str
    token_hash: bytes


def resume(
    session: Session, token: str, *, idle: timedelta, now: datetime, touch: bool = True
) -> ActiveSession | None:
    """The session of this cookie, if it is still alive; touches it (at most once a minute) unless
    `touch` is False (the dashboard's polling is no sign of a person at the screen)."""
    token_hash = _token_hash(token)
    row = session.execute(
        select(StaffSession, StaffAccount)
        .join(StaffAccount, StaffAccount.id == StaffSession.staff_account_id)
        .where(StaffSession.token_hash == token_hash)
    ).one_or_none()
    if row is None:
        return None
    staff_session, account = row
    expired = (
        staff_session.last_seen_at + idle <= now
        or staff_session.created_at + SESSION_LIFETIME <= now
        or account.disabled_at is not None
    )
    if expired:
        session.execute(delete(StaffSession).where(StaffSession.token_hash == token_hash))
        return None
    if touch and now - staff_session.last_seen_at >= TOUCH_EVERY:
        session.execute(
            update(StaffSession).where(StaffSession.token_hash == token_hash).values(last_seen_at=now)
        )
    return ActiveSession(_staff(account), staff_session.csrf_token, token_hash)


def sign_out(session: Session, token: str) -> None:
    session.execute(delete(StaffSession).where(StaffSession.token_hash == _token_hash(token)))
