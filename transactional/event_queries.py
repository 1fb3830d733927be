"""The recorder's per-post queries, written in SQL.

Every webhook post runs these statements (events.py says why). They are
simple, but building them with the ORM cost several times what running them
did: about 0.2 ms each on a small machine, a third of the recorder's time for
a single Mailgun event. So they are plain SQL, read back into model instances
with ``Manager.raw()``, which still applies the fields' converters (JSON,
dates); the columns a query leaves out are deferred. The SQL is what both
supported databases, SQLite and PostgreSQL, accept; the tests run on both.
"""

from collections.abc import Collection
from datetime import datetime
from itertools import zip_longest

from django.db import connection
from django.db.models import Model

from . import db_limits
from .models import Event, Recipient

#: The Event columns linking and status need (the rest stay deferred).
EVENT_COLUMNS = (
    "id, esp, event_id, address, event_type, esp_message_id, message_id, recipient_id, raw"
)


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
        for recipient in Recipient.objects.raw(
            "SELECT id, message_id, address, status, esp_message_id"
            f" FROM {_table(Recipient)} WHERE esp_message_id IN ({_marks(ids)})",
            ids,
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
    return list(
        Event.objects.raw(f"SELECT {EVENT_COLUMNS} FROM {_table(Event)} WHERE {where}", params)
    )


def _table(model: type[Model]) -> str:
    return connection.ops.quote_name(model._meta.db_table)


def _marks(values: Collection) -> str:
    return ", ".join(["%s"] * len(values))
