"""Applying a validated catalog: one transaction, keyed by natural codes, idempotent.

Entities missing from the files are deactivated, never deleted: redemptions and records keep
pointing at them."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from catalog.loader import LoadedCatalog
from catalog.model import CatalogSpec, PageFields, sender_address
from service.catalog.models import (
    CatalogAsset,
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
from service.catalog.snapshot import invalidate_snapshot
from service.kit.values.money import to_minor

CATALOG_LOCK = 7270002


@dataclass
class ApplySummary:
    changed: bool
    digest: str
    created: dict[str, int] = field(default_factory=dict)
    updated: dict[str, int] = field(default_factory=dict)
    deactivated: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "changed": self.changed,
            "digest": self.digest,
            "created": self.created,
            "updated": self.updated,
            "deactivated": self.deactivated,
        }


class _Sync:
    """Brings rows of one model in line with the spec, counting what changed."""

    def __init__(self, session: Session, summary: ApplySummary):
        self.session = session
        self.summary = summary

    def upsert(
        self, kind: str, existing: dict[Any, Any], key: Any, model: type, values: dict[str, Any]
    ) -> Any:
        row = existing.get(key)
        if row is None:
            row = model(**values)
            self.session.add(row)
            existing[key] = row
            self.summary.created[kind] = self.summary.created.get(kind, 0) + 1
            return row
        dirty = False
        for name, value in values.items():
            if getattr(row, name) != value:
                setattr(row, name, value)
                dirty = True
        if dirty:
            if hasattr(row, "updated_at"):
                row.updated_at = func.now()
            self.summary.updated[kind] = self.summary.updated.get(kind, 0) + 1
        return row

    def deactivate_missing(self, kind: str, existing: dict[Any, Any], keep: set[Any]) -> None:
        for key, row in existing.items():
            if key not in keep and row.active:
                row.active = False
                self.summary.deactivated[kind] = self.summary.deactivated.get(kind, 0) + 1


def latest_digest(session: Session) -> str | None:
    return session.scalar(select(CatalogRevision.digest).order_by(CatalogRevision.id.desc()).limit(1))


def apply_catalog(session: Session, loaded: LoadedCatalog) -> ApplySummary:
    """Must run inside the caller's transaction; any exception leaves the database untouched.
    Entities the files no longer name are deactivated, never deleted (history refers to them)."""
    session.execute(select(func.pg_advisory_xact_lock(CATALOG_LOCK)))
    summary = ApplySummary(changed=False, digest=loaded.digest)
    if latest_digest(session) == loaded.digest:
        return summary
    spec: CatalogSpec = loaded.spec
    sync = _Sync(session, summary)
    _apply_vat(session, spec)
    logos = _apply_assets(session, loaded)
    partners = _apply_partners(session, sync, spec, logos)
    products = _apply_products(session, sync, spec, partners, logos)
    programs = _apply_programs(session, sync, spec)
    tariffs = _apply_tariffs(session, sync, spec, programs)
    _apply_offers(session, sync, spec, programs, products, tariffs)
    summary.changed = True
    session.add(CatalogRevision(digest=loaded.digest, source=loaded.source, summary=summary.as_dict()))
    session.flush()
    # API processes cache the catalog; this tells them (on commit) to reload.
    session.execute(select(func.pg_notify("catalog_changed", loaded.digest)))
    invalidate_snapshot()
    return summary


def _apply_vat(session: Session, spec: CatalogSpec) -> None:
    session.execute(delete(VatRate))
    for schedule in spec.vat_schedules:
        for rate in schedule.rates:
            session.add(
                VatRate(
                    schedule=schedule.code,
                    effective_from=rate.effective_from,
                    rate_bp=int(Decimal(rate.percent) * 100),
                )
            )


def _apply_assets(session: Session, loaded: LoadedCatalog) -> dict[str, str]:
    """The catalog's files (logos), stored by content hash; returns each path's asset id. Stored files
    are kept (a page cached by a browser may still name an older logo)."""
    for asset in {a.id: a for a in loaded.assets.values()}.values():
        if session.get(CatalogAsset, asset.id) is None:
            session.add(CatalogAsset(id=asset.id, content_type=asset.content_type, content=asset.content))
    session.flush()
    return {path: asset.id for path, asset in loaded.assets.items()}


def page_of(item: PageFields, logos: dict[str, str], **extra: Any) -> dict[str, Any] | None:
    """The `page` column of a partner or product: what the holders' page shows; None when nothing."""
    page: dict[str, Any] = {
        name: getattr(item, name).model_dump(exclude_none=True)
        for name in ("title", "description", "instructions", "terms")
        if getattr(item, name) is not None
    }
    if item.logo is not None:
        page["logo"] = logos[item.logo]
    page.update({k: v for k, v in extra.items() if v not in (None, [], ())})
    return page or None


def _apply_partners(
    session: Session, sync: _Sync, spec: CatalogSpec, logos: dict[str, str]
) -> dict[str, Partner]:
    partners = {p.code: p for p in session.scalars(select(Partner))}
    for p in spec.partners:
        page = page_of(p, logos, website=p.website, locations=[loc.model_dump() for loc in p.locations])
        sync.upsert(
            "partners",
            partners,
            p.code,
            Partner,
            {"code": p.code, "name": p.name, "page": page, "active": True},
        )
    sync.deactivate_missing("partners", partners, {p.code for p in spec.partners})
    session.flush()
    return partners


