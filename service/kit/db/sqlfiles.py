"""SQL statements kept in `.sql` files beside the package that runs them (`<package>/sql/<name>.sql`),
so that a reviewer reads a statement as SQL, and a golden test runs each one against PostgreSQL.

`load(package)` reads every file of the package's `sql/` folder once, when the package's module is
imported (a missing file fails the import, not a request), and keeps them. A statement has psycopg's
named placeholders `%(name)s` only: the loader refuses positional ones (`%s`), so the whole statement
reads the same way as the parameters passed to it.

`statement(package, name)` is one statement without its whole-line `--` comments, so that it stays
valid when its lines are joined into one (bench/ceiling.py does); a file with `{field}` parts is a
template that `compose(package, name, ...)` fills with SQL fragments through psycopg.sql. A
package's `sql/__init__.py` binds both to its own name."""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import lru_cache
from importlib.resources import files
from types import MappingProxyType

from psycopg import sql

# A placeholder psycopg takes as positional (`%s`, `%b`, `%t`): a `%` that is neither the start of a
# named one (`%(`) nor an escaped percent sign (`%%`).
_POSITIONAL = re.compile(r"(?<!%)%[sbt]")


class SqlFileError(ValueError):
    """A statement file the loader refuses."""


@lru_cache
def load(package: str) -> Mapping[str, str]:
    """The statements of `package` (a dotted module name), by file name without `.sql`."""
    folder = files(package) / "sql"
    statements: dict[str, str] = {}
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if not entry.name.endswith(".sql"):
            continue
        text = entry.read_text(encoding="utf-8").strip()
        if not text:
            raise SqlFileError(f"{package}/sql/{entry.name} is empty")
        if _POSITIONAL.search(text):
            raise SqlFileError(f"{package}/sql/{entry.name}: use named placeholders %(name)s, not %s")
        if any(line.lstrip().startswith("--") and "%" in line for line in text.splitlines()):
            # psycopg reads placeholders in comments too: one there would be bound, or break the query.
            raise SqlFileError(f"{package}/sql/{entry.name}: a comment with a % sign")
        statements[entry.name.removesuffix(".sql")] = text
    return MappingProxyType(statements)


@lru_cache
def statement(package: str, name: str) -> str:
    """`<package>/sql/<name>.sql` without its comment lines (a comment may then hold a % sign)."""
    text = (files(package) / "sql" / f"{name}.sql").read_text(encoding="utf-8")
    lines = [line.rstrip() for line in text.splitlines() if not line.lstrip().startswith("--")]
    body = "\n".join(line for line in lines if line).strip()
    if not body:
        raise SqlFileError(f"{package}/sql/{name}.sql is empty")
    if _POSITIONAL.search(body):
        raise SqlFileError(f"{package}/sql/{name}.sql: use named placeholders %(name)s, not %s")
    return body


def compose(package: str, name: str, **fields: str) -> str:
    """The template `<package>/sql/<name>.sql` with its `{field}` parts filled in by SQL fragments (the
    code's own text, never a value: values are `%(name)s` parameters), as a string. Compose once per
    shape and cache the result, never per request."""
    parts = {key: sql.SQL(value) for key, value in fields.items()}
    return sql.SQL(statement(package, name)).format(**parts).as_string(None)
