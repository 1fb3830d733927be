"""Services for operators: queue figures, retry, cancel and retention.

The ``outbox`` management command, the admin actions and ``/healthz`` are
thin callers of these functions.
"""

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from time import monotonic
from typing import Any

from django.apps import apps
from django.db import transaction
from django.db.models import Count, Q, QuerySet
from django.utils import timezone

from . import retention, signals, tasks
from .conf import get_setting, providers
from .models import Attempt, Event, Message, MessageQuerySet, OutboxState, ProviderState, Recipient

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
        failed = Recipient.objects.filter(message_id__in=ids, status=Recipient.Status.FAILED)
        signals.announce_moving(failed, Recipient.Status.QUEUED)
        failed.update(status=Recipient.Status.QUEUED, updated_at=now)
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
# One step per data class of retention.CLASSES. Messages go first: deleting
# one takes its recipients, attempts and body along, which the later steps
# then need not touch. Events are deleted on their own clock: an event that
# added a suppression leaves it in place (Suppression.event is SET_NULL).


@dataclass(frozen=True)
class Purged:
    """What purge() removed (or would remove), per data class."""

    #: Data class -> rows deleted (bodies: emptied).
    counts: dict[str, int]
    #: Data class -> the age it was purged at (None: kept forever).
    ages: dict[str, timedelta | None]
    #: False when ``max_seconds`` ran out first; the rest is left for the next run.
    complete: bool = True


def purge(
    *,
    now: datetime | None = None,
    older_than: timedelta | None = None,
    dry_run: bool = False,
    max_seconds: float | None = None,
) -> Purged:
    """Remove what TRANSACTIONAL_RETENTION no longer keeps; return how much per data class.

    ``older_than`` replaces the bodies' age for this run; ``max_seconds``
    stops after the chunk that passes it, leaving the rest for the next run.
    """
    now = now or timezone.now()
    ages = retention.policy()  # raises before anything is touched
    if older_than is not None:
        ages["bodies"] = older_than
    run = _Run(
        now=now,
        cutoffs={name: None if age is None else now - age for name, age in ages.items()},
        dry_run=dry_run,
        deadline=None if max_seconds is None else monotonic() + max_seconds,
    )
    steps = {
        "messages": _delete_messages,
        "bodies": _purge_bodies,
        "attempts": _delete_attempts,
        "events": _delete_events,
        "task_results": _delete_task_results,
    }
    # In CLASSES order; a class without a cutoff is kept forever.
    counts = {
        name: 0 if run.cutoffs[name] is None else steps[name](run) for name in retention.CLASSES
    }
    if run.stopped:
        logger.info("The purge ran out of time (%ss); the next run goes on", max_seconds)
    return Purged(counts=counts, ages=ages, complete=not run.stopped)


def purge_if_due(*, now: datetime | None = None) -> Purged | None:
    """Purge if TRANSACTIONAL_PURGE_INTERVAL_SECONDS have passed since the last time; else None.

    The sweep calls it. Claiming the run is one conditional UPDATE of
    OutboxState, so of many workers sweeping at once one purges.
    """
    now = now or timezone.now()
    interval, max_seconds = retention.purge_schedule()
    if not interval:
        return None
    OutboxState.get()  # the row exists from `migrate` on; make sure
    due = Q(purge_due_at__isnull=True) | Q(purge_due_at__lte=now)
    claimed = OutboxState.objects.filter(due, pk=1).update(
        purge_due_at=now + timedelta(seconds=interval)
    )
    if not claimed:
        return None
    # A run that raises keeps the claim: it is tried again after the interval.
    purged = purge(now=now, max_seconds=max_seconds)
    if not purged.complete:
        # Out of time with rows left: the next sweep goes on, not the next interval.
        OutboxState.objects.filter(pk=1).update(purge_due_at=now)
    return purged


