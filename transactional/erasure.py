"""Erasing one person's address and the personal data that came with it (GDPR).

``forget()`` replaces the address with a placeholder, ``forgotten:`` plus
the first 12 hex digits of its SHA-256, everywhere we keep it; empties the
bodies of the messages it received or appears in; and empties what ESPs told
us about it. The suppression list keeps an entry under the placeholder with
the full hash, which ``suppressed_among()`` matches, so the address is never
mailed again without being stored again.
"""

import json
import logging
import re
from dataclasses import dataclass

from django.db import transaction
from django.db.models import Q, QuerySet, TextField
from django.db.models.functions import Cast
from django.utils import timezone

from .models import Attempt, Event, Message, Recipient, Suppression, address_hash, normalize_address

logger = logging.getLogger(__name__)

PLACEHOLDER_PREFIX = "forgotten:"


@dataclass
class Erasure:
    """What ``forget()`` changed (or would change, in a dry run)."""

    placeholder: str
    messages_purged: int = 0
    subjects_blanked: int = 0
    senders_replaced: int = 0
    recipients_replaced: int = 0
    events_erased: int = 0
    other_events_emptied: int = 0
    #: "added", "replaced" (the entry held the address) or "kept" (already erased).
    suppression: str = ""


def placeholder_for(address: str) -> str:
    """Return what ``address`` is replaced with."""
    return PLACEHOLDER_PREFIX + address_hash(address)[:12]


def forget(address: str, *, dry_run: bool = False) -> Erasure:
    """Erase ``address`` from messages, recipients and events; keep it suppressed by hash."""
    address = normalize_address(address)
    erasure = Erasure(placeholder=placeholder_for(address))
    mention = _mention_pattern(address)
    with transaction.atomic():
        recipients = Recipient.objects.filter(address=address)
        esp_message_ids = set(
            recipients.exclude(esp_message_id="").values_list("esp_message_id", flat=True)
        )
        messages = set(recipients.values_list("message_id", flat=True)) | _messages_naming(
            address, mention
        )
        _erase_messages(address, messages, mention, erasure)
        erasure.recipients_replaced = recipients.update(
            address=erasure.placeholder, updated_at=timezone.now()
        )
        _erase_events(address, messages, esp_message_ids, erasure)
        erasure.suppression = _keep_suppressed(address, mention, erasure.placeholder)
        if dry_run:
            transaction.set_rollback(True)
    logger.info(
        "%s address %s: %d message body(ies), %d recipient(s), %d event(s)",
        "Would forget" if dry_run else "Forgot",
        erasure.placeholder,
        erasure.messages_purged,
        erasure.recipients_replaced,
        erasure.events_erased,
    )
    return erasure


def _mention_pattern(address: str) -> re.Pattern[str]:
    """Match ``address`` in text, but not inside a longer one (ann@ in joann@)."""
    return re.compile(rf"(?<![\w.+-]){re.escape(address)}(?![\w-]|\.\w)", re.IGNORECASE)


def _messages_naming(address: str, mention: re.Pattern[str]) -> set[int]:
    """Return the messages naming ``address`` in their body, subject or sender."""
    # The database narrows by substring; the pattern drops longer addresses.
    # Best effort for bodies: a base64 attachment hides the address.
    candidates = Message.objects.annotate(payload_text=Cast("payload", TextField())).filter(
        Q(payload_text__icontains=address)
        | Q(subject__icontains=address)
        | Q(from_email__icontains=address)
    )
    return {
        message.pk
        for message in candidates.only("pk", "payload", "subject", "from_email")
        if any(
            mention.search(text)
            for text in (json.dumps(message.payload), message.subject, message.from_email)
        )
    }


def _erase_messages(
    address: str, messages: set[int], mention: re.Pattern[str], erasure: Erasure
) -> None:
    rows = Message.objects.filter(pk__in=messages)
    erasure.messages_purged = rows.filter(payload__isnull=False).update(
        payload=None, purged_at=timezone.now()
    )
    # The subject says what a person was mailed about: blank it when the
    # mail was theirs alone, or names them; keep it for shared mail.
    others = Recipient.objects.filter(message_id__in=messages).exclude(address=address)
    shared = set(others.values_list("message_id", flat=True))
    blank = [
        m.pk
        for m in rows.exclude(subject="").only("pk", "subject")
        if m.pk not in shared or mention.search(m.subject)
    ]
    erasure.subjects_blanked = Message.objects.filter(pk__in=blank).update(subject="")
    senders = [m.pk for m in rows.only("pk", "from_email") if mention.search(m.from_email)]
    erasure.senders_replaced = Message.objects.filter(pk__in=senders).update(
        from_email=erasure.placeholder
    )
    # Provider errors quote the address ("550 <ann@example.com>: no such user").
    _scrub(rows, "last_error", address, mention, erasure.placeholder)
    _scrub(
        Attempt.objects.filter(message_id__in=messages),
        "error",
        address,
        mention,
        erasure.placeholder,
    )


def _erase_events(
    address: str, messages: set[int], esp_message_ids: set[str], erasure: Erasure
) -> None:
    erasure.events_erased = Event.objects.filter(address=address).update(
        address=erasure.placeholder,
        raw=None,
        metadata={},
        user_agent="",
        click_url="",
        mta_response="",
        description="",
    )
    # Other recipients' events of the same mail: an SES payload lists every
    # destination and the headers, a Mailgun one the To header.
    others = Event.objects.filter(
        Q(message_id__in=messages) | Q(message__isnull=True, esp_message_id__in=esp_message_ids)
    )
    erasure.other_events_emptied = (
        others.exclude(address=erasure.placeholder).filter(raw__isnull=False).update(raw=None)
    )


def _keep_suppressed(address: str, mention: re.Pattern[str], placeholder: str) -> str:
    """Make sure the address stays suppressed, under its placeholder; say how."""
    row = Suppression.objects.for_addresses([address]).first()
    if row is None:
        Suppression.objects.create(
            address=placeholder,
            address_hash=address_hash(address),
            reason=Suppression.Reason.MANUAL,
            source="forget",
            note="Address erased on request; matched by its hash.",
        )
        return "added"
    if row.address == placeholder:
        return "kept"
    Suppression.objects.filter(pk=row.pk).update(
        address=placeholder,
        address_hash=address_hash(address),
        note=mention.sub(placeholder, row.note),
    )
    return "replaced"


def _scrub(
    rows: QuerySet, field: str, address: str, mention: re.Pattern[str], placeholder: str
) -> None:
    """Replace mentions of the address in one text field of ``rows``."""
    for pk, text in rows.filter(**{f"{field}__icontains": address}).values_list("pk", field):
        rows.model.objects.filter(pk=pk).update(**{field: mention.sub(placeholder, text)})
