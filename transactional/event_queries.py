"""The recorder's per-post queries, written in SQL.

Every webhook post runs these statements (events.py says why). They are
simple, but building them with the ORM cost several times what running them
did: about 0.2 ms each on a small machine, a third of the recorder's time for
a single Mailgun event. So they are plain SQL on a cursor, read back into
model instances by ``_select()`` with the fields' converters (JSON) applied
and the columns a query leaves out deferred. (``Manager.raw()`` does the
same, but works out its columns and converters afresh for every query: on a
single Mailgun event that cost as much as the two reads themselves.) The SQL
is what both supported databases, SQLite and PostgreSQL, accept; the tests
run on both. ``write_transaction()`` is the transaction the webhook views
write a post in.
"""

import functools
import time
from collections.abc import Collection, Iterator
from contextlib import ExitStack, contextmanager
from datetime import datetime
from itertools import zip_longest
from typing import TypeVar

from django.db import DEFAULT_DB_ALIAS, OperationalError, connection, connections, transaction
from django.db.models import Model

from . import db_limits
from .models import Event, Recipient

M = TypeVar("M", bound=Model)

#: The Event columns linking and status need (the rest stay deferred).
EVENT_COLUMNS = (
    "id", "esp", "event_id", "address", "event_type", "esp_message_id", "message_id",
    "recipient_id", "raw",
)
#: The Recipient columns linking and status need.
RECIPIENT_COLUMNS = ("id", "message_id", "address", "status", "esp_message_id")


def recorded_or_unlinked_events(
    esp: str, event_ids: Collection[str], esp_message_ids: Collection[str]
) -> list[Event]:
    """``esp``'s events with these ids, and the unlinked events about these ESP messages.

    One query for both, as a webhook post is a single event as often as not.
    """
    found: dict[int, Event] = {}
    pairs = zip_longest(db_limits.chunks(event_ids), db_limits.chunks(esp_message_ids))
    for ids, about in pairs:
        wanted, params = [], []
        if ids:
            wanted.append(f"(esp = %s AND event_id IN ({_marks(ids)}))")
            params += [esp, *ids]
        if about:
            wanted.append(_UNLINKED.format(marks=_marks(about)))
            params += about
        found.update((row.pk, row) for row in _events(" OR ".join(wanted), params))
    return list(found.values())


def unlinked_events(esp_message_ids: Collection[str]) -> list[Event]:
    """The events about these ESP messages that are not linked to a message yet."""
    return [
        row
        for about in db_limits.chunks(esp_message_ids)
        for row in _events(_UNLINKED.format(marks=_marks(about)), about)
    ]


def recipients_sent_as(esp_message_ids: Collection[str]) -> list[Recipient]:
    """The recipients of the messages the ESP knows by these ids."""
    return [
        recipient
        for ids in db_limits.chunks(esp_message_ids)
        for recipient in _select(
            Recipient, RECIPIENT_COLUMNS, f"esp_message_id IN ({_marks(ids)})", ids
        )
    ]


def lock_recipients(pks: Collection[int]) -> dict[int, str]:
    """Lock these recipients' rows in primary-key order; return their statuses now.

    Only where the database has row locks (PostgreSQL). Every webhook post
    takes these locks before its other writes, and in the same order, so two
    posts about the same recipients wait for each other instead of
    deadlocking. SQLite locks the whole database for each write instead:
    there it returns {} without a query.
    """
    if not connection.features.has_select_for_update:
        return {}
    statuses = {}
    with connection.cursor() as cursor:
        for chunk in db_limits.chunks(sorted(pks)):
            # NO KEY: new events may still reference these rows meanwhile.
            cursor.execute(
                f"SELECT id, status FROM {_table(Recipient)}"
                f" WHERE id IN ({_marks(chunk)}) ORDER BY id FOR NO KEY UPDATE",
                chunk,
            )
            statuses.update(cursor.fetchall())
    return statuses


