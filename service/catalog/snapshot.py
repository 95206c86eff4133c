"""An in-process, read-only copy of the catalog for the hot path (redemptions, exchanges).

Loaded once, then refreshed when a newer catalog revision exists; the check is one indexed query
at most once a second per process, so no request pays for a catalog reload."""

from __future__ import annotations

import bisect
import threading
import time
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

from psycopg import AsyncConnection
from psycopg.rows import scalar_row
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from service.catalog.models import (
    CatalogRevision,
    ExchangeCatalogItem,
    Offer,
    OfferPrice,
    Partner,
    Product,
    Program,
    Tariff,
    VatRate,
)
from service.kit.db.engine import new_session
from service.kit.values.zones import zone

CHECK_INTERVAL = 1.0


@dataclass(frozen=True)
class ProgramInfo:
    id: int
    code: str
    name: str
    currency: str
    zone: ZoneInfo
    sms_sender: str
    templates: dict
    webhook_url: str | None
    monthly_budget_minor: int | None
    active: bool
    quiet_hours: str | None = None
    expiry_reminder: bool = False
    sms_sender_ton: int | None = None  # None: from the sender's form (catalog.model.sender_address)
    sms_sender_npi: int | None = None
    campaign_approval_minor: int | None = None  # None: every campaign needs a second person


@dataclass(frozen=True)
class PartnerInfo:
    id: int
    code: str
    name: str
    page: dict | None  # what the holders' page shows (service/catalog/service.py page_of)
    active: bool


@dataclass(frozen=True)
class ProductInfo:
    id: int
    sku: str
    kind: str
    name: str
    currency: str
    partner_id: int | None
    partner_code: str | None
    face_value_minor: int | None
    cost_price_minor: int | None
    brand: str | None
    validity_days: int | None
    vat_schedule: str | None
    vat_point: str
    active: bool
    exchange_catalog: frozenset[int] = frozenset()
    page: dict | None = None


@dataclass(frozen=True)
class OfferInfo:
    id: int
    code: str
    name: str
    program_id: int
    product_id: int
    active_from: datetime | None
    active_to: datetime | None
    limit_per_day: int | None
    limit_per_month: int | None
    active: bool
    prices: dict[int, tuple[int, int]]  # tariff id -> (nominal minor, points)


@dataclass(frozen=True)
class TariffInfo:
    id: int
    code: str
    program_id: int
    active: bool


@dataclass
class CatalogSnapshot:
    revision: int | None
    programs: dict[str, ProgramInfo] = field(default_factory=dict)
    programs_by_id: dict[int, ProgramInfo] = field(default_factory=dict)
    tariffs: dict[tuple[int, str], TariffInfo] = field(default_factory=dict)
    tariffs_by_id: dict[int, TariffInfo] = field(default_factory=dict)
    offers: dict[tuple[int, str], OfferInfo] = field(default_factory=dict)
    offers_by_id: dict[int, OfferInfo] = field(default_factory=dict)
    products: dict[int, ProductInfo] = field(default_factory=dict)
    products_by_sku: dict[str, ProductInfo] = field(default_factory=dict)
    partners_by_id: dict[int, PartnerInfo] = field(default_factory=dict)
    vat: dict[str, tuple[list[date], list[int]]] = field(default_factory=dict)

    def vat_rate_bp(self, schedule: str | None, on: date) -> int:
        if schedule is None or schedule not in self.vat:
            return 0
        dates, rates = self.vat[schedule]
        index = bisect.bisect_right(dates, on) - 1
        return rates[index] if index >= 0 else 0


