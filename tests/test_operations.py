"""Operator services: queue figures, retry, cancel and retention."""

from datetime import datetime, timedelta
from email.utils import make_msgid
from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.core.mail import send_mail
from django.utils import timezone
from django_tasks_db.models import DBTaskResult

from tests.factories import make_attempt, make_message
from transactional import delivery, operations, retention, tasks
from transactional.models import Attempt, Event, Message, OutboxState, Recipient, Suppression

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


@pytest.fixture(autouse=True)
def default_retention(settings):
    """Purge tests start from the default ages, whatever the settings module says."""
    for name in ("TRANSACTIONAL_RETENTION", *retention.DEPRECATED_DAYS):
        if hasattr(settings, name):
            delattr(settings, name)


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


def make_event(*, received_at: datetime, message: Message | None = None, **fields: Any) -> Event:
    """Store one ESP event, received at ``received_at``."""
    fields = {"esp": "mailgun", "event_id": make_msgid(), "address": "ann@example.com",
              "event_type": "delivered"} | fields
    return Event.objects.create(received_at=received_at, message=message, **fields)


def old_everything(days: float) -> dict[str, Any]:
    """Store one row of every data class, ``days`` old; return them by class."""
    message = make_message(status=S.SENT, created_at=days_ago(days))
    return {
        "message": message,
        "attempt": make_attempt(message, outcome=Attempt.Outcome.SENT),
        "event": make_event(received_at=days_ago(days)),
        "task_result": make_task_result(status="SUCCESSFUL", finished_at=days_ago(days)),
    }


def counts(**nonzero: int) -> dict[str, int]:
    return dict.fromkeys(retention.CLASSES, 0) | nonzero


def test_each_data_class_goes_at_its_own_age(settings):
    settings.TRANSACTIONAL_RETENTION = (
        "task_results=5d,bodies=10d,attempts=20d,events=30d,messages=40d"
    )
    rows = {days: old_everything(days) for days in (4, 9, 11, 19, 21, 29, 31, 39, 41)}

    purged = operations.purge()

    # Past 40 days one message goes whole (3 rows of it are counted as one message).
    assert purged.counts == counts(messages=1, bodies=6, attempts=4, events=3, task_results=8)
    assert purged.complete
    messages = {m.pk: m for m in Message.objects.all()}
    for days, row in rows.items():
        message = messages.get(row["message"].pk)
        assert (message is None) is (days > 40), days
        if message:
            assert (message.payload is None) is (days > 10), days
            assert (message.purged_at is not None) is (days > 10), days
            assert message.recipients.exists(), days  # go only with their message
        assert Attempt.objects.filter(pk=row["attempt"].pk).exists() is (days < 20), days
        assert Event.objects.filter(pk=row["event"].pk).exists() is (days < 30), days
        assert DBTaskResult.objects.filter(pk=row["task_result"].pk).exists() is (days < 5), days


@pytest.mark.parametrize("status", S.values)
def test_only_finished_messages_lose_anything(settings, status):
    settings.TRANSACTIONAL_RETENTION = "bodies=1d,attempts=1d,messages=2d"
    old = make_message(status=status, created_at=days_ago(3))
    attempt = make_attempt(old, outcome=Attempt.Outcome.RETRY)
    middle = make_message(status=status, created_at=days_ago(1.5))
    make_attempt(middle, outcome=Attempt.Outcome.RETRY)

    purged = operations.purge()

    finished = status in Message.FINISHED
    assert purged.counts == (counts(messages=1, bodies=1, attempts=1) if finished else counts())
    assert Message.objects.filter(pk=old.pk).exists() is not finished
    if not finished:  # queued, retrying, sending: all of it stays, body and attempts too
        old.refresh_from_db()
        assert old.payload is not None
        assert Attempt.objects.filter(pk=attempt.pk).exists()
    middle.refresh_from_db()
    assert (middle.payload is None) is finished
    assert middle.attempt_log.exists() is not finished


def test_off_keeps_a_class_forever(settings):
    settings.TRANSACTIONAL_RETENTION = (
        "messages=off,bodies=off,attempts=off,events=forever,task_results=off"
    )
    ancient = old_everything(365 * 30)

    purged = operations.purge()

    assert purged.counts == counts()
    assert purged.ages == dict.fromkeys(retention.CLASSES)
    ancient["message"].refresh_from_db()
    assert ancient["message"].payload is not None
    assert Attempt.objects.count() == Event.objects.count() == DBTaskResult.objects.count() == 1


def test_messages_kept_forever_still_lose_their_bodies_and_attempts(settings):
    settings.TRANSACTIONAL_RETENTION = "messages=off"
    message = old_everything(365 * 30)["message"]

    assert operations.purge().counts == counts(bodies=1, attempts=1, events=1, task_results=1)

    message.refresh_from_db()
    assert message.payload is None
    assert message.recipients.exists()


