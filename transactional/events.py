"""Recording ESP tracking events: once each, linked to our messages, acted on.

``record_many()`` is the one write path. In one transaction it

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

Webhook views send one anymail ``tracking`` signal per event. Inside
``batch()`` the receiver collects them and records them with one
``record_many()`` call as the block exits, a handful of queries per request
instead of several per event.
"""

import logging
from collections import defaultdict
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import groupby
from operator import itemgetter
from typing import Any

from anymail.signals import AnymailTrackingEvent
from django.db import IntegrityError, transaction
from django.utils import timezone

from . import esps
from .models import Event, Recipient, Suppression, normalize_address
from .status import next_status
from .suppression import suppress_many

logger = logging.getLogger(__name__)

#: How far back ``link_pending()`` without recipients looks for unlinked events.
PENDING_WINDOW = timedelta(days=1)
#: Inserts retried when a concurrent request records the same event first.
INSERT_ATTEMPTS = 3

Key = tuple[str, str]


def record(event: AnymailTrackingEvent, esp_name: str) -> Event | None:
    """Record one anymail tracking event; return its row, or None if nothing new was recorded."""
    recorded = record_many([event], esp_name)
    return recorded[0] if recorded else None


def record_many(events: Iterable[AnymailTrackingEvent], esp_name: str) -> list[Event]:
    """Record anymail tracking events from one ESP; return the rows new to us."""
    events = list(events)
    esp = esps.ESP_BY_ANYMAIL_NAME.get(esp_name)
    if esp is None:
        logger.warning(
            "Ignoring %d tracking event(s) from unsupported ESP %r", len(events), esp_name
        )
        return []
    # Building rows and skipping known ones are reads: done before the
    # transaction, which on SQLite holds the database's write lock.
    rows = _unrecorded(esp, _unique(_build(event, esp) for event in events))
    if not rows:
        logger.debug("All %d %s event(s) were recorded before", len(events), esp)
        return []
    # Part of the caller's transaction, if any; a race with a concurrent
    # request for the same event is settled by the unique constraint (_insert).
    with transaction.atomic(savepoint=False):
        linker = _Linker.load({row.esp_message_id for row in rows})
        earlier = _link_pending(linker)
        for row in rows:
            linker.link(row)
        rows = _insert(esp, rows)
        _apply_status([*earlier, *rows], linker)
        _apply_suppressions(rows)
    logger.debug("Recorded %d of %d %s event(s)", len(rows), len(events), esp)
    return rows


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
    with transaction.atomic():
        linker = _Linker.load(ids)
        linked = _link_pending(linker)
        _apply_status(linked, linker)
    if linked:
        logger.info(
            "Linked %d event(s) that arrived before their message was recorded", len(linked)
        )
    return len(linked)


# Collecting the events of one request
# ------------------------------------------------------------------------------

_collected: ContextVar[list[tuple[AnymailTrackingEvent, str]] | None] = ContextVar(
    "transactional_collected_events", default=None
)


@contextmanager
def batch() -> Iterator[None]:
    """Collect the events received inside the block; record them in bulk as it exits.

    Nothing is recorded if the block raises. Open it inside the request's
    transaction, so the events commit with it::

        with transaction.atomic(), events.batch():
            return super().post(request, *args, **kwargs)
    """
    collected: list[tuple[AnymailTrackingEvent, str]] = []
    token = _collected.set(collected)
    try:
        yield
    finally:
        _collected.reset(token)
    for esp_name, group in groupby(collected, key=itemgetter(1)):
        record_many([event for event, _ in group], esp_name)


def receive(event: AnymailTrackingEvent, esp_name: str) -> None:
    """Record ``event`` now, or when the enclosing ``batch()`` exits."""
    collected = _collected.get()
    if collected is None:
        record(event, esp_name)
    else:
        collected.append((event, esp_name))


# Building rows
# ------------------------------------------------------------------------------


def _build(event: AnymailTrackingEvent, esp: str) -> Event:
    """Return an unsaved Event row for one anymail event."""
    payload = esps.plain(event.esp_event)
    return Event(
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


def _unrecorded(esp: str, rows: list[Event]) -> list[Event]:
    """Return the rows not recorded yet."""
    recorded = set(
        Event.objects.filter(esp=esp, event_id__in={row.event_id for row in rows})
        .order_by()
        .values_list("event_id", "address")
    )
    return [row for row in rows if _key(row) not in recorded]


def _insert(esp: str, rows: list[Event]) -> list[Event]:
    """Insert the rows; return those inserted (a concurrent request may win some)."""
    for _ in range(INSERT_ATTEMPTS - 1):
        try:
            with transaction.atomic():
                return Event.objects.bulk_create(rows)
        except IntegrityError:
            # The same event in two requests at once (an ESP retrying a slow
            # post): the other one committed it. Skip it and try again.
            rows = _unrecorded(esp, rows)
            if not rows:
                return []
    return Event.objects.bulk_create(rows)


# Linking
# ------------------------------------------------------------------------------


@dataclass
class _Linker:
    """Our recipients for a set of ESP message ids, for linking events to them."""

    messages: dict[str, int] = field(default_factory=dict)
    recipients: dict[Key, list[Recipient]] = field(default_factory=lambda: defaultdict(list))

    @classmethod
    def load(cls, esp_message_ids: set[str]) -> "_Linker":
        """Load (and lock) the recipients sent with these ESP message ids."""
        linker = cls()
        ids = esp_message_ids - {""}
        if ids:
            found = Recipient.objects.select_for_update().filter(esp_message_id__in=ids).order_by()
            for recipient in found.only("pk", "message_id", "address", "status", "esp_message_id"):
                linker.messages[recipient.esp_message_id] = recipient.message_id
                linker.recipients[recipient.esp_message_id, recipient.address].append(recipient)
        return linker

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


def _link_pending(linker: _Linker) -> list[Event]:
    """Link the unlinked events for the linker's messages; return them."""
    if not linker.messages:
        return []
    pending = [
        row
        for row in Event.objects.filter(message__isnull=True, esp_message_id__in=linker.messages)
        .order_by()
        .only("pk", "esp", "event_type", "esp_message_id", "address", "raw")
        if linker.link(row)
    ]
    Event.objects.bulk_update(pending, ["message", "recipient"])
    return pending


# Effects
# ------------------------------------------------------------------------------


def _apply_status(rows: list[Event], linker: _Linker) -> None:
    """Raise each linked recipient's status by the events' precedence."""
    now = timezone.now()
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
        Recipient.objects.filter(pk__in=pks).update(status=status, updated_at=now)


def _apply_suppressions(rows: list[Event]) -> None:
    """Suppress the addresses of hard bounces, complaints, unsubscribes and invalid addresses."""
    wanted = []
    for row in rows:
        reason = esps.suppression_reason(row.esp, row.event_type, row.raw)
        if reason and row.address:
            wanted.append(
                Suppression(address=row.address, reason=reason, source=row.esp, event=row)
            )
    if wanted:
        suppress_many(wanted)
