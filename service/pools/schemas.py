from __future__ import annotations

from pydantic import BaseModel, Field


class RejectedLine(BaseModel):
    line: int
    reason: str


class CodeUploadResult(BaseModel):
    upload_id: int
    sku: str
    lines: int = Field(description="Code lines read (a header line is not counted)")
    accepted: int
    duplicates: int = Field(description="Lines whose code is already in the pool or earlier in this file")
    rejected: int
    rejected_lines: list[RejectedLine]
    duplicate_lines: list[int]
    truncated: bool = Field(
        description="True when more than 1000 rejected or duplicate lines exist; counts stay exact"
    )


class CodeItem(BaseModel):
    code: str = Field(min_length=1, max_length=128)
    pin: str | None = Field(None, max_length=32)
    expires_at: str | None = Field(
        None, description="RFC 3339 timestamp, or a YYYY-MM-DD date (valid through that day, Asia/Almaty)"
    )


class CodeUploadJson(BaseModel):
    codes: list[CodeItem]


class StockItem(BaseModel):
    sku: str
    partner: str | None
    available: int
    reserved: int
    issued: int
    voided: int
    expired: int = Field(description="Still in the pool but past their expiry: never issued")
    expiring_soon: int
    low_stock: bool


class StockOut(BaseModel):
    items: list[StockItem]
