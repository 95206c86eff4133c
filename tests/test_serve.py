"""`rewards serve` on the embedded default: one command up, one signal down, data kept."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _embedded_env(data: Path) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DATABASE_URL", "REDIS_URL", "ENCRYPTION_KEY", "REWARDS_DATA_DIR")
    }
    env["REWARDS_DATA_DIR"] = str(data)
    env["METRICS_PORT"] = "0"  # the workers' exporter (tests/test_metrics.py) on no fixed port here
    return env


def _start(data: Path, port: int) -> tuple[subprocess.Popen, float]:
    started = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "service.cli", "serve", "--port", str(port)],
        env=_embedded_env(data),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = started + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stdout.read()
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                return proc, time.monotonic() - started
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    proc.kill()
    pytest.fail("not ready within 60 s")


def _stop(proc: subprocess.Popen, how: signal.Signals = signal.SIGINT) -> str:
    proc.send_signal(how)
    out, _ = proc.communicate(timeout=120)
    return out


def _stopped_in_order(output: str) -> list[str]:
    """What `rewards serve` stopped, in its order (its workers' own supervisor logs theirs too)."""
    lines = [
        json.loads(line)
        for line in output.splitlines()
        if line.startswith("{") and "component_stopped" in line
    ]
    return [line["component"] for line in lines if line.get("supervisor") == "serve"]


def _servers_under(data: Path) -> list[psutil.Process]:
    found = []
    for p in psutil.process_iter(["cmdline"]):
        cmd = " ".join(p.info["cmdline"] or [])
        if str(data) in cmd and ("postgres" in cmd or "redis-server" in cmd):
            found.append(p)
    return found


def test_serve_comes_up_stops_cleanly_and_keeps_its_data(server_data: Path):
    data, port = server_data / "var", _free_port()
    proc, seconds = _start(data, port)
    try:
        created = subprocess.run(
            [
                sys.executable,
                "-m",
                "service.cli",
                "keys",
                "create",
                "--role",
                "support",
                "--name",
                "night-shift",
            ],
            env=_embedded_env(data),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert created.returncode == 0, created.stderr
        key = created.stdout.strip().splitlines()[-1]
        programs = httpx.get(
            f"http://127.0.0.1:{port}/v1/programs", headers={"Authorization": f"Bearer {key}"}
        )
        assert programs.status_code == 200 and len(programs.json()["items"]) >= 2  # demo catalog applied
        stock = httpx.get(
            f"http://127.0.0.1:{port}/v1/stock", headers={"Authorization": f"Bearer {key}"}
        ).json()
        assert all(item["available"] > 0 for item in stock["items"])  # demo codes imported
        loyalty = (
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "service.cli",
                    "keys",
                    "create",
                    "--role",
                    "loyalty",
                    "--program",
                    "mobile-bonus",
                    "--name",
                    "loyalty",
                ],
                env=_embedded_env(data),
                capture_output=True,
                text=True,
                timeout=60,
            )
            .stdout.strip()
            .splitlines()[-1]
        )
        made = httpx.post(
            f"http://127.0.0.1:{port}/v1/redemptions",
            headers={"Authorization": f"Bearer {loyalty}", "Idempotency-Key": "serve-1"},
            json={
                "program": "mobile-bonus",
                "tariff": "basic",
                "offer": "cinema-2000",
                "points": 2000,
                "msisdn": "87011234567",
                "external_id": "serve-1",
                "locale": "kk",
            },
        )
        assert made.status_code == 201, made.text
        sms_file = data / "sms.jsonl"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not (sms_file.exists() and sms_file.read_text().strip()):
            time.sleep(0.2)
        line = json.loads(sms_file.read_text().splitlines()[0])  # the file provider of the embedded default
        assert line["to"] == "+77011234567" and line["encoding"] == "UCS-2" and "дейін" in line["text"]
        assert set(line) >= {"to", "text", "sender", "encoding", "segments"}
        deadline, status = time.monotonic() + 10, None
        while (
            time.monotonic() < deadline and status != "sent"
        ):  # the file write precedes the commit of "sent"
            status = httpx.get(
                f"http://127.0.0.1:{port}/v1/redemptions/{made.json()['id']}",
                headers={"Authorization": f"Bearer {loyalty}"},
            ).json()["status"]
            time.sleep(0.1)
        assert status == "sent"
    finally:
        output = _stop(proc)
    assert proc.returncode == 0, output
    assert "stopping PostgreSQL and Redis" in output
    assert _stopped_in_order(output) == ["api", "relay", "worker", "redis", "postgres"]
    time.sleep(1)
    assert _servers_under(data) == []

    proc, _ = _start(data, port)
    try:
        again = httpx.get(f"http://127.0.0.1:{port}/v1/programs", headers={"Authorization": f"Bearer {key}"})
        assert again.status_code == 200  # the key (and everything else) survived the restart
        stock_after = httpx.get(
            f"http://127.0.0.1:{port}/v1/stock", headers={"Authorization": f"Bearer {key}"}
        ).json()
        available = {i["sku"]: i["available"] for i in stock_after["items"]}
        assert available == {
            i["sku"]: i["available"] - (i["sku"] == "ARAY-CINEMA-2000") for i in stock["items"]
        }  # one code went out; none were imported again
    finally:
        output = _stop(proc, signal.SIGTERM)  # as an init system or a container runtime stops it
    assert proc.returncode == 0, output
    assert _stopped_in_order(output) == ["api", "relay", "worker", "redis", "postgres"]
    print(f"ready after {seconds:.1f} s")
