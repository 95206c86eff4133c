"""SQL statements kept in `.sql` files beside the package that runs them (`<package>/sql/<name>.sql`),
so that a reviewer reads a statement as SQL, and a golden test runs each one against PostgreSQL.

`load(package)` reads every file of the package's `sql/` folder once, when the package's module is
imported (a missing file fails the import, not a request), and keeps them. A statement has psycopg's
named placeholders `%(name)s` only: the loader refuses positional ones (`%s`), so the whole statement
reads the same way as the parameters passed to it."""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import lru_cache
from importlib.resources import files
from types import MappingProxyType

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
