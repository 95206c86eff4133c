"""The SQL files of ledger, redemptions, cards and pools: one placeholder style, each file used by its
package's code (the golden tests, test_sql_golden_*.py, run each statement against PostgreSQL)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import service

PACKAGES = ("ledger", "redemptions", "cards", "pools", "kit/messaging")
ROOT = Path(service.__file__).parent
FILES = sorted(path for package in PACKAGES for path in (ROOT / package / "sql").glob("*.sql"))


def test_there_are_sql_files():
    assert len(FILES) > 40


@pytest.mark.parametrize("path", FILES, ids=lambda p: f"{p.parent.parent.name}/{p.name}")
def test_a_statement_uses_psycopg_named_placeholders_only(path: Path):
    statement = "\n".join(
        line for line in path.read_text().splitlines() if not line.lstrip().startswith("--")
    )
    assert "--" not in statement, "a comment takes a whole line (bench/ceiling.py joins the lines)"
    assert not re.search(r"%s\b", statement), "positional %s"
    assert not re.search(r"(?<![:\w]):[a-z_]+\b", statement), "SQLAlchemy :name"
    assert statement.strip() and not statement.rstrip().endswith(";")


@pytest.mark.parametrize("path", FILES, ids=lambda p: f"{p.parent.parent.name}/{p.name}")
def test_each_file_is_loaded_by_its_package(path: Path):
    package = path.parent.parent
    code = "\n".join(p.read_text() for p in package.glob("*.py"))
    assert re.search(rf"""(load|compose)\(\s*"{path.stem}"\s*[,)]""", code), f"{path.name} is not used"
