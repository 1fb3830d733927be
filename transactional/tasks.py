"""Background tasks (Django Tasks API). Thin: each calls into delivery.py.

The outbox asks for a delivery run with ``kick()`` after each commit. At most
one run is pending at a time (``OutboxState.kick_pending``), so a burst of
10,000 sends enqueues a handful of tasks, not 10,000; each run drains every
due message. A self-rescheduling sweep returns stuck messages and re-kicks
due ones whose kick was lost.

Django 6.0+ has the Tasks framework built in (``django.tasks``); on Django 5.2
the django-tasks backport provides the same API as ``django_tasks``. Imported
only here: every other module goes through ``task`` and ``ImmediateBackend``.
django-tasks-db picks the same module (it runs ``find_spec("django.tasks")``).
"""

import logging
from datetime import datetime, timedelta

from django.db import connection
from django.db.models import Q
from django.utils import timezone

try:  # Django 6.0+
    from django.tasks import task
    from django.tasks.backends.immediate import ImmediateBackend
except ImportError:  # Django 5.2 and the django-tasks backport
    from django_tasks import task
    from django_tasks.backends.immediate import ImmediateBackend

from . import delivery
from .conf import get_setting
from .models import OutboxState

logger = logging.getLogger(__name__)


@task()
def deliver() -> int:
    """Deliver every due message; return how many were sent."""
    OutboxState.objects.filter(pk=1).update(kick_pending=False)
    ensure_sweep_scheduled()
    return delivery.deliver_due()


@task()
def sweep(due_at: str | None = None) -> dict[str, int]:
    """Run the sweep; if this run belongs to the live schedule, book the next one."""
    result = delivery.sweep()
    state = OutboxState.objects.filter(pk=1).first()
    if due_at is not None and state and state.sweep_due_at and state.sweep_due_at.isoformat() == due_at:
        _schedule_sweep(timezone.now() + timedelta(seconds=get_setting("SWEEP_INTERVAL_SECONDS")))
    return result


def kick(*, force: bool = False) -> None:
    """Make sure a delivery run is coming; enqueue one unless one is pending."""
    backend = deliver.get_backend()
    if isinstance(backend, ImmediateBackend) and delivery.RUNNING.active:
        return  # already delivering in this very thread
    if not force and not _claim_kick():
        return
    try:
        deliver.enqueue()
    except Exception:
        # The messages are stored and due: the next sweep re-kicks them.
        OutboxState.objects.filter(pk=1).update(kick_pending=False)
        logger.exception("Could not enqueue a delivery run; the sweep will retry")


def _claim_kick() -> bool:
    """Flip the pending flag; True if this caller flipped it.

    During a burst a run is pending for nearly every send, so the flag is
    read first, in plain SQL (a read takes no write lock, and the ORM would
    cost more than the query). Seeing it set is enough: the pending run
    clears it as it starts, before it claims, so it will find the message
    this send committed. The row exists from `migrate` (and `flush`) on;
    see apps.ready().
    """
    table = connection.ops.quote_name(OutboxState._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT kick_pending FROM {table} WHERE {OutboxState._meta.pk.column} = 1")
        row = cursor.fetchone()
    if row and row[0]:
        return False
    return bool(OutboxState.objects.filter(pk=1, kick_pending=False).update(kick_pending=True))


def kick_at(when: datetime) -> None:
    """Ask for a delivery run at ``when``, where the task backend can defer."""
    if not deliver.get_backend().supports_defer:
        return  # immediate mode: the next send or `outbox sweep` delivers it
    try:
        deliver.using(run_after=when).enqueue()
    except Exception:
        logger.exception("Could not schedule a delivery run; the sweep will catch up")


def wake_at(when: datetime) -> None:
    """Book one delivery run for ``when``, unless one is booked already and no later.

    Every worker that finds the breakers open (or a rate limit booked up)
    asks for the same wake-up; one deferred task serves them all.
    """
    if not deliver.get_backend().supports_defer:
        return
    now = timezone.now()
    free = Q(wake_at__isnull=True) | Q(wake_at__lte=now) | Q(wake_at__gt=when)
    if OutboxState.objects.filter(free, pk=1).update(wake_at=when):
        kick_at(when)


def ensure_sweep_scheduled(*, restart: bool = False) -> None:
    """Start the periodic sweep unless a live schedule exists (or ``restart``)."""
    if not sweep.get_backend().supports_defer:
        return
    now = timezone.now()
    interval = timedelta(seconds=get_setting("SWEEP_INTERVAL_SECONDS"))
    state = OutboxState.get()
    alive = state.sweep_due_at is not None and state.sweep_due_at > now - 3 * interval
    if restart or not alive:
        _schedule_sweep(now)


def _schedule_sweep(at: datetime) -> None:
    OutboxState.objects.update_or_create(pk=1, defaults={"sweep_due_at": at})
    try:
        sweep.using(run_after=at).enqueue(at.isoformat())
    except Exception:
        logger.exception("Could not schedule the outbox sweep")
