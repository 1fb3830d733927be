"""Operator services: queue figures, retry, cancel and retention."""

from datetime import datetime, timedelta
from typing import Any

import pytest
from django.core.mail import send_mail
from django.utils import timezone
from django_tasks_db.models import DBTaskResult

from tests.factories import make_attempt, make_message
from transactional import delivery, operations, tasks
from transactional.models import Attempt, Event, Message, Recipient

pytestmark = pytest.mark.django_db

S = Message.Status


def days_ago(days: float) -> datetime:
    return timezone.now() - timedelta(days=days)


# queue_status
# ------------------------------------------------------------------------------


def test_queue_status_counts_every_status():
    make_message(status=S.QUEUED)
    make_message(status=S.SENT)
    make_message(status=S.SENT)

    status = operations.queue_status()

    assert status["counts"] == {
        "queued": 1,
        "sending": 0,
        "retrying": 0,
        "sent": 2,
        "failed": 0,
        "suppressed": 0,
        "cancelled": 0,
        "blocked": 0,
    }
    assert status["sending"] == 0


def test_queue_status_of_an_empty_outbox_is_clean():
    status = operations.queue_status()

    assert set(status["counts"].values()) == {0}
    assert status["oldest_due_seconds"] is None
    assert status["failed_last_hour"] == 0
    assert status["problems"] == []


def test_oldest_due_counts_from_when_the_message_became_due():
    now = timezone.now()
    make_message(
        status=S.QUEUED,
        created_at=now - timedelta(days=2),
        next_attempt_at=now - timedelta(seconds=90),
    )
    make_message(status=S.RETRYING, next_attempt_at=now - timedelta(seconds=30))
    make_message(status=S.RETRYING, next_attempt_at=now + timedelta(hours=1))  # not due
    make_message(status=S.FAILED, next_attempt_at=now - timedelta(hours=5))  # not waiting

    assert operations.queue_status(now=now)["oldest_due_seconds"] == 90


def test_failed_last_hour_counts_recent_failures_only():
    now = timezone.now()
    make_message(status=S.FAILED, updated_at=now - timedelta(minutes=10))
    make_message(status=S.FAILED, updated_at=now - timedelta(minutes=70))
    make_message(status=S.SENT, updated_at=now - timedelta(minutes=10))

    assert operations.queue_status(now=now)["failed_last_hour"] == 1


def test_queue_status_names_each_threshold_crossed(settings):
    settings.TRANSACTIONAL_ALERT_OLDEST_DUE_SECONDS = 60
    settings.TRANSACTIONAL_ALERT_FAILED_LAST_HOUR = 1
    now = timezone.now()
    make_message(status=S.QUEUED, next_attempt_at=now - timedelta(seconds=61))
    make_message(status=S.FAILED)
    make_message(status=S.FAILED)

    assert operations.queue_status(now=now)["problems"] == [
        "The oldest due message has waited 61s, over TRANSACTIONAL_ALERT_OLDEST_DUE_SECONDS=60: "
        "is a delivery worker running?",
        "2 message(s) failed in the last hour, over TRANSACTIONAL_ALERT_FAILED_LAST_HOUR=1: "
        "see last_error in the admin.",
    ]


def test_queue_status_at_the_thresholds_is_no_problem(settings):
    settings.TRANSACTIONAL_ALERT_OLDEST_DUE_SECONDS = 60
    settings.TRANSACTIONAL_ALERT_FAILED_LAST_HOUR = 1
    now = timezone.now()
    make_message(status=S.QUEUED, next_attempt_at=now - timedelta(seconds=60))
    make_message(status=S.FAILED)

    assert operations.queue_status(now=now)["problems"] == []


# retry
# ------------------------------------------------------------------------------


def test_retry_requeues_failed_and_retrying_messages(django_capture_on_commit_callbacks):
    failed = make_message(
        status=S.FAILED,
        attempts=8,
        last_error="SMTPServerDisconnected: gone",
        recipient_status=Recipient.Status.FAILED,
    )
    retrying = make_message(
        status=S.RETRYING, attempts=2, next_attempt_at=timezone.now() + timedelta(hours=1)
    )
    sent = make_message(status=S.SENT)
    cancelled = make_message(status=S.CANCELLED)

    with django_capture_on_commit_callbacks() as callbacks:
        retried = operations.retry(Message.objects.all())

    assert retried == operations.Retried(requeued=2, purged=0)
    for message in (failed, retrying):
        message.refresh_from_db()
        assert message.status == S.QUEUED
        assert message.next_attempt_at <= timezone.now()
    assert failed.last_error == "SMTPServerDisconnected: gone"
    assert failed.attempts == 8  # attempt numbers keep counting
    assert set(failed.recipients.values_list("status", flat=True)) == {Recipient.Status.QUEUED}
    assert Message.objects.get(pk=sent.pk).status == S.SENT
    assert Message.objects.get(pk=cancelled.pk).status == S.CANCELLED
    assert callbacks == [tasks.kick]


