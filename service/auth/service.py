"""API keys: `rk_<key id>_<secret>`. The key id is public (lists, logs); only SHA-256(secret) is kept."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import string
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.auth.models import ROLES, ApiKey
from service.kit.config import get_settings
from service.kit.http.errors import Problem, Unauthorized

_ALNUM = string.ascii_lowercase + string.digits


@dataclass(frozen=True)
class Principal:
    api_key_id: int
    key_id: str
    role: str
    programs: frozenset[str]
    partner: str | None
    sandbox: bool = False
    # the staff member who holds the key (required for approver keys), for maker-checker
    owner_staff_id: int | None = None

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    @property
    def program_scope(self) -> frozenset[str] | None:
        """The programs this key may see; None: every program. Loyalty keys are scoped to theirs,
        support keys may be (`--program`, as support staff in the console); admin, finance and an
        unscoped support key see all. (A partner key reaches no program route: 403 first.)"""
        if self.role == "loyalty" or (self.role == "support" and self.programs):
            return self.programs
        return None

    def sees_all_programs(self) -> bool:
        return self.role in ("admin", "finance", "support") and self.program_scope is None

    def may_see_program(self, code: str) -> bool:
        scope = self.program_scope
        return self.role != "partner" and (scope is None or code in scope)


@dataclass(frozen=True)
class CreatedKey:
    key: str
    record: ApiKey


def _hash(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def create_key(
    session: Session,
    *,
    role: str,
    name: str,
    programs: list[str] | None = None,
    partner: str | None = None,
    sandbox: bool = False,
    owner: str | None = None,
) -> CreatedKey:
    """`owner`: the email of the staff member who holds the key (required for approver keys: an
    approval is a person's, and maker-checker must know that person behind the API and the console)."""
    programs = sorted(set(programs or []))
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}")
    if role == "loyalty" and not programs:
        raise ValueError("a loyalty key needs at least one --program")
    if role not in ("loyalty", "support") and programs:
        raise ValueError("only loyalty and support keys are scoped to programs")
    if role == "partner" and not partner:
        raise ValueError("a partner key needs --partner")
    if role != "partner" and partner:
        raise ValueError("only partner keys are scoped to a partner")
    if sandbox and role != "loyalty":
        raise ValueError("only loyalty keys can be sandbox keys")
    # The scope names are checked against the catalog's tables, not through its models: auth sits
    # below the catalog, whose routes authorize with it.
    if programs:
        known = set(
            session.connection()
            .exec_driver_sql("SELECT code FROM programs WHERE code = ANY(%(codes)s)", {"codes": programs})
            .scalars()
        )
        if missing := sorted(set(programs) - known):
            raise ValueError(f"unknown program(s): {', '.join(missing)}")
    if (
        partner
        and session.connection()
        .exec_driver_sql("SELECT id FROM partners WHERE code = %(code)s", {"code": partner})
        .scalar()
        is None
    ):
        raise ValueError(f"unknown partner: {partner}")
    owner_staff_id = None
    if owner is not None:
        owner_staff_id = (
            session.connection()
            .exec_driver_sql(
                "SELECT id FROM staff_accounts WHERE email = lower(%(email)s) AND disabled_at IS NULL",
                {"email": owner},
            )
            .scalar()
        )
        if owner_staff_id is None:
            raise ValueError(f"no active staff account {owner}")
    elif role == "approver":
        raise ValueError("an approver key needs --owner (the staff member who holds it)")
    key_id = "".join(secrets.choice(_ALNUM) for _ in range(12))
    secret = secrets.token_urlsafe(32)
    record = ApiKey(
        key_id=key_id,
        secret_hash=_hash(secret),
        name=name,
        role=role,
        programs=programs,
        partner_code=partner,
        sandbox=sandbox,
        owner_staff_id=owner_staff_id,
    )
    session.add(record)
    session.flush()
    return CreatedKey(key=f"rk_{key_id}_{secret}", record=record)


