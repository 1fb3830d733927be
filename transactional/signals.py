"""Public signals: what happened to mail, sent once the change is committed.

Connect receivers in your ``AppConfig.ready()`` (docs/signals.md has a
worked example). Every signal here is sent from a ``transaction.on_commit``
callback registered by the code that records the change, so

- a receiver never hears of a change that was rolled back, and sees the
  rows as they are after the commit (``status`` already updated);
- a receiver cannot undo, delay past the commit, or break the recording:
  each is called with ``send_robust()``; an exception is logged (the
  receiver's name, the signal, the instance) and the next receiver still
  runs, as does the rest of the delivery run or webhook post;
- one group of results (up to a delivery batch, or one webhook post) is one
  callback, and nothing at all is done for a signal nobody listens to.

Instances are read again after the commit, one query per group (the
message's ``payload`` is deferred: it loads if you touch it). Delivery is at
least once, like the ESPs' own webhooks: a message sent again after a lost
lease is announced again, so make receivers idempotent.

The hooks below (``announce_*``) are what the outbox, the delivery run, the
event recorder and the suppression list call; they are not public API.
"""

import logging
from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import Any

from django.db import transaction
from django.db.models import QuerySet
from django.dispatch import Signal

from . import db_limits
from .models import Event, Message, Recipient, Suppression
from .status import next_status

logger = logging.getLogger(__name__)

message_queued = Signal(use_caching=True)
"""A message was accepted into the outbox (``send_mail()``, ``EmailMessage.send()``).

Keyword arguments: ``sender`` (``Message``), ``message`` (the ``Message``,
status ``queued``), ``recipients`` (its ``Recipient`` rows, those skipped
because they are suppressed included, with status ``suppressed``).

Not sent for a message whose every recipient is suppressed (it is stored
with status ``suppressed`` and never sent; nothing more will happen to it),
nor for a repeat of an idempotency key already accepted (no new message).
"""

message_sent = Signal(use_caching=True)
"""The provider accepted a message.

Keyword arguments: ``sender`` (``Message``), ``message`` (status ``sent``,
``sent_at`` set), ``recipients`` (every ``Recipient`` of it, with the ESP
message id), ``provider`` (the name in ``EMAIL_PROVIDERS`` that took it).
Accepted is not delivered: ``recipient_status_changed`` follows as the ESP
reports. An ESP may accept the message and still reject some addresses;
those recipients are ``rejected`` or ``failed``.
"""

message_failed = Signal(use_caching=True)
"""Delivery gave up on a message for good: status ``failed``.

Keyword arguments: ``sender`` (``Message``), ``message`` (``last_error``
holds the provider's words), ``recipients`` (every ``Recipient``; those not
suppressed are now ``failed``), ``error`` (the exception), ``reason``
(``"permanent error"``, ``"gave up after N attempt(s)"`` or ``"too old to
retry"``).

A transient failure that will be retried sends nothing: the message is
``retrying`` and ends ``sent`` or ``failed``, each with its signal. A
failed message an operator retries (``outbox retry``) and that is then sent
sends ``message_sent``.
"""

recipient_status_changed = Signal(use_caching=True)
"""A recipient's status moved (docs/webhooks-status.md: by precedence, never down).

Keyword arguments: ``sender`` (``Recipient``), ``recipient`` (the row, with
``recipient.message`` loaded), ``old_status``, ``new_status`` (the status
this change set; ``recipient.status`` is the one read after the commit,
which a concurrent change may have moved further), ``event`` (the ``Event``
that caused it, or ``None`` when delivery did: sent, rejected, failed,
suppressed since it was queued, blocked or redirected by staging safety).

Several events about one recipient in one webhook post send it once, from
the first status to the last, with the event that set the last.
"""

address_suppressed = Signal(use_caching=True)
"""An address went on the suppression list (for every stream, or for one).

Keyword arguments: ``sender`` (``Suppression``), ``suppression`` (the row:
``address``, ``stream`` (``""``: every stream), ``reason``, ``source``),
``event`` (the ``Event`` that caused it: a hard bounce, complaint,
unsubscribe or invalid-address rejection; ``None`` when added by the admin,
an import, ``suppression sync`` or the unsubscribe page and its mailto).

Only for rows that are new: an address already covered sends nothing.
"""

