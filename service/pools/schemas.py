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
    """One line of a JSON upload. Its content is checked line by line, like a CSV line: a line without
    a code, with an empty code or one longer than 128 characters, a PIN longer than 32 or an expiry
    that is neither an RFC 3339 timestamp nor a date is counted as rejected, with its reason (201);
    only a body of another shape (a field that is not a string, an item that is neither a string nor
    an object) is refused whole with 422."""

    code: str | None = Field(None, description="The code (1-128 characters, else the line is rejected)")
    pin: str | None = Field(None, description="Its PIN, if any (at most 32 characters, else rejected)")
    expires_at: str | None = Field(
        None, description="RFC 3339 timestamp, or a YYYY-MM-DD date (valid through that day, Asia/Almaty)"
    )


class CodeUploadJson(BaseModel):
    codes: list[str | CodeItem] = Field(description="Each item a code string or an object")


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
