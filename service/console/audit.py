"""The staff audit log: one append-only row per action a person took in the console.

A successful action writes its row in the action's own transaction, so the row exists exactly when
the action happened. A refused one writes its row after the rollback, with the refusal's code. A form
that may be submitted twice (a double click) carries a one-time `action_key`: the row's unique
(account, key) makes the second submission find the first one's row instead of acting again."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from service.console.accounts import Staff
from service.kit.db.engine import transaction


class ActionAlreadyDone(Exception):
    """This form's action_key already has a row: the action was done by an earlier submission."""

    def __init__(self, details: dict[str, Any]):
        super().__init__("already done")
        self.details = details


@dataclass(frozen=True)
class Actor:
    """Who acts, and from which address (the client's, as the ASGI server saw it)."""

    staff: Staff | None
    email: str
    address: str | None
    account_id: int | None = None  # a refused sign-in names the account it tried, if there is one

    @property
    def id(self) -> int | None:
        return self.staff.id if self.staff else self.account_id


_INSERT = (
    "INSERT INTO staff_audit_log"
    " (staff_account_id, email, role, action, target, outcome, details, address, action_key)"
    " VALUES (%(account)s, %(email)s, %(role)s, %(action)s, %(target)s, %(outcome)s,"
    " CAST(%(details)s AS jsonb), %(address)s, %(key)s)"
    " ON CONFLICT (staff_account_id, action_key) WHERE action_key IS NOT NULL DO NOTHING RETURNING id"
)


def record(
    session: Session,
    actor: Actor,
    action: str,
    *,
    target: str | None = None,
    outcome: str = "ok",
    details: dict[str, Any] | None = None,
    action_key: str | None = None,
) -> None:
    """Writes the row in the caller's transaction. Raises ActionAlreadyDone (roll back!) when the
    action_key was used before."""
    inserted = (
        session.connection()
        .exec_driver_sql(
            _INSERT,
            {
                "account": actor.id,
                "email": actor.staff.email if actor.staff else actor.email,
                "role": actor.staff.role if actor.staff else None,
                "action": action,
                "target": target,
                "outcome": outcome,
                "details": json.dumps(details or {}, default=str),
                "address": actor.address,
                "key": action_key,
            },
        )
        .scalar()
    )
    if inserted is None:
        earlier = (
            session.connection()
            .exec_driver_sql(
                "SELECT details FROM staff_audit_log"
                " WHERE staff_account_id = %(account)s AND action_key = %(key)s",
                {"account": actor.id, "key": action_key},
            )
            .scalar()
        )
        raise ActionAlreadyDone(earlier or {})


def record_refusal(
    actor: Actor, action: str, *, target: str | None, outcome: str, details: dict | None = None
) -> None:
    """A refused action, in a transaction of its own (the action's was rolled back)."""
    with transaction() as session:
        record(session, actor, action, target=target, outcome=outcome, details=details)


@dataclass(frozen=True)
class AuditRow:
    id: int
    at: datetime
    email: str
    role: str | None
    action: str
    target: str | None
    outcome: str
    details: dict[str, Any]
    address: str | None


def recent(session: Session, *, limit: int = 100, before: int | None = None) -> list[AuditRow]:
    rows = (
        session.connection()
        .exec_driver_sql(
            "SELECT id, at, email, role, action, target, outcome, details, address FROM staff_audit_log"
            " WHERE CAST(%(before)s AS bigint) IS NULL OR id < %(before)s ORDER BY id DESC LIMIT %(limit)s",
            {"before": before, "limit": limit},
        )
        .all()
    )
    return [AuditRow(*row) for row in rows]
