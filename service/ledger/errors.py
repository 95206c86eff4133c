"""Refusals of finance: month close and its documents."""

from __future__ import annotations

from service.kit.http.errors import Problem


class PeriodNotEnded(Problem):
    status, code, title = 409, "period_not_ended", "Period not ended"


class PeriodNotClosed(Problem):
    status, code, title = 404, "period_not_closed", "Period not closed"