def _apply_products(
    session: Session, sync: _Sync, spec: CatalogSpec, partners: dict[str, Partner], logos: dict[str, str]
) -> dict[str, Product]:
    """Products, then the exchange catalogs of the universal cards (which name other products)."""
    products = {p.sku: p for p in session.scalars(select(Product))}
    for p in spec.products:
        sync.upsert(
            "products",
            products,
            p.sku,
            Product,
            {
                "sku": p.sku,
                "kind": p.kind,
                "name": p.name,
                "currency": p.currency,
                "partner_id": partners[p.partner].id if p.partner else None,
                "face_value_minor": to_minor(p.face_value, p.currency) if p.face_value else None,
                "cost_price_minor": to_minor(p.cost_price, p.currency) if p.cost_price else None,
                "brand": p.brand,
                "validity_days": p.validity_days,
                "low_stock_threshold": p.low_stock_threshold,
                "vat_schedule": p.vat_schedule,
                "vat_point": p.vat_point,
                "page": page_of(p, logos, barcode=p.barcode),
                "active": True,
            },
        )
    sync.deactivate_missing("products", products, {p.sku for p in spec.products})
    session.flush()
    session.execute(delete(ExchangeCatalogItem))
    for p in spec.products:
        for sku in p.exchange_catalog:
            session.add(
                ExchangeCatalogItem(card_product_id=products[p.sku].id, code_product_id=products[sku].id)
            )
    return products


def _apply_programs(session: Session, sync: _Sync, spec: CatalogSpec) -> dict[str, Program]:
    programs = {p.code: p for p in session.scalars(select(Program))}
    for p in spec.programs:
        sync.upsert(
            "programs",
            programs,
            p.code,
            Program,
            {
                "code": p.code,
                "name": p.name,
                "currency": p.currency,
                "timezone": p.timezone,
                "sms_sender": p.sms_sender,
                "sms_sender_ton": sender_address(p.sms_sender, p.sms_sender_ton, p.sms_sender_npi)[0],
                "sms_sender_npi": sender_address(p.sms_sender, p.sms_sender_ton, p.sms_sender_npi)[1],
                "templates": p.templates.model_dump(mode="json", exclude_none=True),
                "webhook_url": p.webhook_url,
                "monthly_budget_minor": to_minor(p.monthly_budget, p.currency) if p.monthly_budget else None,
                "sms_deadline_hours": p.sms_deadline_hours,
                "quiet_hours": p.quiet_hours,
                "expiry_reminder": p.expiry_reminder,
                "campaign_approval_minor": (
                    to_minor(p.campaign_approval_threshold, p.currency)
                    if p.campaign_approval_threshold is not None
                    else None
                ),
                "active": True,
            },
        )
    sync.deactivate_missing("programs", programs, {p.code for p in spec.programs})
    session.flush()
    return programs


def _apply_tariffs(
    session: Session, sync: _Sync, spec: CatalogSpec, programs: dict[str, Program]
) -> dict[tuple[int, str], Tariff]:
    tariffs = {(t.program_id, t.code): t for t in session.scalars(select(Tariff))}
    wanted = set()
    for p in spec.programs:
        pid = programs[p.code].id
        for t in p.tariffs:
            wanted.add((pid, t.code))
            sync.upsert(
                "tariffs",
                tariffs,
                (pid, t.code),
                Tariff,
                {"program_id": pid, "code": t.code, "name": t.name, "active": True},
            )
    sync.deactivate_missing("tariffs", tariffs, wanted)
    session.flush()
    return tariffs


def _apply_offers(
    session: Session,
    sync: _Sync,
    spec: CatalogSpec,
    programs: dict[str, Program],
    products: dict[str, Product],
    tariffs: dict[tuple[int, str], Tariff],
) -> None:
    """Offers and their per-tariff prices (rewritten whole: a price is not an entity of its own)."""
    offers = {(o.program_id, o.code): o for o in session.scalars(select(Offer))}
    wanted = set()
    for o in spec.offers:
        pid = programs[o.program].id
        wanted.add((pid, o.code))
        row = sync.upsert(
            "offers",
            offers,
            (pid, o.code),
            Offer,
            {
                "program_id": pid,
                "code": o.code,
                "name": o.name,
                "product_id": products[o.product].id,
                "active_from": o.active_from,
                "active_to": o.active_to,
                "limit_per_day": o.limits.per_subscriber_per_day,
                "limit_per_month": o.limits.per_subscriber_per_month,
                "active": True,
            },
        )
        session.flush()
        session.execute(delete(OfferPrice).where(OfferPrice.offer_id == row.id))
        for price in o.prices:
            for tariff in price.tariffs:
                session.add(
                    OfferPrice(
                        offer_id=row.id,
                        tariff_id=tariffs[(pid, tariff)].id,
                        nominal_minor=to_minor(price.nominal, programs[o.program].currency),
                        points=price.points,
                    )
                )
    sync.deactivate_missing("offers", offers, wanted)


def catalog_is_empty(session: Session) -> bool:
    return session.scalar(select(func.count()).select_from(CatalogRevision)) == 0
