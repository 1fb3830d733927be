"""Insert many rows, skipping duplicates, with the values prepared ahead of the transaction.

``Model.objects.bulk_create()`` converts every field of every row to its
database form (JSON encoding, date adaptation) while it runs, which is
inside the caller's transaction, and on SQLite inside the database's write
lock; with ``ignore_conflicts`` it cannot say which rows a duplicate
skipped. The webhook recorder needs the opposite on both counts, so
``PreparedInsert`` converts the values when it is made (on PostgreSQL,
psycopg still encodes JSON as it sends it: no database-wide lock is held
there), and ``execute()`` runs ``INSERT … ON CONFLICT DO NOTHING
RETURNING``: rows that would break a unique constraint are skipped, the
others come back with their primary key.

``insert()`` is the plain case, for the outbox's every ``send()``: the
same conversion and one ``INSERT … RETURNING`` per model, where
``Model.save()`` would spend more time in the ORM than in SQLite.

SQLite (3.35+, which checks.py requires) and PostgreSQL only, the two
databases the project supports.
"""

from __future__ import annotations

from collections.abc import Sequence
from operator import itemgetter
from typing import Generic, TypeVar

from django.db import DEFAULT_DB_ALIAS, NotSupportedError, connections, models
from django.db.models import Model

from . import db_limits

M = TypeVar("M", bound=Model)

#: Fields a key may consist of: the database returns them as they went in.
TEXT_FIELDS = ("CharField", "TextField")
#: Fields whose str values go in as they are (not subclasses: those may convert).
PLAIN_TEXT_FIELDS = (models.CharField, models.TextField)


class PreparedInsert(Generic[M]):
    """The unsaved ``objs`` of one model, converted for ``using``'s database."""

    def __init__(self, objs: Sequence[M], *, key: Sequence[str], using: str = DEFAULT_DB_ALIAS):
        """Convert the values now; ``key`` names the fields of the unique constraint."""
        self.objs = list(objs)
        self.using = using
        connection = connections[using]
        if connection.vendor not in ("sqlite", "postgresql"):
            raise NotSupportedError(
                f"PreparedInsert supports SQLite and PostgreSQL, not {connection.vendor}"
            )
        if not self.objs:
            return
        meta = type(self.objs[0])._meta
        self.table = meta.db_table
        self.fields = _columns(meta)
        self.pk = meta.pk
        self.key = [meta.get_field(name) for name in key]
        if any(field.get_internal_type() not in TEXT_FIELDS for field in self.key):
            raise ValueError(f"PreparedInsert keys on text fields only, not {list(key)}")
        values = _db_values(self.objs, self.fields, connection)
        keys = [self._key(obj) for obj in self.objs]
        self.by_key: dict[tuple, M] = {}
        for key, obj in zip(keys, self.objs):
            self.by_key.setdefault(key, obj)  # a repeat in the batch conflicts with the first
        quote = connection.ops.quote_name
        returning = ", ".join(quote(field.column) for field in (self.pk, *self.key))
        self.statements = _statements(
            connection, self.table, self.fields,
            # In key order: two transactions inserting some of the same rows
            # wait for each other in the same order instead of deadlocking.
            [row for _, row in sorted(zip(keys, values), key=itemgetter(0))],
            f"ON CONFLICT DO NOTHING RETURNING {returning}",
        )

    def execute(self) -> list[M]:
        """Insert the rows; return those inserted, with their primary key set, in order.

        Only the statements run here: everything else was done when the
        insert was made, outside the caller's transaction.
        """
        if not self.objs:
            return []
        inserted = []
        with connections[self.using].cursor() as cursor:
            for sql, params in self.statements:
                cursor.execute(sql, params)
                for pk, *key in cursor.fetchall():
                    obj = self.by_key[tuple(key)]
                    obj.pk = pk
                    obj._state.adding, obj._state.db = False, self.using
                    inserted.append(obj)
        if len(inserted) == len(self.objs):
            return list(self.objs)
        position = {id(obj): n for n, obj in enumerate(self.objs)}
        return sorted(inserted, key=lambda obj: position[id(obj)])

    def _key(self, obj: M) -> tuple[str, ...]:
        # Text, so the database returns it as it went in.
        return tuple(getattr(obj, field.attname) for field in self.key)


def insert(objs: Sequence[M], *, using: str = DEFAULT_DB_ALIAS) -> None:
    """Insert the unsaved ``objs`` of one model (with an auto primary key) and set their keys.

    What ``bulk_create()`` does, in a fraction of its time for the few rows
    of one ``send()``. A unique constraint's violation raises Django's
    ``IntegrityError``, as ``save()`` would. The database returns the keys
    in the rows' order: Django's own ``bulk_create()`` relies on that on
    SQLite and PostgreSQL too.
    """
    if not objs:
        return
    connection = connections[using]
    meta = type(objs[0])._meta
    fields = _columns(meta)
    statements = _statements(
        connection, meta.db_table, fields, _db_values(objs, fields, connection),
        f"RETURNING {connection.ops.quote_name(meta.pk.column)}",
    )
    keys = []
    with connection.cursor() as cursor:
        for sql, params in statements:
            cursor.execute(sql, params)
            keys += cursor.fetchall()
    for obj, (pk,) in zip(objs, keys, strict=True):
        obj.pk = pk
        obj._state.adding, obj._state.db = False, using


def _statements(connection, table: str, fields: list[models.Field], rows: list[list],
                tail: str) -> list[tuple[str, list]]:
    """The ``INSERT … tail`` statements for ``rows``, as many as the parameter limit needs."""
    quote = connection.ops.quote_name
    columns = ", ".join(quote(field.column) for field in fields)
    placeholders = "(" + ", ".join(["%s"] * len(fields)) + ")"
    size = max(1, db_limits.max_params(connection) // len(fields))
    return [
        (
            f"INSERT INTO {quote(table)} ({columns})"
            f" VALUES {', '.join([placeholders] * len(chunk))} {tail}",
            [value for row in chunk for value in row],
        )
        for chunk in (rows[start : start + size] for start in range(0, len(rows), size))
    ]


def _columns(meta) -> list[models.Field]:
    return [field for field in meta.concrete_fields if not field.primary_key]


def _db_values(objs: Sequence[Model], fields: list[models.Field], connection) -> list[list]:
    """Each object's values for ``fields``, as ``save()`` would send them to ``connection``."""
    text = [type(field) in PLAIN_TEXT_FIELDS for field in fields]
    return [
        [
            # A str in a plain text field is its own database value: skip
            # the five calls that would return it unchanged, 18,000 times
            # for a SendGrid batch of 1,000 events.
            value
            if plain and type(value := getattr(obj, field.attname)) is str
            else field.get_db_prep_save(field.pre_save(obj, add=True), connection)
            for field, plain in zip(fields, text)
        ]
        for obj in objs
    ]
