"""Accepting mail into the outbox: what ``send_mail()`` does with our backend.

``enqueue()`` stores each message with its recipients, drops suppressed
addresses, and asks for a delivery run once the transaction commits.
"""

import copy
import logging
from collections.abc import Sequence
from datetime import UTC, date, datetime, time, timedelta
from email.message import Message as MIMEMessagePart
from email.utils import getaddresses, make_msgid

from django.core.mail import EmailMessage
from django.core.mail.message import DNS_NAME
from django.db import IntegrityError, transaction
from django.utils import timezone

from . import metrics, signals, tasks, unsubscribe
from .bulk_insert import insert
from .conf import get_setting, streams
from .exceptions import MessageTooLarge
from .models import DEFAULT_STREAM, Message, Recipient, normalize_address
from .serialization import serialize
from .suppression import suppressed_among

logger = logging.getLogger(__name__)

#: Attributes callers may set on a message to steer the outbox (not sent on).
IDEMPOTENCY_KEY = "idempotency_key"
BYPASS_SUPPRESSION = "bypass_suppression"
PRIORITY = "priority"
STREAM = "stream"


def enqueue(messages: Sequence[EmailMessage]) -> int:
    """Store the messages for delivery; return how many were accepted.

    A message counts as accepted if at least one recipient will be mailed,
    or if it repeats an idempotency key already accepted.
    """
    accepted = 0
    queued = signals.queued_collector()  # None unless someone listens to message_queued
    with transaction.atomic():
        for message in messages:
            accepted += _store(message, queued)
        signals.announce_queued(queued)  # before the kick: an immediate run sends at once
        if accepted:
            transaction.on_commit(tasks.kick)
    return accepted


def _store(email: EmailMessage, queued: list | None = None) -> bool:
    """Store one message; return whether it counts as accepted (``enqueue()``).

    A message stored for sending is added to ``queued``, if given, with its recipients.
    """
    if not email.recipients():
        return False
    key = getattr(email, IDEMPOTENCY_KEY, None)
    if key and _seen_recently(key):
        logger.info("Not sending again: idempotency key %r was accepted before", key)
        return True

    priority = _priority(email)
    stream = _stream(email)
    email = _with_message_id(email)
    recipients = _recipients(email)
    if stream != DEFAULT_STREAM:
        if len(recipients) != 1:
            raise ValueError(
                f"Message {email.subject!r} is on stream {stream!r} and has {len(recipients)} "
                "recipients: a message on a stream other than 'transactional' goes to one "
                "address, which its one-click unsubscribe link names. Send one per recipient."
            )
        email = unsubscribe.with_headers(email, recipients[0].address, stream)
    limit = get_setting("MAX_MESSAGE_BYTES")
    size = _size_upper_bound(email)
    if size > limit:  # only then is rendering the whole MIME message worth it
        size = len(email.message().as_bytes())
    if size > limit:
        raise MessageTooLarge(
            f"Message {email.subject!r} is {size:,} bytes encoded, over the "
            f"{limit:,}-byte limit (TRANSACTIONAL_MAX_MESSAGE_BYTES)."
        )

    bypass = bool(getattr(email, BYPASS_SUPPRESSION, False))
    suppressed = set() if bypass else suppressed_among((r.address for r in recipients), stream=stream)
    for recipient in recipients:
        if recipient.address in suppressed:
            recipient.status = Recipient.Status.SUPPRESSED
    everyone_suppressed = len(suppressed) > 0 and all(r.address in suppressed for r in recipients)

    now = timezone.now()
    send_at = _send_at(email)
    message = Message(
        status=Message.Status.SUPPRESSED if everyone_suppressed else Message.Status.QUEUED,
        priority=priority,
        stream=stream,
        from_email=email.from_email,
        subject=email.subject,
        message_id=email.extra_headers["Message-ID"],
        payload=serialize(email),
        size=size,
        send_at=send_at,
        next_attempt_at=max(now, send_at) if send_at else now,
        idempotency_key=key or None,
        bypass_suppression=bypass,
        created_at=now,
    )
    if everyone_suppressed:
        message.last_error = "Every recipient is on the suppression list."
        message.next_attempt_at = None
    if key:
        try:
            with transaction.atomic():
                insert([message])
        except IntegrityError:
            if not Message.objects.filter(idempotency_key=key).exists():
                raise
            logger.info("Not sending again: idempotency key %r was accepted concurrently", key)
            return True
    else:
        insert([message])
    for recipient in recipients:
        recipient.message = message
    insert(recipients)
    metrics.count_messages(message.status, stream=stream)  # "queued", or "suppressed" when everyone is
    if everyone_suppressed:
        logger.info("Message %s not sent: every recipient is suppressed", message.pk)
    elif queued is not None:
        queued.append((message, recipients))
    return not everyone_suppressed


