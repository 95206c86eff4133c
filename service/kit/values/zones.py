"""Time zones from the `tzdata` wheel, never from the host.

Kazakhstan moved to UTC+5 on 1 March 2024 (Almaty was UTC+6), which only tz database 2024a and later
know. `zoneinfo` reads the host's database first and a container image may carry a stale one or none,
so month boundaries would move with the machine. The wheel is pinned in the lock file."""

from __future__ import annotations

from functools import lru_cache
from importlib import resources
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import tzdata


@lru_cache(maxsize=64)
def zone(name: str) -> ZoneInfo:
    """The zone `name` (e.g. "Asia/Almaty") as the `tzdata` wheel defines it."""
    if not name or name.startswith("/") or ".." in name.split("/"):
        raise ZoneInfoNotFoundError(name)
    try:
        with resources.files("tzdata.zoneinfo").joinpath(name).open("rb") as data:
            return ZoneInfo.from_file(data, key=name)
    except (FileNotFoundError, IsADirectoryError, ValueError, UnicodeError):
        raise ZoneInfoNotFoundError(name) from None


def tzdata_version() -> str:
    """The IANA release of the wheel's database, e.g. "2025b" (for /healthz and the docs)."""
    return tzdata.IANA_VERSION
