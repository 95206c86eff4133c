"""Quiet hours: a daily local window in which bulk SMS (campaigns, reminders) are not sent.

Kazakh operators pass promotional and notification SMS only in daytime (aggregators cite
09:00-21:00 local; no primary legal text states it), so the window is configured per program as
"HH:MM-HH:MM" in the program's time zone: "21:00-09:00" means nothing from 21:00 until 09:00 the next
morning. Transactional reward SMS ignore it."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

WINDOW = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)-([01]\d|2[0-3]):([0-5]\d)$")
DEFAULT = "21:00-09:00"


@dataclass(frozen=True)
class QuietHours:
    start: time  # local time the window opens (sending stops)
    end: time  # local time it closes (sending resumes)

    @classmethod
    def parse(cls, text: str) -> QuietHours:
        match = WINDOW.match(text)
        if not match:
            raise ValueError(f"quiet hours are written HH:MM-HH:MM, e.g. {DEFAULT}; got {text!r}")
        h1, m1, h2, m2 = (int(g) for g in match.groups())
        if (h1, m1) == (h2, m2):
            raise ValueError("quiet hours must not start and end at the same time")
        return cls(time(h1, m1), time(h2, m2))

    def __str__(self) -> str:
        return f"{self.start:%H:%M}-{self.end:%H:%M}"

    def contains(self, local: time) -> bool:
        if self.start < self.end:  # within one day, e.g. 13:00-14:00
            return self.start <= local < self.end
        return local >= self.start or local < self.end  # across midnight, e.g. 21:00-09:00

    def next_allowed(self, now: datetime, zone: ZoneInfo) -> datetime:
        """`now` itself when it is outside the window, else the moment the window closes; aware, in
        `now`'s zone. Computed on the local wall clock of `zone` (the zone name, never an offset)."""
        local = now.astimezone(zone)
        if not self.contains(local.time().replace(tzinfo=None)):
            return now
        day = local.date()
        if local.time().replace(tzinfo=None) >= self.end and self.start > self.end:
            day += timedelta(days=1)  # the evening part of a window that closes the next morning
        opens = datetime.combine(day, self.end, tzinfo=zone)
        return opens.astimezone(now.tzinfo)


def quiet_hours(text: str | None) -> QuietHours | None:
    """A program's setting: None (or empty) is no quiet hours at all."""
    return QuietHours.parse(text) if text else None
