"""What a catalog file may say. Money is written as quoted decimal strings ("5000.00"): YAML would
read an unquoted 5000.00 as a float, and floats never come near money here."""

from __future__ import annotations

import string
from datetime import date, datetime
from typing import Literal
from zoneinfo import ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from service.kit.values.money import EXPONENTS, MoneyError, to_minor
from service.kit.values.quiet_hours import DEFAULT as QUIET_HOURS_DEFAULT
from service.kit.values.quiet_hours import QuietHours
from service.kit.values.zones import zone

Slug = str
SLUG = r"^[a-z0-9][a-z0-9\-_]{0,63}$"
SKU = r"^[A-Z0-9][A-Z0-9\-_]{0,63}$"
LOCALES = ("ru", "kk", "en")
ALPHANUMERIC_TON = 5
NUMERIC_SENDER_TONS = {1, 2, 3, 6}
SENDER_NPIS = {0, 1, 3, 4, 6, 8, 9, 10, 14, 18}  # SMPP 3.4 section 5.2.6


def sender_address(sender: str, ton: int | None = None, npi: int | None = None) -> tuple[int, int]:
    """The TON/NPI of an SMS sender: given ones win; else an alphanumeric sender is TON 5 (NPI 0), a
    short code (up to 8 digits) TON 3 network specific (NPI 0), a longer number TON 1 international
    (NPI 1, E.164)."""
    if not sender.isdigit():
        default = (ALPHANUMERIC_TON, 0)
    elif len(sender) <= 8:
        default = (3, 0)
    else:
        default = (1, 1)
    return (default[0] if ton is None else ton, default[1] if npi is None else npi)


TEMPLATE_FIELDS = {
    "program",
    "offer",
    "code",
    "pin",
    "card_number",
    "nominal",
    "expires",
    "validity",  # "Действует до 31.12.2026" / "Срок действия не ограничен", per locale
    "brand",
    "partner",
    "link",  # the reward page, PUBLIC_URL/r/<token>
}


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _money(value: object) -> str:
    if isinstance(value, float):
        raise ValueError(
            'write money as a quoted decimal string, e.g. "5000.00" (YAML reads 5000.00 as a float)'
        )
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise ValueError('write money as a quoted decimal string, e.g. "5000.00"')
    return str(value)


class LocalizedText(Strict):
    """A text of the holders' pages in ru/kk/en; a missing language shows another one (ru, en, kk)."""

    ru: str | None = Field(default=None, min_length=1, max_length=2000)
    kk: str | None = Field(default=None, min_length=1, max_length=2000)
    en: str | None = Field(default=None, min_length=1, max_length=2000)

    @model_validator(mode="after")
    def _some(self) -> LocalizedText:
        if not (self.ru or self.kk or self.en):
            raise ValueError("give the text in at least one of ru, kk, en")
        return self


class LocationSpec(Strict):
    name: str = Field(min_length=1, max_length=120)
    address: str = Field(min_length=1, max_length=300)


LOGO_SUFFIXES = (".png", ".svg")
BARCODES = ("qr", "code128", "ean13")


class PageFields(Strict):
    """What the holders' reward page shows of a partner or a product; every field optional."""

    title: LocalizedText | None = None
    description: LocalizedText | None = None
    instructions: LocalizedText | None = Field(default=None, description="how to use it")
    terms: LocalizedText | None = None
    logo: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9_\-./]{1,200}$",
        description="a PNG or SVG file, its path relative to the catalog file, inside the catalog folder",
    )

    @field_validator("logo")
    @classmethod
    def _logo(cls, v: str | None) -> str | None:
        if v is not None and not v.lower().endswith(LOGO_SUFFIXES):
            raise ValueError("a logo is a .png or .svg file")
        return v


class PartnerSpec(PageFields):
    code: Slug = Field(pattern=SLUG)
    name: str = Field(min_length=1)
    website: str | None = Field(default=None, pattern=r"^https?://[^\s]+$", max_length=300)
    locations: tuple[LocationSpec, ...] = Field(default=(), max_length=50)


