"""The recorder's per-post queries, written in SQL.

Every webhook post runs these three statements (events.py says why). They
are simple, but building them with the ORM cost several times what running
them did: about 0.2 ms each on a small machine, a third of the recorder's
time for a single Mailgun event. So they are plain SQL, read back into model
instances with ``Manager.raw()``, which still applies the fields' converters
(JSON, dates); the columns a query leaves out are deferred. The SQL is what both supported databases, SQLite and
PostgreSQL, accept; tests/test_events.py runs against both.
"""

from collections.abc import Collection, Iterable, Iterator
from datetime import datetime
from itertools import zip_longest
from typing import TypeVar

from django.db import connection
from django.db.models import Model

from .models import Event, Recipient

T = TypeVar("T")


#: Values per ``IN (…)`` list, so that no statement needs more than SQLite's
#: 32,766 parameters (a 2.5 MB SendGrid batch holds some 20,000 events).
MAX_IN = 10_000


def read_events(
    *, unlinked_about: Collection[str] = (), esp: str = "", event_ids: Collection[str] = ()
) -> list[Event]:
    """Unlinked events about these ESP message ids, and ``esp``'s events with these ids.

    The unlinked ones are found through ``event_unlinked_idx``.
    """
    found: dict[int, Event] = {}
    for about, ids in zip_longest(_chunks(unlinked_about), _chunks(event_ids), fillvalue=()):
        wanted, params = [], []
        if about:
            wanted.append(f"(message_id IS NULL AND esp_message_id IN ({_marks(about)}))")
            params += about
        if ids:
            wanted.append(f"(esp = %s AND event_id IN ({_marks(ids)}))")
            params += [esp, *ids]
        rows = Event.objects.raw(
            "SELECT id, esp, event_id, address, event_type, esp_message_id, message_id,"
            f" recipient_id, raw FROM {_table(Event)} WHERE {' OR '.join(wanted)}",
            params,
        )
        found.update((row.pk, row) for row in rows)
    return list(found.values())


def recipients_sent_as(esp_message_ids: Collection[str]) -> list[Recipient]:
    """The recipients of the messages the ESP knows by these ids."""
    return [
        recipient
        for ids in _chunks(esp_message_ids)
        for recipient in Recipient.objects.raw(
            "SELECT id, message_id, address, status, esp_message_id"
            f" FROM {_table(Recipient)} WHERE esp_message_id IN ({_marks(ids)})",
            ids,
        )
    ]


def lock_recipients(pks: Collection[int]) -> dict[int, str]:
    """Lock these recipients' rows in primary-key order; return their statuses now.

    Only where the database has row locks (PostgreSQL). Every write to
    recipients and events takes these locks first and in the same order, so
    two posts about the same recipients wait for each other instead of
    deadlocking. SQLite locks the whole database for each write instead:
    there it returns {} without a query.
    """
    if not connection.features.has_select_for_update:
        return {}
    statuses = {}
    with connection.cursor() as cursor:
        for chunk in _chunks(sorted(pks)):
            cursor.execute(
                f"SELECT id, status FROM {_table(Recipient)}"
                f" WHERE id IN ({_marks(chunk)}) ORDER BY id FOR UPDATE",
                chunk,
            )
            statuses.update(cursor.fetchall())
    return statuses


def raise_status(pks: Collection[int], status: str, below: Collection[str], now: datetime) -> int:
    """Set ``status`` on the recipients ``pks`` whose status is one of ``below``; return how many."""
    updated_at = Recipient._meta.get_field("updated_at").get_db_prep_save(now, connection)
    updated = 0
    with connection.cursor() as cursor:
        for chunk in _chunks(pks):
            cursor.execute(
                f"UPDATE {_table(Recipient)} SET status = %s, updated_at = %s"
                f" WHERE id IN ({_marks(chunk)}) AND status IN ({_marks(below)})",
                [status, updated_at, *chunk, *below],
            )
            updated += cursor.rowcount
    return updated


def _chunks(values: Iterable[T]) -> Iterator[list[T]]:
    """Yield ``values`` in lists of at most ``MAX_IN``."""
    values = list(values)
    for start in range(0, len(values), MAX_IN):
        yield values[start : start + MAX_IN]


def _table(model: type[Model]) -> str:
    return connection.ops.quote_name(model._meta.db_table)


def _marks(values: Collection) -> str:
    return ", ".join(["%s"] * len(values))
