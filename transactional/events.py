"""Recording ESP tracking events: once each, linked to our messages, acted on.

Recording events (``record_many()``, or ``prepare()`` then ``write()``)

1. skips events already recorded (ESPs retry; Mailgun replays verify),
2. links the rest to the Message and Recipient they are about, by the
   ESP message id stored at send time and the address,
3. links earlier events that arrived before their message was recorded,
4. raises each linked recipient's status by precedence (status.py), and
5. suppresses the address on a hard bounce, complaint, unsubscribe or
   invalid-address rejection (esps.py decides, from the ESP's own fields).

A duplicate writes nothing at all. Suppression does not wait for a link:
the address is known on arrival, and a hard bounce is one whoever sent the
mail. Status does wait: it belongs to a recipient, so it is applied when the
event is linked, on arrival or later by ``link_pending()``.

It works in two steps. ``prepare()`` does the reads and builds the rows,
writing nothing; ``Recording.write()`` writes them, inside the caller's
transaction. On SQLite that transaction holds the database-wide write lock,
so everything that can happen before it does. The writes stay correct
against a concurrent request that read the same state: the insert skips an
event the other one recorded first (the unique constraint settles it), and
a status only moves up (the UPDATE checks the current one). On PostgreSQL
``write()`` first locks the recipients in primary-key order, so concurrent
posts about the same recipients wait for each other instead of deadlocking.
A message deleted between the two steps (``outbox purge``) fails the
write's foreign key; the webhook views then record the post once more, with
the reads inside the transaction.

Webhook views send one anymail ``tracking`` signal per event. Inside
``batch()`` the receiver collects them and records them all as the block
exits, a handful of queries per request instead of several per event.
"""

import logging
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import groupby
from operator import itemgetter
from typing import Any

from anymail.signals import AnymailTrackingEvent
from django.db import transaction
from django.utils import timezone

from . import esps, event_queries, metrics, signals
from .bulk_insert import PreparedInsert
from .models import DEFAULT_STREAM, Event, Message, Recipient, Suppression, normalize_address
from .status import next_status, statuses_below
from .suppression import suppress_many

logger = logging.getLogger(__name__)

#: How far back ``link_pending()`` without recipients looks for unlinked events.
PENDING_WINDOW = timedelta(days=1)

Key = tuple[str, str]


def record(event: AnymailTrackingEvent, esp_name: str) -> Event | None:
    """Record one anymail tracking event; return its row, or None if nothing new was recorded."""
    recorded = record_many([event], esp_name)
    return recorded[0] if recorded else None


def record_many(events: Iterable[AnymailTrackingEvent], esp_name: str) -> list[Event]:
    """Record anymail tracking events from one ESP; return the rows new to us."""
    recording = prepare(events, esp_name)
    # Part of the caller's transaction, if any.
    with transaction.atomic(savepoint=False):
        return recording.write()


def prepare(events: Iterable[AnymailTrackingEvent], esp_name: str) -> "Recording":
    """Read what recording these events needs and build their rows; write nothing."""
    events = list(events)
    esp = esps.ESP_BY_ANYMAIL_NAME.get(esp_name)
    if esp is None:
        logger.warning(
            "Ignoring %d tracking event(s) from unsupported ESP %r", len(events), esp_name
        )
        return Recording(esp_name, events)
    now = timezone.now()
    rows = _unique(_build(event, esp, received_at=now) for event in events)
    recorded, unlinked = _read_events(esp, rows)
    rows = _not_recorded(esp, rows, recorded)
    if not rows:
        logger.debug("All %d %s event(s) were recorded before", len(events), esp)
        return Recording(esp_name, events)
    linker = _Linker.load({row.esp_message_id for row in rows})
    pending = [row for row in unlinked if linker.link(row)]
    for row in rows:
        linker.link(row)
    return Recording(
        esp_name,
        events,
        linker=linker,
        pending=pending,
        insert=PreparedInsert(rows, key=("esp", "event_id", "address")),
        counts=metrics.event_counts(rows),
    )