class ProductSpec(PageFields):
    sku: str = Field(pattern=SKU)
    kind: Literal["code", "universal_card"]
    name: str = Field(min_length=1)
    currency: str = "KZT"
    partner: Slug | None = None
    face_value: str | None = None
    cost_price: str | None = None
    brand: str | None = None
    validity_days: int | None = Field(default=None, gt=0, le=3650)
    exchange_catalog: tuple[str, ...] = ()
    low_stock_threshold: int | None = Field(default=None, ge=0)
    vat_schedule: Slug | None = Field(default=None, description="A schedule of vat_schedules; none: no VAT")
    vat_point: Literal["sale", "redemption"] = Field(
        default="sale",
        description="When VAT falls due: when we issue the reward, or when it is redeemed/exchanged",
    )
    barcode: Literal["qr", "code128", "ean13"] | None = Field(
        default=None,
        description="what the partner's tills scan, shown beside the code on the reward page (a code"
        " product); default qr",
    )

    _money_fields = field_validator("face_value", "cost_price", mode="before")(
        lambda v: None if v is None else _money(v)
    )

    @field_validator("currency")
    @classmethod
    def _known_currency(cls, v: str) -> str:
        if v not in EXPONENTS:
            raise ValueError(f"unsupported currency {v!r}")
        return v

    @model_validator(mode="after")
    def _kind_rules(self) -> ProductSpec:
        for name in ("face_value", "cost_price"):
            value = getattr(self, name)
            if value is not None:
                try:
                    to_minor(value, self.currency)
                except MoneyError as exc:
                    raise ValueError(f"{name}: {exc}") from None
        if self.kind == "code":
            missing = [n for n in ("partner", "face_value", "cost_price") if getattr(self, n) is None]
            if missing:
                raise ValueError(f"a code product needs {', '.join(missing)}")
            if self.exchange_catalog:
                raise ValueError("only a universal_card has an exchange_catalog")
        elif self.barcode is not None:
            raise ValueError("a universal_card has no barcode: its certificates do")
        else:
            if self.validity_days is None:
                raise ValueError("a universal_card needs validity_days")
            if not self.exchange_catalog:
                raise ValueError("a universal_card needs a non-empty exchange_catalog")
            if self.partner is not None or self.face_value is not None:
                raise ValueError("a universal_card is ours: no partner, and its nominal comes from the offer")
        return self


class TemplateSet(Strict):
    ru: str = Field(min_length=1)
    kk: str | None = None
    en: str | None = None

    @model_validator(mode="after")
    def _placeholders(self) -> TemplateSet:
        for locale in LOCALES:
            text = getattr(self, locale)
            if text is None:
                continue
            try:
                names = {name for _, name, _, _ in string.Formatter().parse(text) if name}
            except ValueError as exc:
                raise ValueError(f"{locale}: broken template: {exc}") from None
            unknown = names - TEMPLATE_FIELDS
            if unknown:
                raise ValueError(
                    f"{locale}: unknown placeholders {sorted(unknown)}; allowed: {sorted(TEMPLATE_FIELDS)}"
                )
        return self


class Templates(Strict):
    code: TemplateSet
    universal_card: TemplateSet
    # The expiry reminder (programs with expiry_reminder): {brand} {nominal} (the balance) {expires}
    # {link} {program}; without it, the service's own text.
    expiry_reminder: TemplateSet | None = None


class TariffSpec(Strict):
    code: Slug = Field(pattern=SLUG)
    name: str = Field(min_length=1)


