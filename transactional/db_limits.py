"""How many values one SQL statement may carry, on the databases we support.

SQLite allows 32,766 parameters per statement (builds may differ: Debian's
allows 250,000, some older ones 999); PostgreSQL 65,535. A 2.5 MB SendGrid
batch holds some 20,000 events, so the recorder's ``IN (…)`` lists and
multi-row inserts are split to stay inside the limit.
"""

import sqlite3
from collections.abc import Iterable, Iterator
from typing import TypeVar

from django.db.backends.base.base import BaseDatabaseWrapper

T = TypeVar("T")

#: Values per ``IN (…)`` list: a statement with two such lists stays inside
#: SQLite's default limit.
MAX_IN = 10_000

#: PostgreSQL's limit on bind parameters in one statement.
POSTGRESQL_MAX_PARAMS = 65_535


def chunks(values: Iterable[T]) -> Iterator[list[T]]:
    """Yield ``values`` in lists of at most ``MAX_IN``, for ``IN (…)`` lists."""
    values = list(values)
    for start in range(0, len(values), MAX_IN):
        yield values[start : start + MAX_IN]


def max_params(connection: BaseDatabaseWrapper) -> int:
    """Return how many parameters one statement may carry on ``connection``."""
    if connection.vendor == "sqlite":
        connection.ensure_connection()
        return connection.connection.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
    return POSTGRESQL_MAX_PARAMS
