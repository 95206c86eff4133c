"""Data lifecycle (issue 28): rows whose work is finished are removed after RETENTION_DAYS, by the
housekeeping, in bounded batches. Each domain says what is finished and removes one batch; this
module runs the batches and keeps, for a walk that leaves its rows in place, where it stopped."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, DateTime, String
from sqlalchemy.orm import Mapped, mapped_column

from service.kit.db.base import Base


class RetentionMark(Base):
    """Where a retention walk over rows it does not delete stopped: the last (time, id) it handled."""

    __tablename__ = "retention_marks"
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    row_id: Mapped[int] = mapped_column(BigInteger)


def read_mark(db: Any, name: str) -> tuple[datetime, int]:
    """The walk's mark, locked until the caller's commit (pods running the same walk take turns)."""
    db.execute(
        "INSERT INTO retention_marks (name, at, row_id) VALUES (%s, '1970-01-01 00:00+00', 0)"
        " ON CONFLICT DO NOTHING",
        (name,),
    )
    row = db.execute("SELECT at, row_id FROM retention_marks WHERE name = %s FOR UPDATE", (name,)).fetchone()
    return row[0], row[1]


def write_mark(db: Any, name: str, at: datetime, row_id: int) -> None:
    db.execute("UPDATE retention_marks SET at = %s, row_id = %s WHERE name = %s", (at, row_id, name))


def in_batches(step: Callable[[], int], *, batch: int, batches: int) -> int:
    """Runs `step` (one batch of at most `batch` rows, in a transaction of its own) until a batch is
    not full or `batches` ran; returns the rows handled."""
    total = 0
    for _ in range(batches):
        handled = step()
        total += handled
        if handled < batch:
            break
    return total
