"""This package's SQL statements, one `.sql` file each, with psycopg `%(name)s` placeholders.

`load(name)` reads `<name>.sql` once. Whole-line `--` comments are dropped, so a statement stays
valid when its lines are joined into one (bench/ceiling.py does); a comment never ends a line of SQL.
A file with `{name}` fields is a template: the caller composes it with psycopg.sql (`compose`)."""

from __future__ import annotations

from functools import cache
from pathlib import Path

from psycopg import sql

_HERE = Path(__file__).parent


@cache
def load(name: str) -> str:
    """The statement of `<name>.sql`, without its comment lines."""
    text = (_HERE / f"{name}.sql").read_text(encoding="utf-8")
    lines = [line.rstrip() for line in text.splitlines() if not line.lstrip().startswith("--")]
    return "\n".join(line for line in lines if line).strip()


def compose(name: str, **fields: str) -> str:
    """The template `<name>.sql` with its `{field}` parts filled in by SQL fragments (the code's own
    text, never a value: values are `%(name)s` parameters), as a string. Compose once per shape and
    cache the result, never per request."""
    parts = {key: sql.SQL(value) for key, value in fields.items()}
    return sql.SQL(load(name)).format(**parts).as_string(None)