#: (signal, sender, keyword arguments) of one send.
Send = tuple[Signal, type, dict[str, Any]]


def listening(signal: Signal, sender: type) -> bool:
    """Whether any receiver would hear ``signal`` from ``sender`` (a cached lookup)."""
    return signal.has_listeners(sender)


def _after_commit(build: Callable[[], Iterable[Send]]) -> None:
    """Once the transaction commits, build the sends (reads allowed) and make them."""
    transaction.on_commit(lambda: _send_all(build()), robust=True)


def _send_all(sends: Iterable[Send]) -> None:
    for signal, sender, kwargs in sends:
        for receiver, response in signal.send_robust(sender, **kwargs):
            if isinstance(response, Exception):
                # django.dispatch logged the traceback; this says which of ours it was.
                logger.error(
                    "Receiver %s of transactional.signals.%s raised %s: %s (about %r)",
                    _name(receiver), _signal_name(signal), type(response).__name__, response,
                    next(iter(kwargs.values()), None),
                )


def _name(receiver: Any) -> str:
    module = getattr(receiver, "__module__", None)
    name = getattr(receiver, "__qualname__", None) or repr(receiver)
    return f"{module}.{name}" if module else name


def _signal_name(signal: Signal) -> str:
    return next((name for name, value in globals().items() if value is signal), repr(signal))


# Reading the rows again after the commit
# ------------------------------------------------------------------------------


def _messages(ids: Iterable[int]) -> dict[int, Message]:
    return Message.objects.defer("payload").in_bulk(list(set(ids)))


def _recipients_of(messages: dict[int, Message]) -> dict[int, list[Recipient]]:
    """Each message's recipients, each with its ``message`` set (no query per row)."""
    found: dict[int, list[Recipient]] = defaultdict(list)
    for recipient in Recipient.objects.filter(message_id__in=list(messages)).order_by("pk"):
        recipient.message = messages[recipient.message_id]
        found[recipient.message_id].append(recipient)
    return found


def _recipients(pks: Iterable[int]) -> dict[int, Recipient]:
    return Recipient.objects.select_related("message").defer("message__payload").in_bulk(list(set(pks)))


def _status_sends(changes: dict[int, tuple[str, str, Event | None]],
                  fresh: dict[int, Recipient]) -> list[Send]:
    return [
        (recipient_status_changed, Recipient,
         {"recipient": fresh[pk], "old_status": old, "new_status": new, "event": event})
        for pk, (old, new, event) in changes.items()
        if pk in fresh
    ]


# Hooks: outbox.py
# ------------------------------------------------------------------------------


def queued_collector() -> list[tuple[Message, list[Recipient]]] | None:
    """A list for ``enqueue()`` to fill with what it queued; None if nobody listens."""
    return [] if listening(message_queued, Message) else None


def announce_queued(queued: list[tuple[Message, list[Recipient]]] | None) -> None:
    """Send ``message_queued`` for each stored message after the commit (the instances are fresh)."""
    if queued:
        _after_commit(lambda: [
            (message_queued, Message, {"message": message, "recipients": recipients})
            for message, recipients in queued
        ])


# Hooks: delivery.py
# ------------------------------------------------------------------------------


def statuses(rows: list[Recipient]) -> dict[int, str]:
    """The recipients' statuses before delivery records a group ({} if nobody listens)."""
    if not listening(recipient_status_changed, Recipient):
        return {}
    return {row.pk: row.status for row in rows}