def test_retry_leaves_suppressed_recipients_alone():
    message = make_message(
        status=S.FAILED, to=["ann@example.com"], recipient_status=Recipient.Status.SUPPRESSED
    )

    operations.retry(Message.objects.filter(pk=message.pk))

    assert message.recipients.get().status == Recipient.Status.SUPPRESSED


def test_retry_skips_messages_whose_body_was_purged(django_capture_on_commit_callbacks):
    purged = make_message(status=S.FAILED, payload=None, purged_at=timezone.now())

    with django_capture_on_commit_callbacks() as callbacks:
        retried = operations.retry(Message.objects.all())

    assert retried == operations.Retried(requeued=0, purged=1)
    assert Message.objects.get(pk=purged.pk).status == S.FAILED
    assert callbacks == []


def test_a_retried_message_is_delivered(mailoutbox, django_capture_on_commit_callbacks):
    message = make_message(
        status=S.FAILED, to=["ann@example.com"], recipient_status=Recipient.Status.FAILED
    )

    with django_capture_on_commit_callbacks(execute=True):
        operations.retry(Message.objects.filter(pk=message.pk))

    message.refresh_from_db()
    assert message.status == S.SENT
    assert message.recipients.get().status == Recipient.Status.SENT
    assert [email.to for email in mailoutbox] == [["ann@example.com"]]


# cancel
# ------------------------------------------------------------------------------


def test_cancel_stops_waiting_messages_only():
    queued = make_message(status=S.QUEUED)
    retrying = make_message(status=S.RETRYING)
    sending = make_message(status=S.SENDING)
    sent = make_message(status=S.SENT)

    assert operations.cancel(Message.objects.all()) == 2

    statuses = dict(Message.objects.values_list("pk", "status"))
    assert statuses == {
        queued.pk: S.CANCELLED,
        retrying.pk: S.CANCELLED,
        sending.pk: S.SENDING,
        sent.pk: S.SENT,
    }
    assert Message.objects.get(pk=queued.pk).next_attempt_at is None


def test_a_worker_claim_wins_over_a_cancel_selected_before_it():
    message = make_message(status=S.QUEUED)
    selected = operations.select_messages(ids=[message.pk])  # the operator picks it...

    delivery.claim(10)  # ...a worker claims it...

    assert operations.cancel(selected) == 0  # ...and the cancel finds it gone
    assert Message.objects.get(pk=message.pk).status == S.SENDING


def test_a_cancelled_message_is_never_delivered(mailoutbox):
    message = make_message(status=S.QUEUED)
    operations.cancel(Message.objects.filter(pk=message.pk))

    assert delivery.deliver_due() == 0
    assert mailoutbox == []


# select_messages
# ------------------------------------------------------------------------------


def test_select_messages_by_status_changed_since():
    now = timezone.now()
    recent = make_message(status=S.FAILED, updated_at=now - timedelta(minutes=30))
    make_message(status=S.FAILED, updated_at=now - timedelta(hours=3))
    make_message(status=S.SENT, updated_at=now - timedelta(minutes=30))

    selected = operations.select_messages(status=S.FAILED, changed_since=now - timedelta(hours=2))

    assert list(selected) == [recent]


# purge
# ------------------------------------------------------------------------------


def make_task_result(**fields: Any) -> DBTaskResult:
    """Store a django-tasks-db result row."""
    return DBTaskResult.objects.create(
        args_kwargs={"args": [], "kwargs": {}},
        task_path="transactional.tasks.deliver",
        backend_name="default",
        run_after=timezone.now(),
        exception_class_path="",
        traceback="",
        **fields,
    )


def test_purge_empties_old_bodies_of_finished_messages_only(settings):
    settings.TRANSACTIONAL_BODY_RETENTION_DAYS = 30
    old = {status: make_message(status=status, created_at=days_ago(31)) for status in S.values}
    recent = make_message(status=S.SENT, created_at=days_ago(29))

    counts = operations.purge()

    assert counts["bodies_purged"] == len(Message.FINISHED)
    for status, message in old.items():
        message.refresh_from_db()
        finished = status in Message.FINISHED
        assert (message.payload is None) is finished, status
        assert (message.purged_at is not None) is finished, status
    recent.refresh_from_db()
    assert recent.payload is not None