@contextmanager
def write_transaction() -> Iterator[None]:
    """``transaction.atomic()`` for a webhook post; on SQLite, waiting for the lock in short steps.

    On SQLite, BEGIN IMMEDIATE waits for the database-wide write lock with
    SQLite's own busy handler, which sleeps 1 ms, then 2, 5, 10, 15, 20,
    25 ms... But another post holds the lock for a fraction of a millisecond
    (a SendGrid batch: tens of milliseconds), so the waiting worker idled long
    after the lock was free: about a sixth of a worker's time on single
    Mailgun events. Here the wait retries every 0.1 ms at first, every 2 ms
    at most, for as long as the database's ``timeout`` option allows; then
    "database is locked" is raised, as before. Nested in a transaction, or on
    PostgreSQL (row locks, no busy handler), it is plain ``atomic()``.
    """
    db = connections[DEFAULT_DB_ALIAS]
    if db.vendor != "sqlite" or db.in_atomic_block:
        with transaction.atomic():
            yield
        return
    timeout = float(db.settings_dict["OPTIONS"].get("timeout", 5))
    deadline, pause = time.monotonic() + timeout, 0.0001
    with ExitStack() as stack:
        db.ensure_connection()
        db.connection.execute("PRAGMA busy_timeout = 0")  # fail at once while locked
        try:
            while True:
                try:
                    stack.enter_context(transaction.atomic())  # BEGIN IMMEDIATE
                    break
                except OperationalError as err:
                    if "locked" not in str(err) or time.monotonic() >= deadline:
                        raise
                time.sleep(pause)
                pause = min(2 * pause, 0.002)
        finally:
            db.connection.execute(f"PRAGMA busy_timeout = {round(timeout * 1000)}")
        yield


def raise_status(pks: Collection[int], status: str, below: Collection[str], now: datetime) -> int:
    """Set ``status`` on the recipients ``pks`` whose status is one of ``below``; return how many."""
    if not pks or not below:
        return 0
    updated_at = Recipient._meta.get_field("updated_at").get_db_prep_save(now, connection)
    updated = 0
    with connection.cursor() as cursor:
        for chunk in db_limits.chunks(pks):
            cursor.execute(
                f"UPDATE {_table(Recipient)} SET status = %s, updated_at = %s"
                f" WHERE id IN ({_marks(chunk)}) AND status IN ({_marks(below)})",
                [status, updated_at, *chunk, *below],
            )
            updated += cursor.rowcount
    return updated


# Found through event_unlinked_idx.
_UNLINKED = "(message_id IS NULL AND esp_message_id IN ({marks}))"


def _events(where: str, params: list) -> list[Event]:
    return _select(Event, EVENT_COLUMNS, where, params)


def _select(model: type[M], columns: tuple[str, ...], where: str, params: list) -> list[M]:
    """Return ``model``'s rows matching ``where``, with only ``columns`` loaded.

    ``columns`` are column names (``message_id`` for a foreign key); the
    other fields are deferred, as ``Manager.raw()`` would leave them.
    """
    db = connections[DEFAULT_DB_ALIAS]
    select, names, converters = _reader(model, columns, db.alias, db.vendor)
    with db.cursor() as cursor:
        cursor.execute(f"{select} WHERE {where}", params)
        rows = cursor.fetchall()
    found = []
    for row in rows:
        if converters:
            row = list(row)
            for position, column, functions in converters:
                for convert in functions:
                    row[position] = convert(row[position], column, db)
        found.append(model.from_db(db.alias, names, row))
    return found


@functools.cache
def _reader(model: type[Model], columns: tuple[str, ...], alias: str, vendor: str) -> tuple:
    """Return the SELECT, the attribute names and the converters for ``_select()``.

    Worked out once per model, columns and database, as the ORM's compiler
    would for every query.
    """
    db = connections[alias]
    fields = [field for field in model._meta.concrete_fields if field.column in columns]
    quote = db.ops.quote_name
    select = (
        f"SELECT {', '.join(quote(field.column) for field in fields)}"
        f" FROM {quote(model._meta.db_table)}"
    )
    converters = [
        (position, field.cached_col, functions)
        for position, field in enumerate(fields)
        if (
            functions := db.ops.get_db_converters(field.cached_col)
            + field.get_db_converters(db)
        )
    ]
    return select, [field.attname for field in fields], converters


def _table(model: type[Model]) -> str:
    return connection.ops.quote_name(model._meta.db_table)


def _marks(values: Collection) -> str:
    return ", ".join(["%s"] * len(values))
