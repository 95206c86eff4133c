"""`rewards serve` on the embedded default: one command up, one signal down, data kept."""
from __future__ import annotations

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
    env = {k: v for k, v in os.environ.items()
           if k not in ("DATABASE_URL", "REDIS_URL", "ENCRYPTION_KEY", "REWARDS_DATA_DIR")}
    env["REWARDS_DATA_DIR"] = str(data)
    return env


def _start(data: Path, port: int) -> tuple[subprocess.Popen, float]:
    started = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "service.cli", "serve", "--port", str(port)],
                            env=_embedded_env(data), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
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


def _stop(proc: subprocess.Popen) -> str:
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=60)
    return out


def _servers_under(data: Path) -> list[psutil.Process]:
    found = []
    for p in psutil.process_iter(["cmdline"]):
        cmd = " ".join(p.info["cmdline"] or [])
        if str(data) in cmd and ("postgres" in cmd or "redis-server" in cmd):
            found.append(p)
    return found


def test_serve_comes_up_stops_cleanly_and_keeps_its_data(tmp_path: Path):
    data, port = tmp_path / "var", _free_port()
    proc, seconds = _start(data, port)
    try:
        created = subprocess.run([sys.executable, "-m", "service.cli", "keys", "create", "--role", "support",
                                  "--name", "night-shift"], env=_embedded_env(data), capture_output=True,
                                 text=True, timeout=60)
        assert created.returncode == 0, created.stderr
        key = created.stdout.strip().splitlines()[-1]
        programs = httpx.get(f"http://127.0.0.1:{port}/v1/programs", headers={"Authorization": f"Bearer {key}"})
        assert programs.status_code == 200 and len(programs.json()["items"]) >= 2  # demo catalog applied
        stock = httpx.get(f"http://127.0.0.1:{port}/v1/stock", headers={"Authorization": f"Bearer {key}"}).json()
        assert all(item["available"] > 0 for item in stock["items"])  # demo codes imported
    finally:
        output = _stop(proc)
    assert proc.returncode == 0, output
    assert "stopping PostgreSQL and Redis" in output
    time.sleep(1)
    assert _servers_under(data) == []

    proc, _ = _start(data, port)
    try:
        again = httpx.get(f"http://127.0.0.1:{port}/v1/programs", headers={"Authorization": f"Bearer {key}"})
        assert again.status_code == 200  # the key (and everything else) survived the restart
        stock_after = httpx.get(f"http://127.0.0.1:{port}/v1/stock", headers={"Authorization": f"Bearer {key}"}).json()
        assert stock_after == stock  # demo codes were not imported a second time
    finally:
        _stop(proc)
    print(f"ready after {seconds:.1f} s")