@dataclass
class Recording:
    """What ``prepare()`` made of some events: ``write()`` records them."""

    esp_name: str
    events: list[AnymailTrackingEvent]
    linker: "_Linker" = field(default_factory=lambda: _Linker())
    #: Unlinked events of earlier requests that this one's messages now link.
    pending: list[Event] = field(default_factory=list)
    #: The new rows, ready to insert (None: nothing new).
    insert: PreparedInsert[Event] | None = None
    #: What the new rows add to the metrics, should all of them go in.
    counts: Counter | None = None

    def write(self) -> list[Event]:
        """Write the rows, link the pending events, apply both; return the rows inserted.

        Call it inside a transaction, so that everything commits together.
        """
        rows = _write(self.linker, self.pending, self.insert, self.counts)
        if self.events:
            logger.debug(
                "Recorded %d of %d %s event(s)", len(rows), len(self.events), self.esp_name
            )
        return rows

    def is_for(self, events: list[AnymailTrackingEvent], esp_name: str) -> bool:
        """Whether it was prepared from exactly these events."""
        return (
            esp_name == self.esp_name
            and len(events) == len(self.events)
            and all(ours is theirs for ours, theirs in zip(self.events, events, strict=True))
        )


def link_pending(recipients: Iterable[Recipient] | None = None) -> int:
    """Link events that arrived before these recipients were sent; return how many.

    Call it after storing the recipients' ESP message ids. Without
    ``recipients`` it retries every event left unlinked in the last day.
    """
    if recipients is None:
        # Unlinked events of mail another system sent through the same ESP
        # account never link; ask the database for the ones that now can.
        recent = Event.objects.filter(
            message__isnull=True, received_at__gte=timezone.now() - PENDING_WINDOW
        )
        ours = Recipient.objects.exclude(esp_message_id="").values("esp_message_id")
        ids = set(recent.filter(esp_message_id__in=ours).values_list("esp_message_id", flat=True))
    else:
        ids = {recipient.esp_message_id for recipient in recipients} - {""}
    if not ids or not Event.objects.filter(message__isnull=True, esp_message_id__in=ids).exists():
        return 0
    linker = _Linker.load(ids)
    unlinked = event_queries.unlinked_events(linker.messages.keys())
    linked = [row for row in unlinked if linker.link(row)]
    with transaction.atomic():
        _write(linker, linked)
    if linked:
        logger.info(
            "Linked %d event(s) that arrived before their message was recorded", len(linked)
        )
    return len(linked)


def _write(
    linker: "_Linker",
    pending: list[Event],
    insert: PreparedInsert[Event] | None = None,
    counts: Counter | None = None,
) -> list[Event]:
    """Link the pending events, insert the new rows, apply both; return the rows inserted.

    ``counts``: the insert's rows' metrics, worked out beforehand; they hold
    unless a concurrent request recorded some of the rows first.
    """
    linker.lock()
    if pending:
        Event.objects.bulk_update(pending, ["message", "recipient"])
    # An event a concurrent request recorded meanwhile is skipped.
    rows = insert.execute() if insert else []
    if counts is None or len(rows) != len(insert.objs):
        counts = metrics.event_counts(rows)
    metrics.increment(counts)
    _apply_status([*pending, *rows], linker)
    _apply_suppressions(rows)
    return rows


# Collecting the events of one request
# ------------------------------------------------------------------------------

_collected: ContextVar[list[tuple[AnymailTrackingEvent, str]] | None] = ContextVar(
    "transactional_collected_events", default=None
)


@contextmanager
def batch(prepared: Recording | None = None) -> Iterator[None]:
    """Collect the events received inside the block; record them in bulk as it exits.

    Nothing is recorded if the block raises. Open it inside the request's
    transaction, so the events commit with it, and pass what ``prepare()``
    made of the same events before the transaction opened, so that only the
    writes happen inside it::

        recording = events.prepare(parsed, esp_name)
        with transaction.atomic(), events.batch(recording):
            ...  # send the tracking signal for each of the parsed events

    Without ``prepared`` (or if the events received differ from the ones it
    was made from) the reads happen as the block exits.
    """
    collected: list[tuple[AnymailTrackingEvent, str]] = []
    token = _collected.set(collected)
    try:
        yield
    finally:
        _collected.reset(token)
    for esp_name, group in groupby(collected, key=itemgetter(1)):
        received = [event for event, _ in group]
        if prepared is not None and prepared.is_for(received, esp_name):
            with transaction.atomic(savepoint=False):
                prepared.write()
        else:
            record_many(received, esp_name)


