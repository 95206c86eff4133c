"""A campaign: many redemptions from one file, validated as a whole, approved by a second person, run
at a set rate through the bulk SMS channel. Its lines are kept beside it; each line that runs becomes an
ordinary redemption (redemptions.campaign_id) with the external id `campaign:<id>:<ref>`."""

from __future__ import annotations

import uuid
from datetime import date, datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import Mapped, mapped_column

from service.kit.db.base import Base

STATUSES = ("draft", "submitted", "approved", "running", "paused", "done", "cancelled")
LINE_STATUSES = ("pending", "done", "failed", "cancelled")


class Campaign(Base):
    __tablename__ = "campaigns"
    __table_args__ = (
        CheckConstraint(f"status IN {STATUSES!r}", name="status"),
        CheckConstraint("rate_per_second IS NULL OR rate_per_second > 0", name="rate"),
        Index("ix_campaigns_program_created", "program_id", "created_at"),
        Index("ix_campaigns_running", "status", postgresql_where=text("status IN ('approved', 'running')")),
    )
    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    program_id: Mapped[int] = mapped_column(ForeignKey("programs.id"))
    tariff_id: Mapped[int] = mapped_column(ForeignKey("tariffs.id"))
    offer_id: Mapped[int] = mapped_column(ForeignKey("offers.id"))  # the lines' default offer
    name: Mapped[str] = mapped_column(Text)
    currency: Mapped[str] = mapped_column(String(3))
    locale: Mapped[str] = mapped_column(String(2), server_default="kk")  # of the lines' SMS
    budget_cap_minor: Mapped[int | None] = mapped_column(BigInteger)
    starts_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    rate_per_second: Mapped[int | None] = mapped_column(Integer)  # None: as fast as the database allows
    status: Mapped[str] = mapped_column(String(16), server_default="draft")
    # The uploaded file and what its validation found (campaign_problems holds the report's lines).
    file_name: Mapped[str | None] = mapped_column(Text)
    file_sha256: Mapped[bytes | None] = mapped_column(LargeBinary)
    file_format: Mapped[str | None] = mapped_column(String(8))
    file_encoding: Mapped[str | None] = mapped_column(String(16))
    file_separator: Mapped[str | None] = mapped_column(String(1))
    line_count: Mapped[int] = mapped_column(Integer, server_default="0")
    problem_count: Mapped[int] = mapped_column(Integer, server_default="0")
    total_minor: Mapped[int] = mapped_column(BigInteger, server_default="0")
    validated_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Maker-checker: what was submitted is frozen here; the approver sees and approves exactly that.
    needs_approval: Mapped[bool | None] = mapped_column(Boolean)
    submitted_by: Mapped[str | None] = mapped_column(Text)
    submitted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    submitted_sha256: Mapped[bytes | None] = mapped_column(LargeBinary)
    submitted_lines: Mapped[int | None] = mapped_column(Integer)
    submitted_total_minor: Mapped[int | None] = mapped_column(BigInteger)
    approved_by: Mapped[str | None] = mapped_column(Text)
    approved_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    rejected_by: Mapped[str | None] = mapped_column(Text)
    rejected_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    rejection_reason: Mapped[str | None] = mapped_column(Text)
    # The value reserved against the program's monthly budget at approval, in budget_month; what the
    # lines did not use goes back when the campaign ends.
    reserved_minor: Mapped[int] = mapped_column(BigInteger, server_default="0")
    budget_month: Mapped[date | None] = mapped_column(Date)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # The rate's pacing, shared by every worker that runs the campaign (GCRA): lines may be taken
    # while this is at most a second ahead of now; each line taken moves it 1/rate seconds on.
    paced_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_by: Mapped[str] = mapped_column(Text)
    api_key_id: Mapped[int | None] = mapped_column(ForeignKey("api_keys.id"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class CampaignLine(Base):
    """One line of the uploaded file that passed its own checks; `status` says whether it ran."""

    __tablename__ = "campaign_lines"
    __table_args__ = (
        CheckConstraint(f"status IN {LINE_STATUSES!r}", name="status"),
        # The runner's walk: the next pending lines in file order.
        Index(
            "ix_campaign_lines_pending", "campaign_id", "line_no", postgresql_where=text("status = 'pending'")
        ),
        Index("ix_campaign_lines_ref", "campaign_id", "ref"),
    )
    campaign_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("campaigns.id", ondelete="CASCADE"), primary_key=True
    )
    line_no: Mapped[int] = mapped_column(Integer, primary_key=True)
    ref: Mapped[str] = mapped_column(String(64))
    msisdn: Mapped[str] = mapped_column(String(16))
    offer_code: Mapped[str | None] = mapped_column(String(64))  # None: the campaign's default offer
    offer_id: Mapped[int | None] = mapped_column(Integer)  # resolved by validation
    nominal_minor: Mapped[int | None] = mapped_column(BigInteger)
    status: Mapped[str] = mapped_column(String(16), server_default="pending")
    redemption_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    error_code: Mapped[str | None] = mapped_column(String(64))
    done_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class CampaignProblem(Base):
    """A line of the validation report: a line of the file (line_no) or the campaign as a whole (None)."""

    __tablename__ = "campaign_problems"
    __table_args__ = (Index("ix_campaign_problems_campaign", "campaign_id", "line_no"),)
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    campaign_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("campaigns.id", ondelete="CASCADE")
    )
    line_no: Mapped[int | None] = mapped_column(Integer)
    code: Mapped[str] = mapped_column(String(64))
    message: Mapped[str] = mapped_column(Text)


class CampaignMove(Base):
    """The campaign's history: every change of state, who made it, and why."""

    __tablename__ = "campaign_moves"
    __table_args__ = (Index("ix_campaign_moves_campaign", "campaign_id", "id"),)
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    campaign_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("campaigns.id", ondelete="CASCADE")
    )
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    actor: Mapped[str] = mapped_column(Text)
    action: Mapped[str] = mapped_column(String(32))
    from_status: Mapped[str | None] = mapped_column(String(16))
    to_status: Mapped[str | None] = mapped_column(String(16))
    details: Mapped[dict] = mapped_column(JSONB, server_default="{}")


class BulkOptOut(Base):
    """A subscriber who asked for no bulk SMS from a program: campaign grants still reach them, silently."""

    __tablename__ = "bulk_opt_outs"
    program_id: Mapped[int] = mapped_column(ForeignKey("programs.id"), primary_key=True)
    msisdn: Mapped[str] = mapped_column(String(16), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
