"""Services for operators: queue figures, retry, cancel and retention.

The ``outbox`` management command, the admin actions and ``/healthz`` are
thin callers of these functions.
"""

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.apps import apps
from django.db import transaction
from django.db.models import Count, QuerySet
from django.utils import timezone

from . import tasks
from .conf import get_setting, providers
from .models import Event, Message, MessageQuerySet, ProviderState, Recipient

logger = logging.getLogger(__name__)

#: Statuses an operator may send again.
RETRYABLE = (Message.Status.FAILED, Message.Status.RETRYING)
#: Rows per transaction in purge(), so no transaction holds locks for long.
PURGE_CHUNK_SIZE = 1000


# Selectors
# ------------------------------------------------------------------------------


def status_counts() -> dict[str, int]:
    """Return the number of messages in each status, 0 for the empty ones."""
    rows = Message.objects.order_by().values_list("status").annotate(n=Count("pk"))
    return {status: 0 for status in Message.Status.values} | dict(rows)


def oldest_due_seconds(*, now: datetime | None = None) -> float | None:
    """Return how long the longest-waiting due message has been due, or None."""
    now = now or timezone.now()
    # By due time alone: due() puts high priority first.
    oldest = Message.objects.due(now).order_by("next_attempt_at").values_list("next_attempt_at", flat=True).first()
    return None if oldest is None else (now - oldest).total_seconds()


def failed_since(since: datetime) -> int:
    """Return how many messages failed since ``since``."""
    # delivery._finish() stamps updated_at when it records the failure.
    return Message.objects.failed().filter(updated_at__gte=since).count()


def provider_states() -> dict[str, dict[str, Any]]:
    """Return each configured provider's circuit breaker, in failover order."""
    rows = {row.provider: row for row in ProviderState.objects.filter(provider__in=list(providers()))}
    states = {}
    for name in providers():
        row = rows.get(name) or ProviderState(provider=name)
        states[name] = {
            "breaker": row.state,
            "failures": row.failures,
            "opened_at": row.opened_at.isoformat() if row.opened_at else None,
            "retry_at": row.retry_at.isoformat() if row.retry_at else None,
            "last_error": row.last_error,
        }
    return states


def select_messages(
    *,
    ids: list[int] | None = None,
    status: str | None = None,
    changed_since: datetime | None = None,
) -> MessageQuerySet:
    """Return the messages with these ids, or in ``status`` (changed since a time)."""
    queryset = Message.objects.all()
    if ids is not None:
        queryset = queryset.filter(pk__in=ids)
    if status is not None:
        queryset = queryset.filter(status=status)
    if changed_since is not None:
        queryset = queryset.filter(updated_at__gte=changed_since)
    return queryset


def queue_status(*, now: datetime | None = None) -> dict[str, Any]:
    """Return the queue figures and the alert thresholds they cross."""
    now = now or timezone.now()
    counts = status_counts()
    status = {
        "counts": counts,
        "sending": counts[Message.Status.SENDING],
        "oldest_due_seconds": oldest_due_seconds(now=now),
        "failed_last_hour": failed_since(now - timedelta(hours=1)),
        "providers": provider_states(),
    }
    return status | {"problems": _problems(status)}


def _problems(status: dict[str, Any]) -> list[str]:
    """Describe each alert threshold the figures are over."""
    problems = []
    oldest, max_oldest = status["oldest_due_seconds"], get_setting("ALERT_OLDEST_DUE_SECONDS")
    if oldest is not None and oldest > max_oldest:
        problems.append(
            f"The oldest due message has waited {oldest:.0f}s, over "
            f"TRANSACTIONAL_ALERT_OLDEST_DUE_SECONDS={max_oldest}: is a delivery worker running?"
        )
    failed, max_failed = status["failed_last_hour"], get_setting("ALERT_FAILED_LAST_HOUR")
    if failed > max_failed:
        problems.append(
            f"{failed} message(s) failed in the last hour, over "
            f"TRANSACTIONAL_ALERT_FAILED_LAST_HOUR={max_failed}: see last_error in the admin."
        )
    for name, state in status["providers"].items():
        if state["breaker"] != ProviderState.State.CLOSED:
            problems.append(
                f"The circuit breaker of {name} is {state['breaker']} (since {state['opened_at']}; "
                f"{state['last_error'][:200] or 'no error recorded'}): mail skips it until a probe "
                "goes through (admin: Providers)."
            )
    return problems


# Actions
# ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Retried:
    """What retry() did."""

    requeued: int
    #: Messages left alone because their body was purged: there is nothing to send.
    purged: int


def retry(queryset: MessageQuerySet) -> Retried:
    """Queue the failed and retrying messages among ``queryset`` for delivery now."""
    now = timezone.now()
    candidates = queryset.filter(status__in=RETRYABLE)
    purged = candidates.filter(payload__isnull=True).count()
    with transaction.atomic():
        # Locked, so a concurrent purge or worker waits for this to commit.
        sendable = candidates.filter(payload__isnull=False).select_for_update()
        ids = list(sendable.values_list("pk", flat=True))
        # `attempts` keeps counting: attempt numbers stay unique, and a message
        # that already used up TRANSACTIONAL_MAX_ATTEMPTS gets one more try.
        requeued = Message.objects.filter(pk__in=ids, status__in=RETRYABLE).update(
            status=Message.Status.QUEUED, next_attempt_at=now, updated_at=now
        )
        Recipient.objects.filter(message_id__in=ids, status=Recipient.Status.FAILED).update(
            status=Recipient.Status.QUEUED, updated_at=now
        )
        if requeued:
            transaction.on_commit(tasks.kick)
    logger.info("Re-queued %d message(s) for delivery", requeued)
    if purged:
        logger.warning("Could not retry %d message(s): their body was purged", purged)
    return Retried(requeued=requeued, purged=purged)