def receive(event: AnymailTrackingEvent, esp_name: str) -> None:
    """Record ``event`` now, or when the enclosing ``batch()`` exits."""
    collected = _collected.get()
    if collected is None:
        record(event, esp_name)
    else:
        collected.append((event, esp_name))


# Building rows
# ------------------------------------------------------------------------------


def _build(event: AnymailTrackingEvent, esp: str, *, received_at: datetime) -> Event:
    """Return an unsaved Event row for one anymail event."""
    payload = esps.plain(event.esp_event)
    # Every field is given: each one left to its default costs Django's
    # constructor a KeyError, a quarter of its time.
    return Event(
        id=None,
        message_id=None,
        recipient_id=None,
        received_at=received_at,
        esp=esp,
        # SES shares one id among a notification's addresses; the unique key
        # includes the address. Without an id, the payload's hash stands in.
        event_id=_text(event.event_id, 255) or esps.canonical_hash(payload),
        address=normalize_address(_text(event.recipient, 320)),
        event_type=_text(event.event_type, 32) or "unknown",
        esp_message_id=_text(event.message_id, 255),
        timestamp=_aware(event.timestamp),
        reject_reason=_text(event.reject_reason, 32),
        description=_text(event.description),
        mta_response=_text(event.mta_response),
        tags=_tags(event.tags),
        metadata=esps.clean_metadata(esp, event.metadata),
        user_agent=_text(event.user_agent),
        click_url=_text(event.click_url),
        raw=esps.raw_payload(esp, payload),
    )


# anymail passes the ESP's values through unchecked: a field the ESP (or an
# attacker with the webhook secret) fills with a list must not fail the post.


def _text(value: Any, length: int | None = None) -> str:
    """Return ``value`` as text for a string column ("" for null, lists and objects)."""
    text = (
        str(value) if isinstance(value, str | int | float) and not isinstance(value, bool) else ""
    )
    return text[:length]


def _aware(value: Any) -> datetime | None:
    if not isinstance(value, datetime):
        return None
    return value if timezone.is_aware(value) else value.replace(tzinfo=UTC)


def _tags(tags: Any) -> list[str]:
    """Return tags as a list of strings (SendGrid may send one bare string)."""
    if isinstance(tags, str):
        return [tags]
    if not isinstance(tags, list | tuple):
        return []
    return [text for tag in tags if (text := _text(tag))]


def _key(row: Event) -> Key:
    return row.event_id, row.address


def _unique(rows: Iterable[Event]) -> list[Event]:
    """Return ``rows`` without repeats of the same event and address."""
    unique: dict[Key, Event] = {}
    for row in rows:
        unique.setdefault(_key(row), row)
    return list(unique.values())


def _not_recorded(esp: str, rows: list[Event], recorded: set[Key]) -> list[Event]:
    """Return the rows whose event is not recorded yet.

    Where an event id names one address (esps.ONE_ADDRESS_PER_EVENT_ID), a
    recorded id with another address is a replay, not a new event.
    """
    if esp in esps.ONE_ADDRESS_PER_EVENT_ID:
        recorded_ids = {event_id for event_id, _ in recorded}
        return [row for row in rows if row.event_id not in recorded_ids]
    return [row for row in rows if _key(row) not in recorded]


def _read_events(esp: str, rows: list[Event]) -> tuple[set[Key], list[Event]]:
    """Return the recorded events with the ids of ``rows``, and the unlinked ones of their messages.

    One query for both: a webhook post is a single event as often as not.
    """
    event_ids = {row.event_id for row in rows}
    message_ids = {row.esp_message_id for row in rows} - {""}
    found = event_queries.recorded_or_unlinked_events(esp, event_ids, message_ids)
    recorded = {_key(row) for row in found if row.esp == esp and row.event_id in event_ids}
    unlinked = [
        row for row in found if row.message_id is None and row.esp_message_id in message_ids
    ]
    return recorded, unlinked


