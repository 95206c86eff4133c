"""Read side of the catalog for the API: a few set-based queries per call, no N+1."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime

from sqlalchemy import exists, select
from sqlalchemy.orm import Session

from service.balances.service import budgets
from service.catalog.errors import UnknownTariff
from service.catalog.models import ExchangeCatalogItem, Offer, OfferPrice, Partner, Product, Program, Tariff
from service.catalog.schemas import (
    Availability,
    BudgetBalance,
    OfferLimits,
    OfferOut,
    OfferPriceOut,
    ProductOut,
    ProductRef,
    ProgramDetailOut,
    ProgramOut,
    TariffOut,
)
from service.kit.db.engine import driver
from service.kit.http.errors import not_found
from service.kit.values.money import Money


def _money(minor: int | None, currency: str) -> Money | None:
    return None if minor is None else Money.of(minor, currency)


def list_programs(
    session: Session, *, visible: frozenset[str] | None, after: str | None, limit: int
) -> list[ProgramOut]:
    query = select(Program).where(Program.active).order_by(Program.code).limit(limit)
    if visible is not None:
        query = query.where(Program.code.in_(visible))
    if after is not None:
        query = query.where(Program.code > after)
    programs = list(session.scalars(query))
    tariffs: dict[int, list[TariffOut]] = defaultdict(list)
    if programs:
        for t in session.scalars(
            select(Tariff)
            .where(Tariff.active, Tariff.program_id.in_([p.id for p in programs]))
            .order_by(Tariff.id)
        ):
            tariffs[t.program_id].append(TariffOut(code=t.code, name=t.name))
    return [
        ProgramOut(
            code=p.code,
            name=p.name,
            currency=p.currency,
            timezone=p.timezone,
            sms_sender=p.sms_sender,
            monthly_budget=_money(p.monthly_budget_minor, p.currency),
            tariffs=tariffs[p.id],
        )
        for p in programs
    ]


def product_ref(product: Product) -> ProductRef:
    return ProductRef(
        sku=product.sku,
        kind=product.kind,
        name=product.name,
        partner=product.partner.code if product.partner else None,
        face_value=_money(product.face_value_minor, product.currency),
    )


def _in_stock(session: Session, product_ids: list[int]) -> set[int]:
    if not product_ids:
        return set()
    rows = session.connection().exec_driver_sql(
        "SELECT p.id FROM unnest(CAST(%(ids)s AS int[])) AS p(id) WHERE EXISTS ("
        " SELECT 1 FROM codes c WHERE c.product_id = p.id AND c.status = 'available'"
        " AND (c.expires_at IS NULL OR c.expires_at > now()))",
        {"ids": product_ids},
    )
    return {r.id for r in rows}


def list_offers(
    session: Session, program_code: str, *, tariff: str | None, after: str | None, limit: int
) -> list[OfferOut]:
    program = session.scalar(select(Program).where(Program.code == program_code, Program.active))
    if program is None:
        raise not_found(f"program {program_code}")
    tariff_row = None
    if tariff is not None:
        tariff_row = session.scalar(
            select(Tariff).where(Tariff.program_id == program.id, Tariff.code == tariff, Tariff.active)
        )
        if tariff_row is None:
            raise UnknownTariff(
                f"program {program_code} has no tariff {tariff}",
                errors=[{"field": "query.tariff", "message": "unknown tariff"}],
            )
    query = (
        select(Offer, Product)
        .join(Product, Product.id == Offer.product_id)
        .where(Offer.program_id == program.id, Offer.active)
        .order_by(Offer.code)
        .limit(limit)
    )
    if after is not None:
        query = query.where(Offer.code > after)
    if tariff_row is not None:
        query = query.where(
            exists().where(OfferPrice.offer_id == Offer.id, OfferPrice.tariff_id == tariff_row.id)
        )
    rows = session.execute(query).all()
    if not rows:
        return []
    prices: dict[int, list[tuple[str, int, int]]] = defaultdict(list)
    for offer_id, code, nominal, points in session.execute(
        select(OfferPrice.offer_id, Tariff.code, OfferPrice.nominal_minor, OfferPrice.points)
        .join(Tariff, Tariff.id == OfferPrice.tariff_id)
        .where(OfferPrice.offer_id.in_([o.id for o, _ in rows]), Tariff.active)
        .order_by(Tariff.id)
    ):
        prices[offer_id].append((code, nominal, points))
    stocked = _in_stock(session, [p.id for _, p in rows if p.kind == "code"])
    now = datetime.now(UTC)
    out = []
    for offer, product in rows:
        offer_prices = [
            OfferPriceOut(tariff=t, nominal=Money.of(n, program.currency), points=pts)
            for t, n, pts in prices[offer.id]
        ]
        chosen = next((p for p in offer_prices if p.tariff == tariff), None)
        if offer.active_from and now < offer.active_from:
            availability = Availability(available=False, reason="not_started")
        elif offer.active_to and now >= offer.active_to:
            availability = Availability(available=False, reason="ended")
        elif product.kind == "code" and product.id not in stocked:
            availability = Availability(available=False, reason="out_of_stock")
        else:
            availability = Availability(available=True)
        out.append(
            OfferOut(
                code=offer.code,
                name=offer.name,
                program=program.code,
                product=product_ref(product),
                tariffs=[p.tariff for p in offer_prices],
                prices=offer_prices,
                points=chosen.points if chosen else None,
                nominal=chosen.nominal if chosen else None,
                active_from=offer.active_from,
                active_to=offer.active_to,
                limits=OfferLimits(
                    per_subscriber_per_day=offer.limit_per_day,
                    per_subscriber_per_month=offer.limit_per_month,
                ),
                availability=availability,
            )
        )
    return out


def list_products(
    session: Session, *, partner: str | None, after: str | None, limit: int
) -> list[ProductOut]:
    query = select(Product).where(Product.active).order_by(Product.sku).limit(limit)
    if partner is not None:
        query = query.join(Partner, Partner.id == Product.partner_id).where(Partner.code == partner)
    if after is not None:
        query = query.where(Product.sku > after)
    products = list(session.scalars(query))
    catalog: dict[int, list[str]] = defaultdict(list)
    card_ids = [p.id for p in products if p.kind == "universal_card"]
    if card_ids:
        for card_id, sku in session.execute(
            select(ExchangeCatalogItem.card_product_id, Product.sku)
            .join(Product, Product.id == ExchangeCatalogItem.code_product_id)
            .where(ExchangeCatalogItem.card_product_id.in_(card_ids))
            .order_by(Product.sku)
        ):
            catalog[card_id].append(sku)
    return [
        ProductOut(
            **product_ref(p).model_dump(),
            cost_price=_money(p.cost_price_minor, p.currency),
            currency=p.currency,
            brand=p.brand,
            validity_days=p.validity_days,
            exchange_catalog=catalog[p.id],
        )
        for p in products
    ]


def program_detail(
    session: Session, code: str, *, sandbox: bool = False, now: datetime | None = None
) -> ProgramDetailOut:
    """One program with what it has spent of its budget this month (one more small query); for a
    sandbox key (`sandbox`), what the sandbox's redemptions spent: the real figures stay unseen."""
    now = now or datetime.now(UTC)
    programs = list_programs(session, visible=frozenset({code}), after=None, limit=1)
    if not programs:
        raise not_found(f"program {code}")
    spent = budgets(driver(session), now, program=code, sandbox=sandbox)
    balance = None
    if spent:
        b = spent[0]
        balance = BudgetBalance(
            month=f"{b.month:%Y-%m}",
            budget=Money.of(b.budget_minor, b.currency),
            spent=Money.of(b.spent_minor, b.currency),
            remaining=Money.of(b.remaining_minor, b.currency),
        )
    return ProgramDetailOut(**programs[0].model_dump(), budget_this_month=balance, sandbox=sandbox)
