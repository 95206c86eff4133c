"""The webhook event log over HTTP: list the events sent to a program's endpoint, and replay one."""

from __future__ import annotations

import re
from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Depends, Path, Query

from catalog.model import SLUG
from service.auth.deps import require
from service.auth.service import Principal
from service.events import event_log
from service.events.errors import WebhookNotConfigured
from service.events.event_log import EventStatus, WebhookEventOut
from service.events.schemas import EVENT_TYPES
from service.kit.db.engine import driver, new_session, transaction
from service.kit.http.errors import responses
from service.kit.http.pagination import Limit, Page, cursor_query
from service.kit.http.strict import MONTH, parse_month, reject_unknown_query

router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"], dependencies=[Depends(reject_unknown_query)])
EVENT_TYPE = "^(" + "|".join(re.escape(t) for t in EVENT_TYPES) + ")$"


def _programs(principal: Principal) -> frozenset[str] | None:
    return principal.program_scope


def _world(principal: Principal) -> bool | None:
    """A loyalty key sees its own world's events only (sandbox or real); staff see both, marked."""
    return principal.sandbox if principal.role == "loyalty" else None


@router.get(
    "/events",
    response_model=Page[WebhookEventOut],
    summary="Webhook events sent to the programs' endpoints (newest first), with their delivery status",
    responses=responses(),
)
def list_webhook_events(
    principal: Principal = Depends(require("loyalty", "support")),
    status: Annotated[EventStatus | None, Query(description="pending, delivered or given_up")] = None,
    program: Annotated[str | None, Query(pattern=SLUG)] = None,
    type: Annotated[str | None, Query(pattern=EVENT_TYPE, description="Event type, e.g. stock.low")] = None,
    period: Annotated[
        str | None, Query(pattern=MONTH.pattern, description="YYYY-MM: created that month (program's zone)")
    ] = None,
    limit: Limit = 50,
    cursor: Annotated[
        str | None,
        cursor_query(
            event_log.POSITION,
            "this event: `{created_at in microseconds since 1970}_{id as 32 hex digits}` (newest first)",
        ),
    ] = None,
) -> Page[WebhookEventOut]:
    month = parse_month(period, "query.period") if period is not None else None
    with new_session() as session:
        found = event_log.list_events(
            driver(session),
            programs=_programs(principal),
            sandbox=_world(principal),
            limit=limit,
            status=status,
            program=program,
            type_=type,
            month=month,
            cursor=cursor,
        )
    return Page[WebhookEventOut](items=found.items, next_cursor=found.next_cursor)


@router.post(
    "/events/{event_id}/replay",
    status_code=202,
    response_model=WebhookEventOut,
    summary="Send an event again (same id, a new 24-hour retry window), whatever its status",
    responses=responses(WebhookNotConfigured),
)
def replay_webhook_event(
    event_id: Annotated[UUID, Path(description="Event id")],
    principal: Principal = Depends(require("loyalty", "support")),
) -> WebhookEventOut:
    with transaction() as session:
        return event_log.replay(session, event_id, programs=_programs(principal), sandbox=_world(principal))
