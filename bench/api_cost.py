"""Instructions the API process executes per redemption, counted by valgrind's callgrind.

Throughput on this shared 2-core VM drifts by a third between runs; an instruction count does not
(callgrind counts instructions, not seconds). This starts `rewards api` (one process) under callgrind
with instrumentation off, warms it up, then counts the instructions of N redemptions sent one after
the other over HTTP, and prints millions of instructions per redemption. Use it to compare two
versions of the code (--api-root runs another checkout against the same database); the redemption
benchmark (bench/redeem.py --limit) gives the figures that count.

    .venv/bin/python bench/api_cost.py [--requests 200] [--api-root ../wt-other]
"""

from __future__ import annotations

import argparse
import os
import secrets
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._stack import demo_database  # noqa: E402


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def redeem(http: httpx.Client, key: str, n: int, run: str) -> int:
    response = http.post(
        "/v1/redemptions",
        json={
            "program": "mobile-bonus",
            "tariff": "basic",
            "offer": "cinema-2000",
            "points": 2000,
            "msisdn": f"8705{n:07d}",
            "external_id": f"{run}-{n}",
        },
        headers={"Authorization": f"Bearer {key}", "Idempotency-Key": f"{run}-{n}"},
    )
    return response.status_code


def total_instructions(out_file: Path) -> int:
    for line in out_file.read_text().splitlines():
        if line.startswith(("summary:", "totals:")):
            return int(line.split()[1])
    raise SystemExit(f"no totals in {out_file}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=60)
    parser.add_argument("--api-root", type=Path)
    args = parser.parse_args()
    from service.kit.embedded import EmbeddedRedis

    with demo_database("bench-api-cost-") as stack:
        redis = EmbeddedRedis(stack.work / "redis")
        env = {**stack.env, "REDIS_URL": redis.start(), "API_THREADS": "4"}
        try:

            def rewards(*cli: str) -> str:
                return subprocess.run(
                    [sys.executable, "-m", "service.cli", *cli],
                    env=env,
                    check=True,
                    capture_output=True,
                    text=True,
                ).stdout

            pool = stack.work / "codes.csv"
            count = args.requests + args.warmup + 10
            pool.write_text(
                "".join(f"COST-{secrets.token_hex(6).upper()},,2030-12-31\n" for _ in range(count))
            )
            rewards("codes", "import", "ARAY-CINEMA-2000", str(pool))
            key = rewards(
                "keys", "create", "--role", "loyalty", "--program", "mobile-bonus", "--name", "cost"
            )
            key = key.strip().splitlines()[-1]
            port = free_port()
            out = stack.work / "callgrind.out"
            api_env = dict(env)
            if args.api_root:
                api_env["PYTHONPATH"] = str(args.api_root.resolve())
            server = subprocess.Popen(
                [
                    "valgrind",
                    "--tool=callgrind",
                    "--instr-atstart=no",
                    f"--callgrind-out-file={out}",
                    sys.executable,
                    "-m",
                    "service.cli",
                    "api",
                    "--port",
                    str(port),
                    "--workers",
                    "1",
                ],
                env=api_env,
                cwd=args.api_root or os.getcwd(),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            try:
                with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=120) as http:
                    for _ in range(600):
                        try:
                            if http.get("/readyz").status_code == 200:
                                break
                        except httpx.HTTPError:
                            time.sleep(1)
                    for n in range(args.warmup):
                        assert redeem(http, key, n, "warm") == 201
                    subprocess.run(
                        ["callgrind_control", "-i", "on", str(server.pid)], check=True, capture_output=True
                    )
                    started = time.perf_counter()
                    statuses = [redeem(http, key, args.warmup + n, "counted") for n in range(args.requests)]
                    took = time.perf_counter() - started
                    subprocess.run(
                        ["callgrind_control", "-d", str(server.pid)], check=True, capture_output=True
                    )
            finally:
                server.terminate()
                server.wait(timeout=120)
            dumps = sorted(stack.work.glob("callgrind.out*"), key=lambda p: p.stat().st_mtime)
            counted = max(total_instructions(p) for p in dumps)
            assert statuses.count(201) == args.requests, statuses
            print(
                f"{args.requests} redemptions one after the other under callgrind ({took:.0f} s):"
                f" {counted / args.requests / 1e6:.2f} M instructions per redemption in the API process"
            )
        finally:
            redis.stop()


if __name__ == "__main__":
    main()