def test_purge_older_than_overrides_the_body_retention(settings):
    settings.TRANSACTIONAL_BODY_RETENTION_DAYS = 30
    week_old = make_message(status=S.SENT, created_at=days_ago(7))
    make_message(status=S.SENT, created_at=days_ago(1))

    counts = operations.purge(older_than=timedelta(days=5))

    assert counts["bodies_purged"] == 1
    week_old.refresh_from_db()
    assert week_old.payload is None


def test_purge_deletes_old_finished_messages_with_recipients_and_attempts(settings):
    settings.TRANSACTIONAL_METADATA_RETENTION_DAYS = 365
    old = make_message(status=S.SENT, created_at=days_ago(400))
    make_attempt(old, outcome=Attempt.Outcome.SENT)
    stuck = make_message(status=S.RETRYING, created_at=days_ago(400))
    kept = make_message(status=S.FAILED, created_at=days_ago(300))

    counts = operations.purge()

    assert counts["messages_deleted"] == 1
    assert set(Message.objects.values_list("pk", flat=True)) == {stuck.pk, kept.pk}
    assert not Recipient.objects.filter(message_id=old.pk).exists()
    assert not Attempt.objects.filter(message_id=old.pk).exists()
    stuck.refresh_from_db()
    assert stuck.payload is not None  # unfinished: never touched


def test_purge_works_through_many_chunks(monkeypatch):
    monkeypatch.setattr(operations, "PURGE_CHUNK_SIZE", 2)
    for _ in range(5):
        make_message(status=S.SENT, created_at=days_ago(400))
    for _ in range(3):
        make_message(status=S.SENT, created_at=days_ago(40))

    assert operations.purge() == {
        "messages_deleted": 5,
        "bodies_purged": 3,
        "events_deleted": 0,
        "task_results_deleted": 0,
    }
    assert not Message.objects.filter(payload__isnull=False).exists()


def test_purge_dry_run_counts_and_changes_nothing():
    make_message(status=S.SENT, created_at=days_ago(400))
    make_message(status=S.SENT, created_at=days_ago(40))
    make_task_result(status="SUCCESSFUL", finished_at=days_ago(8))

    counts = operations.purge(dry_run=True)

    assert counts == {
        "messages_deleted": 1, "bodies_purged": 1, "events_deleted": 0, "task_results_deleted": 1
    }
    assert Message.objects.count() == 2
    assert not Message.objects.filter(payload__isnull=True).exists()
    assert DBTaskResult.objects.count() == 1


def test_purge_deletes_finished_task_results_past_retention(settings):
    settings.TRANSACTIONAL_TASK_RESULT_RETENTION_DAYS = 7
    make_task_result(status="SUCCESSFUL", finished_at=days_ago(8))
    make_task_result(status="FAILED", finished_at=days_ago(8))
    recent = make_task_result(status="SUCCESSFUL", finished_at=days_ago(6))
    waiting = make_task_result(status="READY", finished_at=None)

    assert operations.purge()["task_results_deleted"] == 2
    assert set(DBTaskResult.objects.values_list("pk", flat=True)) == {recent.pk, waiting.pk}


def test_purge_skips_task_results_without_django_tasks_db(settings):
    settings.INSTALLED_APPS = [app for app in settings.INSTALLED_APPS if app != "django_tasks_db"]
    assert operations.purge()["task_results_deleted"] == 0


def test_send_then_purge_end_to_end(outbox, mailoutbox, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        send_mail("Receipt", "Thanks!", None, ["ann@example.com"])
    message = Message.objects.get()
    assert message.status == S.SENT

    operations.purge(now=timezone.now() + timedelta(days=31))

    message.refresh_from_db()
    assert message.payload is None
    assert message.recipients.get().address == "ann@example.com"


def test_purge_deletes_events_past_the_metadata_retention(settings):
    settings.TRANSACTIONAL_METADATA_RETENTION_DAYS = 90
    old = Event.objects.create(esp="mailgun", event_id="a", address="ann@example.org",
                               event_type="delivered", received_at=days_ago(91))
    recent = Event.objects.create(esp="mailgun", event_id="b", address="ann@example.org",
                                  event_type="opened", received_at=days_ago(89))

    assert operations.purge()["events_deleted"] == 1

    assert list(Event.objects.values_list("pk", flat=True)) == [recent.pk]
    assert not Event.objects.filter(pk=old.pk).exists()