# revoke_key() sends the key id on this channel with its transaction (NOTIFY is delivered at commit);
# every API process listens (service/auth/revocations.py) and empties its principal cache.
REVOCATIONS = "rewards_api_key_revoked"


class PrincipalCache:
    """Keys this process authenticated recently, so a request needs no key lookup of its own.

    A revocation empties the cache of every API process at once: in this one directly, in the others
    by the notification their revocation listener receives. An entry lives at most
    API_KEY_CACHE_SECONDS in any case, which bounds how long a revoked key may still be taken by a
    process whose listener is not connected (its database connection lost: it empties the cache again
    when it is back, since notifications are not stored).

    `generation` changes with every clear(): a lookup that started before a revocation committed and
    ends after it must not put the revoked key back (put() refuses an older generation)."""

    def __init__(self) -> None:
        self._entries: dict[bytes, tuple[float, Principal]] = {}
        self._lock = threading.Lock()
        self.generation = 0

    def get(self, authorization: str) -> Principal | None:
        entry = self._entries.get(hashlib.sha256(authorization.encode()).digest())
        if entry is None or entry[0] < time.monotonic():
            return None
        return entry[1]

    def put(self, authorization: str, principal: Principal, generation: int) -> None:
        expires = time.monotonic() + get_settings().api_key_cache_seconds
        with self._lock:
            if generation != self.generation:
                return
            if len(self._entries) > 10_000:
                self._entries.clear()
            self._entries[hashlib.sha256(authorization.encode()).digest()] = (expires, principal)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self.generation += 1


principal_cache = PrincipalCache()


def list_keys(session: Session) -> list[tuple[ApiKey, str | None]]:
    """Every key, with the e-mail of the staff member who holds it (None: no owner)."""
    rows = session.connection().exec_driver_sql(
        "SELECT k.id, s.email FROM api_keys k JOIN staff_accounts s ON s.id = k.owner_staff_id"
    )
    owners: dict[int, str] = {key_id: email for key_id, email in rows.all()}
    return [(key, owners.get(key.id)) for key in session.scalars(select(ApiKey).order_by(ApiKey.id))]


def revoke_key(session: Session, key_id: str) -> ApiKey:
    record = session.scalar(select(ApiKey).where(ApiKey.key_id == key_id))
    if record is None:
        raise LookupError(f"no key {key_id}")
    if record.revoked_at is None:
        record.revoked_at = datetime.now(UTC)
    # Every API process drops its cached keys when this commits (and this one at once).
    session.connection().exec_driver_sql(
        "SELECT pg_notify(%(channel)s, %(key_id)s)", {"channel": REVOCATIONS, "key_id": key_id}
    )
    principal_cache.clear()
    return record


def _unauthorized(detail: str) -> Problem:
    return Unauthorized(detail)


def authenticate(session: Session, authorization: str | None) -> Principal:
    if not authorization:
        raise _unauthorized("send Authorization: Bearer <api key>")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise _unauthorized("send Authorization: Bearer <api key>")
    parts = token.strip().split("_", 2)
    if len(parts) != 3 or parts[0] != "rk":
        raise _unauthorized("invalid API key")
    _, key_id, secret = parts
    row = session.execute(
        select(
            ApiKey.id,
            ApiKey.key_id,
            ApiKey.secret_hash,
            ApiKey.role,
            ApiKey.programs,
            ApiKey.partner_code,
            ApiKey.revoked_at,
            ApiKey.sandbox,
            ApiKey.owner_staff_id,
        ).where(ApiKey.key_id == key_id)
    ).first()
    # compare_digest on a dummy when the id is unknown keeps timing the same for both failures.
    expected = row.secret_hash if row else b"\0" * 32
    if not hmac.compare_digest(expected, _hash(secret)) or row is None or row.revoked_at is not None:
        raise _unauthorized("invalid API key")
    return Principal(
        row.id,
        row.key_id,
        row.role,
        frozenset(row.programs or ()),
        row.partner_code,
        row.sandbox,
        row.owner_staff_id,
    )
