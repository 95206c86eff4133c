"""The outbox's SQL statements, one `.sql` file each, with psycopg `%(name)s` placeholders (read and
checked by service/kit/db/sqlfiles.py)."""

from __future__ import annotations

from functools import partial

from service.kit.db import sqlfiles

load = partial(sqlfiles.statement, "service.kit.messaging")
compose = partial(sqlfiles.compose, "service.kit.messaging")
