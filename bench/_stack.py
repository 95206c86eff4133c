"""What the benchmarks share: a migrated database with the demo catalog (embedded PostgreSQL under a
temporary folder unless DATABASE_URL is set)."""

from __future__ import annotations

import base64
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Stack:
    work: Path  # a temporary folder for the benchmark's files
    env: dict[str, str]  # DATABASE_URL, ENCRYPTION_KEY, ... for the processes it starts


@contextmanager
def demo_database(prefix: str) -> Iterator[Stack]:
    from service.kit.embedded import EmbeddedPostgres

    work = Path(tempfile.mkdtemp(prefix=prefix))
    env = {
        **os.environ,
        "ENCRYPTION_KEY": os.environ.get("ENCRYPTION_KEY")
        or base64.b64encode(secrets.token_bytes(32)).decode(),
        "LOG_LEVEL": "WARNING",
    }
    pg = None
    if not env.get("DATABASE_URL"):
        pg = EmbeddedPostgres(work / "pg")
        env["DATABASE_URL"] = pg.start()

    def rewards(*cli: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "service.cli", *cli], env=env, check=True, capture_output=True, text=True
        )

    try:
        rewards("migrate")
        rewards("catalog", "apply", str(ROOT / "catalog" / "demo"))
        yield Stack(work, env)
    finally:
        if pg:
            pg.stop()
        shutil.rmtree(work, ignore_errors=True)