def test_older_than_replaces_the_bodies_age_only(settings):
    settings.TRANSACTIONAL_RETENTION = "bodies=30d,attempts=3d"
    week_old = make_message(status=S.SENT, created_at=days_ago(7))
    make_attempt(week_old)
    make_message(status=S.SENT, created_at=days_ago(1))

    purged = operations.purge(older_than=timedelta(days=5))

    assert purged.counts == counts(bodies=1, attempts=1)
    assert purged.ages["bodies"] == timedelta(days=5)
    week_old.refresh_from_db()
    assert week_old.payload is None


def test_deleting_a_message_takes_recipients_and_attempts_and_unlinks_its_events(settings):
    settings.TRANSACTIONAL_RETENTION = "messages=365d,events=400d"
    old = make_message(status=S.SENT, created_at=days_ago(380))
    make_attempt(old, outcome=Attempt.Outcome.SENT)
    event = make_event(received_at=days_ago(379), message=old, recipient=old.recipients.get())

    assert operations.purge().counts == counts(messages=1)

    assert not Message.objects.filter(pk=old.pk).exists()
    assert not Recipient.objects.filter(message_id=old.pk).exists()
    assert not Attempt.objects.filter(message_id=old.pk).exists()
    event.refresh_from_db()  # younger than the events age: kept, unlinked
    assert (event.message, event.recipient) == (None, None)


def test_deleting_an_event_keeps_the_suppression_it_caused(settings):
    settings.TRANSACTIONAL_RETENTION = "events=30d"
    bounce = make_event(received_at=days_ago(31), event_type="bounced")
    suppression = Suppression.objects.create(
        address="ann@example.com", reason=Suppression.Reason.BOUNCED, source="mailgun", event=bounce
    )

    assert operations.purge().counts == counts(events=1)

    suppression.refresh_from_db()
    assert suppression.event is None
    assert Suppression.objects.for_addresses(["ann@example.com"]).exists()


def test_a_bad_setting_raises_before_anything_is_touched(settings):
    old = old_everything(1000)
    settings.TRANSACTIONAL_RETENTION = "bodies=0d"

    with pytest.raises(ImproperlyConfigured, match="TRANSACTIONAL_RETENTION has 'bodies=0d'"):
        operations.purge()

    old["message"].refresh_from_db()
    assert old["message"].payload is not None
    assert Attempt.objects.count() == Event.objects.count() == DBTaskResult.objects.count() == 1


def test_the_deprecated_day_settings_are_still_honoured(settings):
    settings.TRANSACTIONAL_BODY_RETENTION_DAYS = 5
    settings.TRANSACTIONAL_METADATA_RETENTION_DAYS = 60
    settings.TRANSACTIONAL_TASK_RESULT_RETENTION_DAYS = 1
    old_everything(2)
    old_everything(6)
    old_everything(61)

    # METADATA applies to attempts and events too, as it always did.
    assert operations.purge().counts == counts(messages=1, bodies=1, events=1, task_results=3)


def test_purge_works_through_many_chunks(monkeypatch):
    monkeypatch.setattr(operations, "PURGE_CHUNK_SIZE", 2)
    for _ in range(5):
        make_attempt(make_message(status=S.SENT, created_at=days_ago(400)))
    for _ in range(3):
        make_attempt(make_message(status=S.SENT, created_at=days_ago(100)))
    for _ in range(3):
        make_event(received_at=days_ago(401))

    assert operations.purge().counts == counts(messages=5, bodies=3, attempts=3, events=3)
    assert not Message.objects.filter(payload__isnull=False).exists()
    assert not Attempt.objects.exists()


def test_purge_dry_run_counts_each_class_and_changes_nothing():
    old_everything(450)  # the message goes whole: counted once, as a message
    old_everything(100)
    make_message(status=S.SENT, created_at=days_ago(40))

    purged = operations.purge(dry_run=True)

    assert purged.counts == counts(messages=1, bodies=2, attempts=1, events=1, task_results=2)
    assert Message.objects.count() == 3
    assert not Message.objects.filter(payload__isnull=True).exists()
    assert Attempt.objects.count() == 2
    assert DBTaskResult.objects.count() == 2


def test_max_seconds_stops_between_chunks_and_the_next_run_goes_on(monkeypatch):
    monkeypatch.setattr(operations, "PURGE_CHUNK_SIZE", 2)
    clock = iter(range(1000))  # every look at the clock takes a second
    monkeypatch.setattr(operations, "monotonic", lambda: next(clock))
    for _ in range(5):
        make_message(status=S.SENT, created_at=days_ago(400))
    make_message(status=S.SENT, created_at=days_ago(40))

    # Deadline at 2.5: chunks start at 1 and 2, the look at 3 stops.
    first = operations.purge(max_seconds=2.5)

    assert first.counts == counts(messages=4)
    assert not first.complete
    assert operations.purge().counts == counts(messages=1, bodies=1)


