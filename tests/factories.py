"""Outbox rows in any state, for tests that need more than the send path gives."""

from collections.abc import Sequence
from datetime import datetime
from email.utils import make_msgid
from typing import Any

from django.core.mail import EmailMessage
from django.utils import timezone

from transactional.models import Attempt, Message, Recipient
from transactional.serialization import serialize

FROM = "Acme <no-reply@acme.test>"


def make_message(
    *,
    status: str = Message.Status.QUEUED,
    to: Sequence[str] = ("ann@example.com",),
    subject: str = "Your receipt",
    recipient_status: str = Recipient.Status.QUEUED,
    created_at: datetime | None = None,
    updated_at: datetime | None = None,
    **fields: Any,
) -> Message:
    """Store a message as the outbox would, in ``status``; extra ``fields`` go on the row."""
    now = timezone.now()
    email = EmailMessage(
        subject, "Thank you for your order.", FROM, list(to), headers={"Message-ID": make_msgid()}
    )
    defaults = {
        "from_email": FROM,
        "subject": subject,
        "message_id": email.extra_headers["Message-ID"],
        "payload": serialize(email),
        "created_at": created_at or now,
        "next_attempt_at": (created_at or now) if status in Message.WAITING else None,
    }
    message = Message.objects.create(status=status, **(defaults | fields))
    Recipient.objects.bulk_create(
        Recipient(message=message, address=address, kind=Recipient.Kind.TO, status=recipient_status)
        for address in to
    )
    if updated_at is not None:  # auto_now would overwrite it on save
        Message.objects.filter(pk=message.pk).update(updated_at=updated_at)
        message.refresh_from_db()
    return message


def make_attempt(message: Message, **fields: Any) -> Attempt:
    """Log one attempt at ``message``, numbered after the last."""
    number = message.attempt_log.count() + 1
    return Attempt.objects.create(message=message, number=number, provider="locmem", **fields)