class ProgramSpec(Strict):
    code: Slug = Field(pattern=SLUG)
    name: str = Field(min_length=1)
    currency: str = "KZT"
    timezone: str = "Asia/Almaty"
    sms_sender: str = Field(
        pattern=r"^[A-Za-z0-9 .\-]{1,11}$",
        description="alphanumeric sender id (11 chars max), or a numeric short code or number",
    )
    sms_sender_ton: int | None = Field(
        default=None,
        description="the sender's type of number in submit_sm: 5 alphanumeric; a numeric short code 3"
        " (network specific) or 1 (international), or 2 national, 6 abbreviated. Default: 5 for an"
        " alphanumeric sender, 3 for up to 8 digits, 1 for a longer number",
    )
    sms_sender_npi: int | None = Field(
        default=None,
        description="the sender's numbering plan: 0 unknown, 1 ISDN/E.164, ... Default: 1 with TON 1, else 0",
    )
    monthly_budget: str | None = None
    webhook_url: str | None = Field(default=None, pattern=r"^https?://")
    sms_deadline_hours: int | None = Field(
        default=None,
        ge=1,
        le=168,
        description="how long a reward SMS is retried before the redemption fails;"
        " default SMS_DEADLINE_HOURS",
    )
    quiet_hours: str | None = Field(
        default=QUIET_HOURS_DEFAULT,
        description="local window HH:MM-HH:MM in which bulk SMS (campaigns, reminders) wait;"
        " null: none. Transactional reward SMS ignore it",
    )
    expiry_reminder: bool = Field(
        default=False,
        description="one SMS with the reward page's link 30 days before a card with a balance expires,"
        " outside quiet hours",
    )
    campaign_approval_threshold: str | None = Field(
        default=None,
        description="a campaign worth more than this (a decimal amount in the program's currency) needs"
        " a second person with the approver role; null: every campaign does",
    )
    templates: Templates
    tariffs: tuple[TariffSpec, ...] = Field(min_length=1)

    _budget = field_validator("monthly_budget", "campaign_approval_threshold", mode="before")(
        lambda v: None if v is None else _money(v)
    )

    @field_validator("timezone")
    @classmethod
    def _zone(cls, v: str) -> str:
        try:
            zone(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {v!r}") from None
        return v

    @field_validator("quiet_hours")
    @classmethod
    def _quiet_hours(cls, v: str | None) -> str | None:
        if v is not None:
            QuietHours.parse(v)  # its ValueError says how to write it
        return v

    @model_validator(mode="after")
    def _checks(self) -> ProgramSpec:
        numeric = self.sms_sender.isdigit()
        if self.sms_sender_ton is not None:
            allowed = NUMERIC_SENDER_TONS if numeric else {ALPHANUMERIC_TON}
            if self.sms_sender_ton not in allowed:
                raise ValueError(
                    f"sms_sender_ton {self.sms_sender_ton} does not fit the sender {self.sms_sender!r}:"
                    + (
                        " a numeric sender is TON 3 (network specific, a short code), 1 (international),"
                        " 2 (national) or 6 (abbreviated), never 5"
                        if numeric
                        else " an alphanumeric sender is TON 5"
                    )
                )
        if self.sms_sender_npi is not None and self.sms_sender_npi not in SENDER_NPIS:
            raise ValueError(f"sms_sender_npi must be one of {sorted(SENDER_NPIS)}")
        if self.currency not in EXPONENTS:
            raise ValueError(f"unsupported currency {self.currency!r}")
        for amount in (self.monthly_budget, self.campaign_approval_threshold):
            if amount is not None:
                to_minor(amount, self.currency)
        codes = [t.code for t in self.tariffs]
        if len(codes) != len(set(codes)):
            raise ValueError("tariff codes repeat within the program")
        return self


class PriceSpec(Strict):
    tariffs: tuple[Slug, ...] = Field(min_length=1)
    nominal: str
    points: int = Field(gt=0)

    _nominal = field_validator("nominal", mode="before")(_money)


class LimitsSpec(Strict):
    per_subscriber_per_day: int | None = Field(default=None, gt=0)
    per_subscriber_per_month: int | None = Field(default=None, gt=0)


class OfferSpec(Strict):
    code: Slug = Field(pattern=SLUG)
    program: Slug
    product: str
    name: str = Field(min_length=1)
    active_from: datetime | None = None
    active_to: datetime | None = None
    limits: LimitsSpec = LimitsSpec()
    prices: tuple[PriceSpec, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _window(self) -> OfferSpec:
        for name in ("active_from", "active_to"):
            value = getattr(self, name)
            if value is not None and value.tzinfo is None:
                raise ValueError(f"{name} needs a time zone offset, e.g. 2026-01-01T00:00:00+05:00")
        if self.active_from and self.active_to and self.active_from >= self.active_to:
            raise ValueError("active_from must be before active_to")
        return self


class VatRateSpec(Strict):
    effective_from: date
    percent: str = Field(pattern=r"^\d{1,2}(\.\d{1,2})?$", description='e.g. "16" or "12.5"')

    _percent = field_validator("percent", mode="before")(_money)


class VatScheduleSpec(Strict):
    code: Slug = Field(pattern=SLUG)
    rates: tuple[VatRateSpec, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _ordered(self) -> VatScheduleSpec:
        dates = [r.effective_from for r in self.rates]
        if dates != sorted(dates) or len(set(dates)) != len(dates):
            raise ValueError("rates must be in increasing effective_from order, one per date")
        return self


class CatalogSpec(Strict):
    vat_schedules: tuple[VatScheduleSpec, ...] = ()
    partners: tuple[PartnerSpec, ...] = ()
    products: tuple[ProductSpec, ...] = ()
    programs: tuple[ProgramSpec, ...] = ()
    offers: tuple[OfferSpec, ...] = ()
