from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal
from uuid import UUID

from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from pydantic_core import PydanticCustomError

from catalog.model import SLUG
from service.kit.values.money import Money
from service.kit.values.phones import (
    MSISDN_DESCRIPTION,
    MSISDN_MAX,
    MSISDN_MIN,
    MSISDN_PATTERN,
    normalize_msisdn,
)
from service.kit.values.timefmt import Rfc3339

CampaignStatus = Literal["draft", "submitted", "approved", "running", "paused", "done", "cancelled"]
AMOUNT = r"^\d{1,15}(\.\d{1,2})?$"


class CampaignIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    program: str = Field(pattern=SLUG, examples=["mobile-bonus"])
    tariff: str = Field(pattern=SLUG, description="The tariff whose prices the lines get", examples=["basic"])
    offer: str = Field(
        pattern=SLUG, description="The lines' offer when a line names none", examples=["cinema-2000"]
    )
    name: str = Field(min_length=1, max_length=200, examples=["New Year 2027"])
    locale: Literal["ru", "kk", "en"] = Field(
        "kk", description="The SMS language of the lines", examples=["kk"]
    )
    budget_cap: str | None = Field(
        None,
        pattern=AMOUNT,
        description="The most the campaign may be worth, in the program's currency",
        examples=["500000.00"],
    )
    starts_at: Rfc3339 | None = Field(
        None,
        description="Not before this time (RFC 3339); default: once approved",
        examples=["2026-12-31T04:00:00Z"],
    )
    rate_per_second: int | None = Field(
        None,
        ge=1,
        le=10_000,
        description="Lines per second; default: as fast as the database allows",
        examples=[50],
    )


class CampaignChange(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(None, min_length=1, max_length=200, examples=["New Year 2027, second wave"])
    budget_cap: str | None = Field(None, pattern=AMOUNT, examples=["500000.00"])
    starts_at: Rfc3339 | None = Field(None, examples=["2026-12-31T04:00:00Z"])
    rate_per_second: int | None = Field(None, ge=1, le=10_000, examples=[50])


class Decision(BaseModel):
    model_config = ConfigDict(extra="forbid")

    file_sha256: str | None = Field(
        None,
        pattern=r"^[0-9a-f]{64}$",
        description="The submitted file's hash the approver saw",
        examples=["9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"],
    )


class Rejection(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field(min_length=1, max_length=1000, examples=["the file targets the wrong tariff"])


class FileOut(BaseModel):
    name: str | None
    sha256: str | None
    format: str | None
    encoding: str | None
    separator: str | None


class ProblemOut(BaseModel):
    line: int | None = Field(description="The file's line; null: the campaign as a whole")
    code: str
    message: str


class ReportOut(BaseModel):
    problems: int
    first: list[ProblemOut] = Field(description="The first problems; the whole report is at report_url")
    report_url: str


class LinesOut(BaseModel):
    total: int
    pending: int
    done: int
    failed: int
    cancelled: int
    without_sms: int = Field(description="Granted without an SMS: the subscriber opted out of bulk SMS")


class SubmissionOut(BaseModel):
    needs_approval: bool
    submitted_by: str
    submitted_at: datetime
    file_sha256: str | None
    lines: int
    total: Money


class DecisionOut(BaseModel):
    by: str
    at: datetime
    reason: str | None = None


class CampaignOut(BaseModel):
    id: UUID
    program: str
    tariff: str
    offer: str
    name: str
    locale: str
    status: CampaignStatus
    rate_per_second: int | None
    starts_at: datetime | None
    budget_cap: Money | None
    total: Money = Field(description="The value of the lines that can run")
    spent: Money = Field(description="The value of the lines that became redemptions")
    reserved: Money = Field(description="Reserved against the program's budget at approval")
    eta_seconds: int | None
    file: FileOut | None
    report: ReportOut
    lines: LinesOut
    submission: SubmissionOut | None
    approval: DecisionOut | None
    rejection: DecisionOut | None
    created_by: str
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


def _e164(value: str) -> str:
    try:
        return normalize_msisdn(value)
    except ValueError as exc:  # of the published form, but not a mobile number: invalid_msisdn
        raise PydanticCustomError("invalid_msisdn", str(exc)) from None


Msisdn = Annotated[
    str,
    Field(
        min_length=MSISDN_MIN, max_length=MSISDN_MAX, pattern=MSISDN_PATTERN, description=MSISDN_DESCRIPTION
    ),
    AfterValidator(_e164),
]


class OptOutsIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    msisdns: list[Msisdn] = Field(min_length=1, max_length=10_000, examples=[["87011234567", "+77071234567"]])


class OptOutsOut(BaseModel):
    changed: int
