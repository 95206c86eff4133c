"""What tracing costs the redemption path: bench/redeem.py with tracing off and on, alternately.

Off means OTEL_EXPORTER_OTLP_ENDPOINT unset (nothing installed); on, the API exports every request's
spans (server span, its SQL statements, Redis) by OTLP/HTTP to a sink on loopback that decodes
nothing and answers 200, so the figure is the service's own cost, not a collector's. The runs
alternate (off, on, off, on, ...) because this machine drifts by a third within minutes; compare
the pairs.

    .venv/bin/python bench/tracing.py                 # 2 pairs, 16 clients, 15 s each
    .venv/bin/python bench/tracing.py --pairs 3 --seconds 20
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


class Sink:
    """An OTLP/HTTP endpoint that takes the exports and counts their bytes."""

    def __init__(self) -> None:
        self.requests = 0
        self.bytes = 0
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                sink.requests += 1
                sink.bytes += len(body)
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"


def run(args: argparse.Namespace, endpoint: str | None) -> dict[str, float]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    if endpoint:
        env["OTEL_EXPORTER_OTLP_ENDPOINT"] = endpoint
    out = subprocess.run(
        [
            sys.executable,
            str(args.script),
            "--clients",
            str(args.clients),
            "--seconds",
            str(args.seconds),
        ],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rps = float(re.search(r"redemptions/s: (\d+)", out).group(1))  # type: ignore[union-attr]
    latency = re.search(r"p50 ([\d.]+)\s+p95 ([\d.]+)\s+p99 ([\d.]+)", out)
    assert latency, out
    # bench/redeem.py versions that measure CPU per redemption print it: steadier than throughput
    cpu = [line.strip() for line in out.splitlines() if "CPU" in line or "cpu" in line]
    return {
        "rps": rps,
        "p50": float(latency[1]),
        "p95": float(latency[2]),
        "p99": float(latency[3]),
        "cpu": cpu,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pairs", type=int, default=2)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--script", type=Path, default=ROOT / "bench" / "redeem.py", help="the redeem bench")
    args = parser.parse_args()
    sink = Sink()
    for pair in range(1, args.pairs + 1):
        for label, endpoint in (("off", None), ("on ", sink.endpoint)):
            r = run(args, endpoint)
            print(
                f"pair {pair} tracing {label}: {r['rps']:.0f} redemptions/s,"
                f" p50 {r['p50']:.1f} ms, p95 {r['p95']:.1f} ms, p99 {r['p99']:.1f} ms",
                flush=True,
            )
            for line in r["cpu"]:
                print(f"    {line}", flush=True)
    print(f"OTLP sink received {sink.requests} exports, {sink.bytes / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