def cancel(queryset: MessageQuerySet) -> int:
    """Cancel the messages among ``queryset`` still waiting; return how many."""
    # One conditional UPDATE: a message a worker claimed meanwhile is `sending`
    # and stays out of reach, so the claim wins.
    cancelled = queryset.filter(status__in=Message.WAITING).update(
        status=Message.Status.CANCELLED, next_attempt_at=None, updated_at=timezone.now()
    )
    logger.info("Cancelled %d message(s)", cancelled)
    return cancelled


# Retention
# ------------------------------------------------------------------------------


def purge(
    *, now: datetime | None = None, older_than: timedelta | None = None, dry_run: bool = False
) -> dict[str, int]:
    """Apply the retention periods; return how many rows each data class lost."""
    now = now or timezone.now()
    metadata_cutoff = now - _days("METADATA_RETENTION_DAYS")
    body_cutoff = now - (_days("BODY_RETENTION_DAYS") if older_than is None else older_than)
    task_result_cutoff = now - _days("TASK_RESULT_RETENTION_DAYS")
    return {
        "messages_deleted": _delete_messages(before=metadata_cutoff, dry_run=dry_run),
        "bodies_purged": _purge_bodies(
            before=body_cutoff, after=metadata_cutoff, now=now, dry_run=dry_run
        ),
        "events_deleted": _delete_events(before=metadata_cutoff, dry_run=dry_run),
        "task_results_deleted": _delete_task_results(before=task_result_cutoff, dry_run=dry_run),
    }


def _days(name: str) -> timedelta:
    """Return the retention period TRANSACTIONAL_<name>."""
    return timedelta(days=get_setting(name))


def _delete_messages(*, before: datetime, dry_run: bool) -> int:
    """Delete finished messages created before ``before``, recipients and attempts too."""
    old = Message.objects.filter(status__in=Message.FINISHED, created_at__lt=before)
    deleted = _in_chunks(old, _delete_counting_messages, dry_run=dry_run)
    action = "Would delete" if dry_run else "Deleted"
    logger.info("%s %d message(s) created before %s", action, deleted, before.isoformat())
    return deleted


def _delete_counting_messages(chunk: MessageQuerySet) -> int:
    """Delete the messages (cascading); return how many messages, not rows."""
    _, per_model = chunk.delete()
    return per_model.get(Message._meta.label, 0)


def _purge_bodies(*, before: datetime, after: datetime, now: datetime, dry_run: bool) -> int:
    """Empty the payload of finished messages created between ``after`` and ``before``."""
    # Older messages are deleted whole by _delete_messages(); not counted twice.
    old = Message.objects.filter(
        status__in=Message.FINISHED,
        created_at__lt=before,
        created_at__gte=after,
        payload__isnull=False,
    )
    purged = _in_chunks(
        old, lambda chunk: chunk.update(payload=None, purged_at=now), dry_run=dry_run
    )
    action = "Would purge" if dry_run else "Purged"
    logger.info("%s %d body(ies) of messages created before %s", action, purged, before.isoformat())
    return purged


def _delete_events(*, before: datetime, dry_run: bool) -> int:
    """Delete ESP events received before ``before`` (they hold addresses and user agents)."""
    old = Event.objects.filter(received_at__lt=before)
    deleted = _in_chunks(old, lambda chunk: chunk.delete()[0], dry_run=dry_run)
    action = "Would delete" if dry_run else "Deleted"
    logger.info("%s %d event(s) received before %s", action, deleted, before.isoformat())
    return deleted


def _delete_task_results(*, before: datetime, dry_run: bool) -> int:
    """Delete django-tasks-db results that finished before ``before``."""
    if not apps.is_installed("django_tasks_db"):
        return 0
    from django_tasks_db.models import DBTaskResult

    old = DBTaskResult.objects.finished().filter(finished_at__lt=before)
    deleted = _in_chunks(old, lambda chunk: chunk.delete()[0], dry_run=dry_run)
    action = "Would delete" if dry_run else "Deleted"
    logger.info("%s %d task result(s) finished before %s", action, deleted, before.isoformat())
    return deleted


def _in_chunks(queryset: QuerySet, apply: Callable[[QuerySet], int], *, dry_run: bool) -> int:
    """Apply ``apply`` to ``queryset`` one short transaction per chunk; return the total."""
    if dry_run:
        return queryset.count()
    total, last_pk = 0, None
    while True:
        with transaction.atomic():
            page = queryset.order_by("pk")
            if last_pk is not None:
                page = page.filter(pk__gt=last_pk)
            ids = list(page.values_list("pk", flat=True)[:PURGE_CHUNK_SIZE])
            if not ids:
                return total
            # Re-applying the filters makes the change conditional: a message
            # an operator re-queued since the page was read is left alone.
            total += apply(queryset.filter(pk__in=ids))
        last_pk = ids[-1]
