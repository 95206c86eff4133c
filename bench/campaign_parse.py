"""The campaign file parser over a 1 000 000-line CSV: lines per second and peak RSS.

    PYTHONPATH=. python bench/campaign_parse.py [--lines N] [--separator ';']

Writes a CSV like a marketing export (header, phones in the forms people type, an offer, a ref, a few
bad phones and blank lines) to a temporary folder, then times read_upload over it: the checks before
it returns (encoding, line count) and streaming every line. Needs no database.
"""

from __future__ import annotations

import argparse
import pathlib
import random
import resource
import sys
import tempfile
import time


def write_csv(path: pathlib.Path, lines: int, separator: str) -> None:
    rng = random.Random(42)
    prefixes = ["701", "702", "705", "707", "747", "771", "775", "777", "778"]
    with open(path, "w", encoding="utf-8", newline="") as file:
        file.write(f"phone{separator}offer{separator}ref\r\n")
        for i in range(lines):
            rest = f"{rng.randrange(10**7):07d}"
            prefix = rng.choice(prefixes)
            form = i % 5
            if form == 0:
                phone = f"+7{prefix}{rest}"
            elif form == 1:
                phone = f"8 {prefix} {rest[:3]} {rest[3:5]} {rest[5:]}"
            elif form == 2:
                phone = f"7{prefix}{rest}"  # a lost +
            elif form == 3:
                phone = f"+7 ({prefix}) {rest[:3]}-{rest[3:5]}-{rest[5:]}"
            else:
                phone = f"{prefix}{rest}"
            if i % 1000 == 999:
                phone = "7.70123E+10"
            offer = f"OFFER-{i % 13}" if i % 3 else ""
            file.write(f"{phone}{separator}{offer}{separator}ext-{i}\r\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--separator", default=";")
    args = parser.parse_args()

    from service.campaigns.upload import Line, read_upload

    with tempfile.TemporaryDirectory(prefix="campaign-parse-") as folder:
        path = pathlib.Path(folder) / "recipients.csv"
        started = time.perf_counter()
        write_csv(path, args.lines, args.separator)
        size = path.stat().st_size
        print(f"wrote {args.lines} lines, {size / 1e6:.1f} MB in {time.perf_counter() - started:.1f} s")
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        started = time.perf_counter()
        detected, lines = read_upload(path, filename="recipients.csv", content_type="text/csv")
        checked = time.perf_counter() - started
        good = bad = 0
        for line in lines:
            if isinstance(line, Line):
                good += 1
            else:
                bad += 1
        elapsed = time.perf_counter() - started
        rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(f"detected {detected}")
    print(f"lines {good + bad}: {good} good, {bad} errors")
    print(f"read_upload checks (before it returns): {checked:.2f} s")
    print(f"total {elapsed:.2f} s: {(good + bad) / elapsed:,.0f} lines/s")
    print(f"peak RSS {rss_after / 1024:.1f} MiB (before parsing {rss_before / 1024:.1f} MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
