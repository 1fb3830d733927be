"""Telling ADMINS that mail failed, without flooding them during an outage.

Notices go through the delivery backend directly, like Django's
AdminEmailHandler in production, never through the outbox: the outbox may
be the thing that is broken. At most one notice per
TRANSACTIONAL_FAILURE_NOTICE_INTERVAL_SECONDS; the next one says how many
failures went unreported in between.
"""

import logging
from datetime import timedelta

from django.db import transaction
from django.utils import timezone

from . import mailers
from .conf import get_setting, provider_name
from .models import Message, OutboxState

logger = logging.getLogger(__name__)


def delivery_failed(message: Message, *, reason: str, error: str) -> bool:
    """Mail ADMINS about a failed message unless a notice went out recently."""
    skipped = _take_notice_slot()
    if skipped is None:
        return False
    subject = f"Mail delivery failed: message {message.pk} ({reason})"
    lines = [
        f"Message {message.pk} to {', '.join(message.recipients.values_list('address', flat=True))}",
        f"Subject: {message.subject}",
        f"Message-ID: {message.message_id}",
        f"Attempts: {message.attempts}",
        f"Error: {error}",
    ]
    if skipped:
        lines.append(f"\n{skipped} more failure(s) since the last notice were not mailed; see the admin.")
    try:
        mailers.mail_admins(subject, "\n".join(lines), using=provider_name())
    except Exception:
        logger.exception("Could not mail ADMINS about failed message %s", message.pk)
        return False
    return True


def _take_notice_slot() -> int | None:
    """Return failures skipped since the last notice, or None if too soon for another."""
    now = timezone.now()
    interval = timedelta(seconds=get_setting("FAILURE_NOTICE_INTERVAL_SECONDS"))
    with transaction.atomic():
        state, _ = OutboxState.objects.select_for_update().get_or_create(pk=1)
        if state.failure_notice_at and state.failure_notice_at > now - interval:
            state.failures_since_notice += 1
            state.save(update_fields=["failures_since_notice"])
            return None
        skipped = state.failures_since_notice
        state.failure_notice_at, state.failures_since_notice = now, 0
        state.save(update_fields=["failure_notice_at", "failures_since_notice"])
    return skipped