class _Run:
    """One purge: its cutoffs, and how it changes rows (counted only, or chunk by chunk)."""

    def __init__(
        self,
        *,
        now: datetime,
        cutoffs: dict[str, datetime | None],
        dry_run: bool,
        deadline: float | None,
    ) -> None:
        self.now = now
        self.cutoffs = cutoffs
        self.dry_run = dry_run
        self.deadline = deadline
        #: True once a step stopped at the deadline with rows possibly left.
        self.stopped = False

    def apply(self, queryset: QuerySet, change: Callable[[QuerySet], int]) -> int:
        """Apply ``change`` to ``queryset``, one short transaction per chunk; return the total."""
        if self.dry_run:
            return queryset.count()
        total, last_pk = 0, None
        while True:
            if self.deadline is not None and monotonic() >= self.deadline:
                self.stopped = True
                return total
            with transaction.atomic():
                page = queryset.order_by("pk")
                if last_pk is not None:
                    page = page.filter(pk__gt=last_pk)
                ids = list(page.values_list("pk", flat=True)[:PURGE_CHUNK_SIZE])
                if not ids:
                    return total
                # Re-applying the filters makes the change conditional: a message
                # an operator re-queued since the page was read is left alone.
                total += change(queryset.filter(pk__in=ids))
            last_pk = ids[-1]

    def log(self, verb: str, count: int, what: str, before: datetime) -> None:
        action = f"Would {verb.lower()}" if self.dry_run else f"{verb}d"
        logger.info("%s %d %s before %s", action, count, what, before.isoformat())


def _delete_messages(run: _Run) -> int:
    """Delete finished messages past their age, with recipients and attempts."""
    before = run.cutoffs["messages"]
    old = Message.objects.filter(status__in=Message.FINISHED, created_at__lt=before)
    deleted = run.apply(old, _delete_counting_messages)
    run.log("Delete", deleted, "message(s) created", before)
    return deleted


def _delete_counting_messages(chunk: MessageQuerySet) -> int:
    """Delete the messages (cascading); return how many messages, not rows."""
    _, per_model = chunk.delete()
    return per_model.get(Message._meta.label, 0)


def _finished_before(run: _Run, name: str) -> Q:
    """Finished messages older than the age of ``name``, short of going whole."""
    parts = Q(status__in=Message.FINISHED, created_at__lt=run.cutoffs[name])
    # Older messages are deleted whole by _delete_messages(); not counted twice.
    if run.cutoffs["messages"] is not None:
        parts &= Q(created_at__gte=run.cutoffs["messages"])
    return parts


def _purge_bodies(run: _Run) -> int:
    """Empty the payload of finished messages past the bodies' age."""
    old = Message.objects.filter(_finished_before(run, "bodies"), payload__isnull=False)
    purged = run.apply(old, lambda chunk: chunk.update(payload=None, purged_at=run.now))
    run.log("Purge", purged, "body(ies) of messages created", run.cutoffs["bodies"])
    return purged


def _delete_attempts(run: _Run) -> int:
    """Delete the attempt log of finished messages past the attempts' age."""
    messages = Message.objects.filter(_finished_before(run, "attempts"))
    old = Attempt.objects.filter(message__in=messages)
    deleted = run.apply(old, lambda chunk: chunk.delete()[0])
    run.log("Delete", deleted, "attempt(s) of messages created", run.cutoffs["attempts"])
    return deleted


def _delete_events(run: _Run) -> int:
    """Delete ESP events received before their age (they hold addresses and user agents)."""
    old = Event.objects.filter(received_at__lt=run.cutoffs["events"])
    # Counted as events: the suppressions they caused stay, unlinked.
    deleted = run.apply(old, lambda chunk: chunk.delete()[1].get(Event._meta.label, 0))
    run.log("Delete", deleted, "event(s) received", run.cutoffs["events"])
    return deleted


def _delete_task_results(run: _Run) -> int:
    """Delete django-tasks-db results that finished before their age."""
    if not apps.is_installed("django_tasks_db"):
        return 0
    from django_tasks_db.models import DBTaskResult

    before = run.cutoffs["task_results"]
    old = DBTaskResult.objects.finished().filter(finished_at__lt=before)
    deleted = run.apply(old, lambda chunk: chunk.delete()[0])
    run.log("Delete", deleted, "task result(s) finished", before)
    return deleted
