"""Time zones and quiet hours: month boundaries and sending windows on the program's wall clock, from
the tzdata wheel whatever the host's database says."""

from __future__ import annotations

from datetime import UTC, datetime, time
from zoneinfo import ZoneInfoNotFoundError

import pytest

from service.kit.values.quiet_hours import QuietHours, quiet_hours
from service.kit.values.zones import tzdata_version, zone

ALMATY = zone("Asia/Almaty")


def test_almaty_is_utc_plus_5_after_1_march_2024():
    assert datetime(2026, 12, 6, 12, 0, tzinfo=UTC).astimezone(ALMATY).utcoffset().total_seconds() == 5 * 3600
    assert datetime(2024, 3, 1, 12, 0, tzinfo=UTC).astimezone(ALMATY).utcoffset().total_seconds() == 5 * 3600


def test_almaty_was_utc_plus_6_before_the_change():
    assert datetime(2024, 2, 1, 12, 0, tzinfo=UTC).astimezone(ALMATY).utcoffset().total_seconds() == 6 * 3600


def test_the_month_starts_at_local_midnight_in_utc_plus_5():
    start = datetime(2026, 2, 1, tzinfo=ALMATY)
    assert start.astimezone(UTC) == datetime(2026, 1, 31, 19, 0, tzinfo=UTC)


def test_zones_come_from_the_wheel_not_a_stale_host_database(tmp_path):
    import shutil
    import zoneinfo
    from importlib import resources

    # A host whose tz database predates 2024a: its Asia/Almaty is still UTC+6 (Asia/Dhaka's rules).
    stale = tmp_path / "zoneinfo"
    (stale / "Asia").mkdir(parents=True)
    with resources.files("tzdata.zoneinfo").joinpath("Asia/Dhaka").open("rb") as dhaka:
        (stale / "Asia" / "Almaty").write_bytes(dhaka.read())
    zoneinfo.reset_tzpath(to=[str(stale)])
    zone.cache_clear()
    try:
        moment = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
        assert (
            moment.astimezone(zoneinfo.ZoneInfo.no_cache("Asia/Almaty")).utcoffset().total_seconds()
            == 6 * 3600
        )
        assert moment.astimezone(zone("Asia/Almaty")).utcoffset().total_seconds() == 5 * 3600
    finally:
        zoneinfo.reset_tzpath()
        zone.cache_clear()
        shutil.rmtree(stale)
    assert tzdata_version() >= "2024a"


@pytest.mark.parametrize("name", ["", "Nowhere/City", "../../etc/passwd", "/etc/localtime", "Asia"])
def test_an_unknown_or_hostile_zone_name_is_refused(name):
    with pytest.raises(ZoneInfoNotFoundError):
        zone(name)


def test_quiet_hours_parse_and_print():
    window = QuietHours.parse("21:00-09:00")
    assert (window.start, window.end) == (time(21, 0), time(9, 0))
    assert str(window) == "21:00-09:00"
    assert quiet_hours(None) is None and quiet_hours("") is None


@pytest.mark.parametrize("text", ["21-09", "25:00-09:00", "21:00-21:00", "21:00 - 09:00", "9:00-21:00"])
def test_quiet_hours_refuse_a_malformed_window(text):
    with pytest.raises(ValueError):
        QuietHours.parse(text)


def local(day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2026, 12, day, hour, minute, tzinfo=ALMATY)


def test_outside_the_window_a_bulk_sms_goes_now():
    now = local(6, 12, 30).astimezone(UTC)
    assert QuietHours.parse("21:00-09:00").next_allowed(now, ALMATY) == now


def test_in_the_evening_a_bulk_sms_waits_for_nine_the_next_morning():
    now = local(6, 22, 15).astimezone(UTC)
    assert QuietHours.parse("21:00-09:00").next_allowed(now, ALMATY) == local(7, 9)


def test_after_midnight_a_bulk_sms_waits_for_nine_the_same_morning():
    now = local(7, 3, 0).astimezone(UTC)
    assert QuietHours.parse("21:00-09:00").next_allowed(now, ALMATY) == local(7, 9)


def test_the_window_opens_at_its_start_and_closes_at_its_end():
    window = QuietHours.parse("21:00-09:00")
    assert window.next_allowed(local(6, 21, 0), ALMATY) == local(7, 9)
    assert window.next_allowed(local(7, 9, 0), ALMATY) == local(7, 9, 0)
    assert window.next_allowed(local(6, 20, 59), ALMATY) == local(6, 20, 59)


def test_a_window_within_one_day():
    window = QuietHours.parse("13:00-14:00")
    assert window.next_allowed(local(6, 13, 30), ALMATY) == local(6, 14)
    assert window.next_allowed(local(6, 14, 30), ALMATY) == local(6, 14, 30)
    assert window.next_allowed(local(6, 12, 59), ALMATY) == local(6, 12, 59)


def test_the_window_is_on_the_program_wall_clock_not_utc():
    # 16:30 UTC is 21:30 in Almaty (UTC+5): quiet there, though early evening in UTC.
    now = datetime(2026, 12, 6, 16, 30, tzinfo=UTC)
    assert QuietHours.parse("21:00-09:00").next_allowed(now, ALMATY) == datetime(
        2026, 12, 7, 4, 0, tzinfo=UTC
    )
