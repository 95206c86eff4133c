"""Data lifecycle (issue 28): rows whose work is finished are removed after RETENTION_DAYS, by the
housekeeping, in bounded batches. Each domain says what is finished and removes one batch; this
module runs the batches and keeps, for a walk that leaves its rows in place, where it stopped."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg import Connection
from psycopg.rows import class_row
from sqlalchemy import BigInteger, DateTime, String
from sqlalchemy.orm import Mapped, mapped_column

from service.kit.db.base import Base
from service.kit.db.engine import one


class RetentionMark(Base):
    """Where a retention walk over rows it does not delete stopped: the last (time, id) it handled."""

    __tablename__ = "retention_marks"
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    row_id: Mapped[int] = mapped_column(BigInteger)


@dataclass(frozen=True)
class _Mark:
    at: datetime
    row_id: int


def read_mark(db: Connection[Any], name: str) -> tuple[datetime, int]:
    """The walk's mark, locked until the caller's commit (pods running the same walk take turns)."""
    db.execute(
        "INSERT INTO retention_marks (name, at, row_id) VALUES (%(name)s, '1970-01-01 00:00+00', 0)"
        " ON CONFLICT DO NOTHING",
        {"name": name},
    )
    mark = one(
        db.cursor(row_factory=class_row(_Mark))
        .execute("SELECT at, row_id FROM retention_marks WHERE name = %(name)s FOR UPDATE", {"name": name})
        .fetchone()
    )
    return mark.at, mark.row_id


def write_mark(db: Connection[Any], name: str, at: datetime, row_id: int) -> None:
    db.execute(
        "UPDATE retention_marks SET at = %(at)s, row_id = %(row_id)s WHERE name = %(name)s",
        {"at": at, "row_id": row_id, "name": name},
    )


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