#: Base64 with line breaks: 4 bytes out per 3 in, plus CRLF every 76.
BASE64_GROWTH = 4 / 3 * 78 / 76
#: Quoted-printable, Django's choice for non-ASCII text: "=XX" per byte, soft breaks.
QUOTED_PRINTABLE_GROWTH = 3 * 78 / 75
#: Headers, boundaries and part headers, generously.
MIME_OVERHEAD_BYTES = 2048


def _size_upper_bound(email: EmailMessage) -> int:
    """Return a cheap upper bound of the encoded size, as providers count it.

    Binary parts count as base64, non-ASCII text as quoted-printable (the
    largest encodings Django uses for each), so a message under the limit
    here is under it for real, without rendering it.
    """
    texts = [email.body, *(content for content, _ in getattr(email, "alternatives", []))]
    texts += [str(v) for v in email.extra_headers.values()]
    texts += [email.subject, email.from_email or "", *email.to, *email.cc, *email.reply_to]
    binaries = []
    for attachment in email.attachments:
        # A MIME part: MIMEBase, or Django 6's email.message.MIMEPart (anymail's inline images).
        content = attachment if isinstance(attachment, MIMEMessagePart) else attachment[1]
        (texts if isinstance(content, str) else binaries).append(content)
    size = sum(_text_size(text) for text in texts if isinstance(text, str))
    size += sum(len(_as_bytes(content)) * BASE64_GROWTH for content in binaries)
    return int(size) + MIME_OVERHEAD_BYTES * (len(email.attachments) + 2)


def _text_size(text: str) -> float:
    encoded = text.encode()
    growth = 1.1 if encoded.isascii() else QUOTED_PRINTABLE_GROWTH
    return len(encoded) * growth


def _as_bytes(content) -> bytes:
    if isinstance(content, bytes):
        return content
    if isinstance(content, str):
        return content.encode()
    if isinstance(content, EmailMessage):  # a message/rfc822 attachment
        return content.message().as_bytes()
    if hasattr(content, "as_bytes"):
        return content.as_bytes()
    return str(content).encode()


def _seen_recently(key: str) -> bool:
    """Return True if ``key`` was accepted within the window; free it if older."""
    window = timedelta(seconds=get_setting("IDEMPOTENCY_WINDOW_SECONDS"))
    earlier = Message.objects.filter(idempotency_key=key).only("created_at").first()
    if earlier is None:
        return False
    if earlier.created_at >= timezone.now() - window:
        return True
    Message.objects.filter(pk=earlier.pk).update(idempotency_key=None)
    return False


def _with_message_id(email: EmailMessage) -> EmailMessage:
    """Return a copy with a Message-ID header fixed now, for every attempt."""
    email = copy.copy(email)
    headers = dict(email.extra_headers)
    existing = next((name for name in headers if name.lower() == "message-id"), None)
    # On the sender's domain: it says nothing about our hosts, and some
    # spam filters dislike a Message-ID domain unrelated to From.
    domain = getaddresses([email.from_email])[0][1].rpartition("@")[2] if email.from_email else ""
    message_id = headers.pop(existing) if existing else make_msgid(domain=domain or DNS_NAME)
    email.extra_headers = {**headers, "Message-ID": message_id}
    return email


def _recipients(email: EmailMessage) -> list[Recipient]:
    rows = []
    for kind, addresses in (("to", email.to), ("cc", email.cc), ("bcc", email.bcc)):
        for _, address in getaddresses(list(addresses)):
            if address:
                rows.append(Recipient(address=normalize_address(address), kind=kind))
    return rows


def _priority(email: EmailMessage) -> int:
    """Return the message's ``priority`` attribute ("high", "normal", "low") as stored."""
    value = getattr(email, PRIORITY, None)
    if value is None:
        return Message.Priority.NORMAL
    if isinstance(value, Message.Priority):
        return value
    names = {label: number for number, label in Message.Priority.choices}
    if isinstance(value, str) and value.strip().lower() in names:
        return names[value.strip().lower()]
    raise ValueError(
        f"Message {email.subject!r} has priority={value!r}; use one of "
        f"{', '.join(map(repr, names))} (or transactional.models.Message.Priority)."
    )


def _stream(email: EmailMessage) -> str:
    """Return the message's ``stream`` attribute, one of TRANSACTIONAL_STREAMS."""
    value = getattr(email, STREAM, None)
    if value is None:
        return DEFAULT_STREAM
    known = streams()
    if isinstance(value, str) and value.strip().lower() in known:
        return value.strip().lower()
    raise ValueError(
        f"Message {email.subject!r} has stream={value!r}; use one of {', '.join(map(repr, known))} "
        "(more are configured with TRANSACTIONAL_STREAMS)."
    )


def _send_at(email: EmailMessage) -> datetime | None:
    """Return anymail's ``send_at`` as an aware datetime, or None."""
    value = getattr(email, "send_at", None)
    if value is None or not isinstance(value, (datetime, date, int, float)):
        return None
    if isinstance(value, (int, float)):
        return datetime.fromtimestamp(value, tz=UTC)
    if not isinstance(value, datetime):
        value = datetime.combine(value, time.min)
    return value if timezone.is_aware(value) else timezone.make_aware(value)
