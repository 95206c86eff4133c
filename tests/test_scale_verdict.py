"""bench/scale.py's last line: its exact shape, `ok` only when the ratio kept 0.9 of itself and the
lookup's p99 and the take grew at most 10 % (nothing is timed here)."""

from __future__ import annotations

import math

import pytest

from bench.scale import count_label, verdict


def test_the_line_and_ok_at_the_limits() -> None:
    line, ok = verdict(5_012_345, 0.9, 1.1, 1.1)
    assert ok
    assert line == (
        "scale 5012345 rows: ratio after/before 0.90; lookup p99 after/before 1.10;"
        " take after 1M takes/fresh 1.10; ok"
    )


@pytest.mark.parametrize(
    ("ratio", "lookup", "take"),
    [(0.899, 1.0, 1.0), (1.0, 1.101, 1.0), (1.0, 1.0, 1.101), (math.nan, 1.0, 1.0), (1.0, 1.0, math.nan)],
)
def test_fail_past_any_limit_or_without_a_figure(ratio: float, lookup: float, take: float) -> None:
    line, ok = verdict(13_000_000, ratio, lookup, take)
    assert not ok
    assert line.endswith("; FAIL")
    assert line.startswith("scale 13000000 rows: ratio after/before ")


def test_the_takes_are_named_as_counted() -> None:
    assert verdict(1, 1.0, 1.0, 1.0, takes=250_000)[0].endswith("take after 250k takes/fresh 1.00; ok")
    assert [count_label(n) for n in (1_000_000, 250_000, 1500, 999)] == ["1M", "250k", "1500", "999"]