# Linking
# ------------------------------------------------------------------------------


@dataclass
class _Linker:
    """Our recipients for a set of ESP message ids, for linking events to them."""

    messages: dict[str, int] = field(default_factory=dict)
    recipients: dict[Key, list[Recipient]] = field(default_factory=lambda: defaultdict(list))

    @classmethod
    def load(cls, esp_message_ids: set[str]) -> "_Linker":
        """Load the recipients sent with these ESP message ids (and their status now)."""
        linker = cls()
        ids = esp_message_ids - {""}
        for recipient in event_queries.recipients_sent_as(ids):
            linker.messages[recipient.esp_message_id] = recipient.message_id
            linker.recipients[recipient.esp_message_id, recipient.address].append(recipient)
        return linker

    def lock(self) -> None:
        """Lock the recipients for the transaction (PostgreSQL) and refresh their status."""
        recipients = [r for found in self.recipients.values() for r in found]
        current = event_queries.lock_recipients([recipient.pk for recipient in recipients])
        for recipient in recipients:
            recipient.status = current.get(recipient.pk, recipient.status)

    def link(self, row: Event) -> bool:
        """Point ``row`` at its message and, if it is surely theirs, its recipient."""
        message_id = self.messages.get(row.esp_message_id)
        if message_id is None:
            return False
        row.message_id = message_id
        if esps.attributable(row.esp, row.event_type, row.raw):
            found = self.recipients.get((row.esp_message_id, row.address))
            row.recipient = found[0] if found else None
        return True

    def recipients_of(self, row: Event) -> list[Recipient]:
        """Return every recipient row the event is about (an address may repeat as to and bcc)."""
        if row.recipient_id is None:
            return []
        return self.recipients.get((row.esp_message_id, row.address), [])


# Effects
# ------------------------------------------------------------------------------


def _apply_status(rows: list[Event], linker: _Linker) -> None:
    """Raise each linked recipient's status by the events' precedence.

    On SQLite the statuses were read before the transaction: each UPDATE
    only moves a recipient up, so a request that raised it higher meanwhile
    wins. (On PostgreSQL ``_Linker.lock()`` read them again, under lock.)
    """
    now = timezone.now()
    signals.announce_events(rows, linker.recipients_of)  # before the statuses below change
    changed: dict[int, Recipient] = {}
    for row in rows:
        for recipient in linker.recipients_of(row):
            status = next_status(recipient.status, row.event_type)
            if status != recipient.status:
                recipient.status, recipient.updated_at = status, now
                changed[recipient.pk] = recipient
    # One UPDATE per new status: cheaper than bulk_update's CASE per row.
    by_status: dict[str, list[int]] = defaultdict(list)
    for recipient in changed.values():
        by_status[recipient.status].append(recipient.pk)
    for status, pks in by_status.items():
        event_queries.raise_status(pks, status, below=statuses_below(status), now=now)


def _apply_suppressions(rows: list[Event]) -> None:
    """Suppress the addresses of hard bounces, complaints, unsubscribes and invalid addresses.

    An unsubscribe stops only the stream of the message it came from (the
    default stream when the message is not known); everything else stops
    every stream.
    """
    wanted = []
    for row in rows:
        reason = esps.suppression_reason(row.esp, row.event_type, row.raw)
        if reason and row.address:
            wanted.append(
                Suppression(address=row.address, reason=reason, source=row.esp, event=row)
            )
    unsubscribes = [row for row in wanted if row.reason == Suppression.Reason.UNSUBSCRIBED]
    if unsubscribes:
        linked = {row.event.message_id for row in unsubscribes} - {None}
        stream_of = dict(Message.objects.filter(pk__in=linked).values_list("pk", "stream")) if linked else {}
        for row in unsubscribes:
            row.stream = stream_of.get(row.event.message_id, DEFAULT_STREAM)
    if wanted:
        suppress_many(wanted)