def announce_sent(results: list, recipients: list[Recipient], before: dict[int, str]) -> None:
    """``message_sent`` for each sent result, then its recipients' changes.

    ``results``: delivery's ``Result`` of each message sent; ``recipients``:
    the rows it wrote; ``before``: their statuses before (``statuses()``). A
    row delivery created (a staging redirect target) is not a change.
    """
    sent = listening(message_sent, Message)
    if not sent and not before:
        return
    changes = {
        r.pk: (before[r.pk], r.status, None)
        for r in recipients if r.pk in before and before[r.pk] != r.status
    }
    providers = {result.message_id: result.provider for result in results}
    if not sent and not changes:
        return

    def build() -> list[Send]:
        messages = _messages(providers)
        recipients_of = _recipients_of(messages)
        fresh = {r.pk: r for found in recipients_of.values() for r in found}
        sends: list[Send] = []
        by_message: dict[int, dict] = defaultdict(dict)
        for pk, change in changes.items():
            if pk in fresh:
                by_message[fresh[pk].message_id][pk] = change
        for message_id, message in messages.items():
            if sent:
                sends.append((message_sent, Message, {
                    "message": message, "recipients": recipients_of[message_id],
                    "provider": providers[message_id],
                }))
            sends += _status_sends(by_message[message_id], fresh)
        return sends

    _after_commit(build)


def announce_moving(recipients: QuerySet, status: str) -> None:
    """Call before ``recipients.update(status=status)``: their change, after the commit."""
    if not listening(recipient_status_changed, Recipient):
        return
    changes = {pk: (old, status, None) for pk, old in recipients.exclude(status=status).values_list("pk", "status")}
    if changes:
        _after_commit(lambda: _status_sends(changes, _recipients(changes)))


def announce_failed(message: Message, error: BaseException, reason: str) -> None:
    """Call before the message's recipients become ``failed``: ``message_failed`` after the commit."""
    if listening(message_failed, Message):
        _after_commit(lambda: _failed_sends(message.pk, error, reason))
    announce_moving(message.recipients.exclude(status=Recipient.Status.SUPPRESSED), Recipient.Status.FAILED)


def _failed_sends(message_id: int, error: BaseException, reason: str) -> list[Send]:
    messages = _messages([message_id])
    if message_id not in messages:
        return []
    return [(message_failed, Message, {
        "message": messages[message_id], "recipients": _recipients_of(messages)[message_id],
        "error": error, "reason": reason,
    })]


# Hooks: events.py
# ------------------------------------------------------------------------------


def announce_events(rows: list[Event], recipients_of: Callable[[Event], list[Recipient]]) -> None:
    """Call before the events' statuses are applied: the changes they make, after the commit.

    Works out the same moves the recorder is about to make (``next_status``
    over the rows in order), from each recipient's first status to its last.
    """
    if not listening(recipient_status_changed, Recipient):
        return
    current: dict[int, str] = {}
    changes: dict[int, tuple[str, str, Event | None]] = {}
    for row in rows:
        for recipient in recipients_of(row):
            old = current.get(recipient.pk, recipient.status)
            status = next_status(old, row.event_type)
            if status != old:
                current[recipient.pk] = status
                first = changes.get(recipient.pk, (old,))[0]
                changes[recipient.pk] = (first, status, row)
    if changes:
        _after_commit(lambda: _status_sends(changes, _recipients(changes)))


# Hooks: suppression.py, admin.py
# ------------------------------------------------------------------------------


def announce_suppressed(added: list[Suppression]) -> None:
    """``address_suppressed`` for each new row, read again after the commit.

    ``bulk_create(ignore_conflicts=True)`` leaves rows without a primary key,
    and a concurrent request may have listed an address first: a row in the
    database that is not the one added here (another ``created_at`` or
    event) is that request's to announce.
    """
    if not added or not listening(address_suppressed, Suppression):
        return
    ours = {(row.address, row.stream): row for row in added}

    def build() -> list[Send]:
        streams = {stream for _, stream in ours}
        stored = [
            row
            for chunk in db_limits.chunks(sorted({address for address, _ in ours}))
            for row in Suppression.objects.filter(address__in=chunk, stream__in=streams)
        ]
        sends = []
        for row in stored:
            mine = ours.get((row.address, row.stream))
            if mine is None or (row.created_at, row.event_id) != (mine.created_at, mine.event_id):
                continue
            event = mine.event if mine.event_id is not None else None
            row.event = event  # the instance we have: no query for it
            sends.append((address_suppressed, Suppression, {"suppression": row, "event": event}))
        return sorted(sends, key=lambda send: send[2]["suppression"].pk)

    _after_commit(build)