def load_snapshot(session: Session) -> CatalogSnapshot:
    snap = CatalogSnapshot(revision=session.scalar(select(func.max(CatalogRevision.id))))
    for pa in session.scalars(select(Partner)):
        snap.partners_by_id[pa.id] = PartnerInfo(pa.id, pa.code, pa.name, pa.page, pa.active)
    partner_codes = {i: p.code for i, p in snap.partners_by_id.items()}
    for p in session.scalars(select(Program)):
        program = ProgramInfo(
            p.id,
            p.code,
            p.name,
            p.currency,
            zone(p.timezone),
            p.sms_sender,
            p.templates,
            p.webhook_url,
            p.monthly_budget_minor,
            p.active,
            p.quiet_hours,
            p.expiry_reminder,
            p.sms_sender_ton,
            p.sms_sender_npi,
            p.campaign_approval_minor,
        )
        snap.programs[p.code] = snap.programs_by_id[p.id] = program
    for t in session.scalars(select(Tariff)):
        tariff = TariffInfo(t.id, t.code, t.program_id, t.active)
        snap.tariffs[(t.program_id, t.code)] = snap.tariffs_by_id[t.id] = tariff
    exchange: dict[int, set[int]] = {}
    for card_id, code_id in session.execute(
        select(ExchangeCatalogItem.card_product_id, ExchangeCatalogItem.code_product_id)
    ):
        exchange.setdefault(card_id, set()).add(code_id)
    for pr in session.scalars(select(Product)):
        product = ProductInfo(
            pr.id,
            pr.sku,
            pr.kind,
            pr.name,
            pr.currency,
            pr.partner_id,
            partner_codes.get(pr.partner_id) if pr.partner_id is not None else None,
            pr.face_value_minor,
            pr.cost_price_minor,
            pr.brand,
            pr.validity_days,
            pr.vat_schedule,
            pr.vat_point,
            pr.active,
            frozenset(exchange.get(pr.id, ())),
            pr.page,
        )
        snap.products[pr.id] = snap.products_by_sku[pr.sku] = product
    prices: dict[int, dict[int, tuple[int, int]]] = {}
    for offer_id, tariff_id, nominal, points in session.execute(
        select(OfferPrice.offer_id, OfferPrice.tariff_id, OfferPrice.nominal_minor, OfferPrice.points)
    ):
        prices.setdefault(offer_id, {})[tariff_id] = (nominal, points)
    for o in session.scalars(select(Offer)):
        offer = OfferInfo(
            o.id,
            o.code,
            o.name,
            o.program_id,
            o.product_id,
            o.active_from,
            o.active_to,
            o.limit_per_day,
            o.limit_per_month,
            o.active,
            prices.get(o.id, {}),
        )
        snap.offers[(o.program_id, o.code)] = snap.offers_by_id[o.id] = offer
    for r in session.scalars(select(VatRate).order_by(VatRate.schedule, VatRate.effective_from)):
        dates, rates = snap.vat.setdefault(r.schedule, ([], []))
        dates.append(r.effective_from)
        rates.append(r.rate_bp)
    return snap


class _Cache:
    def __init__(self) -> None:
        self.snapshot: CatalogSnapshot | None = None
        self.checked_at = 0.0
        self.lock = threading.Lock()

    def get(self, session: Session) -> CatalogSnapshot:
        now = time.monotonic()
        if self.snapshot is not None and now - self.checked_at < CHECK_INTERVAL:
            return self.snapshot
        with self.lock:
            if self.snapshot is not None and time.monotonic() - self.checked_at < CHECK_INTERVAL:
                return self.snapshot
            revision = session.scalar(select(func.max(CatalogRevision.id)))
            if self.snapshot is None or revision != self.snapshot.revision:
                self.snapshot = load_snapshot(session)
            self.checked_at = time.monotonic()
            return self.snapshot

    def fresh(self) -> CatalogSnapshot | None:
        """The snapshot, if it was checked against the database within CHECK_INTERVAL."""
        if self.snapshot is not None and time.monotonic() - self.checked_at < CHECK_INTERVAL:
            return self.snapshot
        return None

    def confirm(self, revision: int | None) -> CatalogSnapshot | None:
        """The snapshot, if it is of `revision` (the latest in the database); then it counts as checked."""
        with self.lock:
            if self.snapshot is not None and self.snapshot.revision == revision:
                self.checked_at = time.monotonic()
                return self.snapshot
        return None

    def invalidate(self) -> None:
        with self.lock:
            self.snapshot = None


_cache = _Cache()


def get_snapshot(session: Session) -> CatalogSnapshot:
    return _cache.get(session)


LATEST_REVISION = "SELECT max(id) FROM catalog_revisions"


async def get_snapshot_async(conn: AsyncConnection[Any]) -> CatalogSnapshot:
    """The snapshot for the API's event loop: the revision check on the caller's connection (once a
    second), a reload of a changed catalog on a worker thread with a session of its own."""
    snapshot = _cache.fresh()
    if snapshot is not None:
        return snapshot
    # max() always returns its row; an empty catalog reads as None, like no row at all.
    revision: int | None = await (
        await conn.cursor(row_factory=scalar_row).execute(LATEST_REVISION)
    ).fetchone()
    snapshot = _cache.confirm(revision)
    if snapshot is not None:
        return snapshot
    return await run_in_threadpool(_load_in_thread)


def _load_in_thread() -> CatalogSnapshot:
    with new_session() as session:
        return _cache.get(session)


def invalidate_snapshot() -> None:
    _cache.invalidate()