def test_purge_deletes_finished_task_results_past_retention(settings):
    settings.TRANSACTIONAL_RETENTION = "task_results=7d"
    make_task_result(status="SUCCESSFUL", finished_at=days_ago(8))
    make_task_result(status="FAILED", finished_at=days_ago(8))
    recent = make_task_result(status="SUCCESSFUL", finished_at=days_ago(6))
    waiting = make_task_result(status="READY", finished_at=None)

    assert operations.purge().counts["task_results"] == 2
    assert set(DBTaskResult.objects.values_list("pk", flat=True)) == {recent.pk, waiting.pk}


def test_purge_skips_task_results_without_django_tasks_db(settings):
    make_task_result(status="SUCCESSFUL", finished_at=days_ago(8))
    settings.INSTALLED_APPS = [app for app in settings.INSTALLED_APPS if app != "django_tasks_db"]

    assert operations.purge().counts["task_results"] == 0


def test_send_then_purge_end_to_end(outbox, mailoutbox, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        send_mail("Receipt", "Thanks!", None, ["ann@example.com"])
    message = Message.objects.get()
    assert message.status == S.SENT

    operations.purge(now=timezone.now() + timedelta(days=31))

    message.refresh_from_db()
    assert message.payload is None
    assert message.recipients.get().address == "ann@example.com"
    assert message.attempt_log.exists()  # attempts go at 90 days


# The sweep purges, when due
# ------------------------------------------------------------------------------


def purge_due_at() -> datetime | None:
    return OutboxState.get().purge_due_at


def test_purge_if_due_purges_once_per_interval(settings):
    settings.TRANSACTIONAL_PURGE_INTERVAL_SECONDS = 3600
    now = timezone.now()
    make_message(status=S.SENT, created_at=days_ago(40))

    first = operations.purge_if_due(now=now)

    assert first.counts == counts(bodies=1)
    assert purge_due_at() == now + timedelta(hours=1)
    late = make_message(status=S.SENT, created_at=days_ago(40))
    # Another worker's sweep, a minute later: not due.
    assert operations.purge_if_due(now=now + timedelta(minutes=1)) is None
    late.refresh_from_db()
    assert late.payload is not None
    # An hour later it is.
    assert operations.purge_if_due(now=now + timedelta(hours=1)).counts == counts(bodies=1)
    assert purge_due_at() == now + timedelta(hours=2)


def test_purge_if_due_never_purges_with_interval_0(settings):
    settings.TRANSACTIONAL_PURGE_INTERVAL_SECONDS = 0
    old = make_message(status=S.SENT, created_at=days_ago(40))

    assert operations.purge_if_due() is None

    old.refresh_from_db()
    assert old.payload is not None
    assert purge_due_at() is None


def test_a_purge_out_of_time_is_due_again_at_once(settings, monkeypatch):
    settings.TRANSACTIONAL_PURGE_MAX_SECONDS = 2.5
    monkeypatch.setattr(operations, "PURGE_CHUNK_SIZE", 2)
    clock = iter(range(1000))
    monkeypatch.setattr(operations, "monotonic", lambda: next(clock))
    for _ in range(5):
        make_message(status=S.SENT, created_at=days_ago(400))
    now = timezone.now()

    assert not operations.purge_if_due(now=now).complete

    assert purge_due_at() == now  # the next sweep goes on
    monkeypatch.setattr(operations, "monotonic", lambda: 0)  # and has time enough
    rest = operations.purge_if_due(now=now + timedelta(minutes=1))
    assert rest.counts == counts(messages=1)
    assert rest.complete
    assert purge_due_at() == now + timedelta(minutes=61)


def test_the_sweep_purges_when_due(settings):
    settings.TRANSACTIONAL_PURGE_INTERVAL_SECONDS = 3600
    old_everything(500)

    delivery.sweep()

    assert not Message.objects.exists()
    assert not Event.objects.exists()
    assert not DBTaskResult.objects.exists()
    assert purge_due_at() > timezone.now() + timedelta(minutes=59)  # not due for an hour
    late = make_message(status=S.SENT, created_at=days_ago(500))  # after this hour's purge
    delivery.sweep()
    assert Message.objects.filter(pk=late.pk).exists()


def test_a_bad_setting_does_not_stop_the_sweep(settings, caplog):
    settings.TRANSACTIONAL_RETENTION = "bodies=0d"
    settings.TRANSACTIONAL_LEASE_SECONDS = 300
    stuck = make_message(status=S.SENDING, claimed_at=timezone.now() - timedelta(minutes=10))
    old = make_message(status=S.SENT, created_at=days_ago(500))

    swept = delivery.sweep()

    assert swept["requeued"] == 1
    assert Message.objects.filter(pk=stuck.pk).exclude(status=S.SENDING).exists()
    old.refresh_from_db()
    assert old.payload is not None
    [record] = [r for r in caplog.records if r.getMessage() == "The sweep could not purge old data"]
    assert "TRANSACTIONAL_RETENTION has 'bodies=0d'" in str(record.exc_info[1])
