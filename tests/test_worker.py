"""The delivery worker in-process: the real db_worker loop, claims, the sweep."""

import threading
from datetime import timedelta
from functools import partial

import pytest
from django.core import checks
from django.core.mail import send_mail
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.utils import timezone
from django_tasks_db.models import DBTaskResult

from transactional import delivery, tasks
from transactional.models import Attempt, Message, OutboxState
from transactional.testing.fake_mailgun import running_fake_mailgun

pytestmark = pytest.mark.django_db

DB_TASKS = {"default": {"BACKEND": "django_tasks_db.DatabaseBackend"}}


@pytest.fixture
def db_tasks(settings, outbox):
    """Use django-tasks-db, as production does; return a one-shot worker runner."""
    settings.TASKS = DB_TASKS
    return partial(
        call_command, "delivery_worker", verbosity=0, batch=True, interval=0,
        startup_delay=False, reload=False,
    )


def send(n: int = 1) -> None:
    for i in range(n):
        send_mail(f"Message {i}", "Body", "shop@acme.test", [f"user{i}@example.org"])


# db_worker closes "old" connections between tasks, which would end a test
# wrapped in a transaction: these tests commit for real.
@pytest.mark.django_db(transaction=True)
def test_the_real_worker_delivers_queued_mail(db_tasks, mailoutbox):
    send(3)
    assert mailoutbox == []

    db_tasks()

    assert len(mailoutbox) == 3
    assert set(Message.objects.values_list("status", flat=True)) == {"sent"}


def test_a_burst_of_sends_enqueues_one_delivery_run(db_tasks, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        send(50)

    assert DBTaskResult.objects.filter(task_path="transactional.tasks.deliver").count() == 1
    assert OutboxState.objects.get().kick_pending is True


@pytest.mark.django_db(transaction=True)
def test_the_worker_starts_the_periodic_sweep(db_tasks, settings):
    db_tasks()

    state = OutboxState.objects.get()
    pending = DBTaskResult.objects.filter(task_path="transactional.tasks.sweep", status="READY").get()
    assert pending.run_after == state.sweep_due_at
    assert state.sweep_due_at > timezone.now() + timedelta(seconds=50)  # the next one, a minute on


def test_a_second_claim_gets_nothing(outbox):
    send(1)

    first = delivery.claim(10)
    second = delivery.claim(10)

    assert [m.pk for m in first] == [Message.objects.get().pk]
    assert second == []
    assert Message.objects.get().status == Message.Status.SENDING


@pytest.mark.django_db(transaction=True)
def test_two_runs_racing_send_each_message_once(settings, outbox, mail_settings):
    """Two delivery runs in two threads, one slow fake ESP: nothing is sent twice."""
    with running_fake_mailgun(latency=0.02) as esp:
        mail_settings("mailgun", MAILGUN_API_KEY="key-test", MAILGUN_SENDER_DOMAIN="mg.acme-mail.com",
                      MAILGUN_API_URL=esp.base_url)
        settings.EMAIL_BACKEND = "transactional.backends.EmailBackend"
        settings.TRANSACTIONAL_BATCH_SIZE = 5
        send(60)

        runs = [threading.Thread(target=_run_and_close) for _ in range(2)]
        for run in runs:
            run.start()
        for run in runs:
            run.join(timeout=60)

        assert esp.count == 60
        assert esp.duplicates() == {}
    assert Message.objects.filter(status="sent").count() == 60
    assert Attempt.objects.count() == 60


def _run_and_close() -> None:
    from django.db import connection

    try:
        delivery.deliver_due()
    finally:
        connection.close()


def test_the_sweep_returns_messages_whose_lease_expired(outbox, mailoutbox, settings):
    settings.TRANSACTIONAL_LEASE_SECONDS = 300
    send(1)
    [claimed] = delivery.claim(1)  # ... and the worker died here
    Message.objects.update(claimed_at=timezone.now() - timedelta(seconds=301))

    result = delivery.sweep()  # re-queues, then kicks a run (inline, in tests)

    assert result["requeued"] == 1
    message = Message.objects.get()
    assert list(message.attempt_log.values_list("outcome", flat=True)) == ["abandoned", "sent"]
    assert message.status == Message.Status.SENT
    assert message.attempts == 2
    assert len(mailoutbox) == 1


def test_the_sweep_leaves_a_live_lease_alone(outbox):
    send(1)
    delivery.claim(1)

    assert delivery.sweep()["requeued"] == 0
    assert Message.objects.get().status == Message.Status.SENDING


def test_the_sweep_delivers_mail_whose_enqueue_was_lost(outbox, mailoutbox, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False):
        send(2)  # committed, but the delivery task never got enqueued
    assert mailoutbox == []

    with django_capture_on_commit_callbacks(execute=True):
        result = delivery.sweep()

    assert result["due"] == 2
    assert len(mailoutbox) == 2


def test_the_sweep_does_not_disturb_messages_waiting_to_retry(outbox, mailoutbox):
    send(1)
    later = timezone.now() + timedelta(minutes=10)
    Message.objects.update(status=Message.Status.RETRYING, next_attempt_at=later, attempts=1)

    result = delivery.sweep()

    assert result == {"requeued": 0, "due": 0, "linked": 0}
    message = Message.objects.get()
    assert (message.status, message.next_attempt_at) == (Message.Status.RETRYING, later)
    assert mailoutbox == []


def test_a_failed_enqueue_leaves_mail_for_the_sweep(outbox, settings, django_capture_on_commit_callbacks, caplog):
    settings.TASKS = {"default": {"BACKEND": "django_tasks_rq.RQBackend"}}  # django_rq not installed: enqueue fails

    with django_capture_on_commit_callbacks(execute=True):
        assert send_mail("Hi", "Body", "shop@acme.test", ["ann@example.org"]) == 1

    assert Message.objects.get().status == Message.Status.QUEUED
    assert OutboxState.objects.get().kick_pending is False
    assert "Could not enqueue a delivery run; the sweep will retry" in caplog.text


def test_retries_are_scheduled_with_the_task_backend(db_tasks, settings):
    settings.TRANSACTIONAL_DELIVERY_BACKEND = "tests.test_worker.AlwaysDown"
    settings.TRANSACTIONAL_RETRY_BASE_SECONDS = 60
    send(1)

    delivery.deliver_due()

    message = Message.objects.get()
    assert message.status == Message.Status.RETRYING
    scheduled = DBTaskResult.objects.get(task_path="transactional.tasks.deliver", status="READY")
    assert scheduled.run_after == message.next_attempt_at


class AlwaysDown:
    """A delivery backend whose server refuses every connection."""

    def __init__(self, fail_silently=False, **kwargs):
        pass

    def open(self):
        raise ConnectionRefusedError(111, "Connection refused")

    def close(self):
        pass


def test_a_run_stops_after_its_time_budget_and_hands_over(db_tasks, settings, mailoutbox):
    settings.TRANSACTIONAL_RUN_SECONDS = 0
    settings.TRANSACTIONAL_BATCH_SIZE = 2
    send(5)

    assert delivery.deliver_due() == 2

    assert len(mailoutbox) == 2
    assert DBTaskResult.objects.filter(task_path="transactional.tasks.deliver", status="READY").count() == 1


def test_a_send_while_a_run_is_pending_only_reads_the_flag(db_tasks, django_capture_on_commit_callbacks):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with django_capture_on_commit_callbacks(execute=True):
        send(1)
    with CaptureQueriesContext(connection) as queries:
        tasks.kick()

    assert [q["sql"].split()[0] for q in queries.captured_queries] == ["SELECT"]
    assert DBTaskResult.objects.filter(task_path="transactional.tasks.deliver").count() == 1

    OutboxState.objects.update(kick_pending=False)  # the run started
    tasks.kick()
    assert DBTaskResult.objects.filter(task_path="transactional.tasks.deliver").count() == 2


@pytest.mark.django_db(transaction=True)
def test_results_are_recorded_in_groups_not_one_by_one(settings, outbox, mail_settings):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with running_fake_mailgun(latency=0.01) as esp:  # calls end one by one, spread out
        mail_settings("mailgun", MAILGUN_API_KEY="key-test", MAILGUN_SENDER_DOMAIN="mg.acme-mail.com",
                      MAILGUN_API_URL=esp.base_url)
        settings.EMAIL_BACKEND = "transactional.backends.EmailBackend"
        settings.TASKS = DB_TASKS
        settings.TRANSACTIONAL_BATCH_SIZE = 50
        send(50)
        with CaptureQueriesContext(connection) as queries:
            assert delivery.deliver_due() == 50

    marked_sent = [q for q in queries.captured_queries
                   if q["sql"].startswith('UPDATE "transactional_message"') and "'sent'" in q["sql"]]
    assert 1 <= len(marked_sent) <= 5  # a group per quarter second at most, not one per call
    assert esp.count == 50
    assert set(Message.objects.values_list("status", flat=True)) == {"sent"}


def test_finished_calls_wait_for_a_full_group_and_the_rest_is_recorded_at_the_end(outbox, caplog):
    send(3)
    claimed = delivery.claim(3)
    results = [
        delivery.Result(m.pk, m.claimed_at, "locmem", called=True,
                        recipients={r.address: ("sent", m.message_id) for r in m.recipients.all()})
        for m in claimed
    ]
    unrecorded = delivery._Unrecorded(size=100)

    unrecorded.add(results)
    unrecorded.record(idle=False)  # neither full, nor old, nor idle: it waits
    assert Message.objects.filter(status="sending").count() == 3

    unrecorded.record_rest()
    assert unrecorded.sent == 3
    assert set(Message.objects.values_list("status", flat=True)) == {"sent"}
    assert set(Attempt.objects.values_list("outcome", flat=True)) == {"sent"}


@pytest.fixture
def failing_check():
    """Register a system check with the given tag that always reports an error."""
    registered = []

    def register(tag: str) -> None:
        def check(app_configs, **kwargs):
            return [checks.Error(f"broken {tag}", id=f"tests.E{len(registered)}")]

        checks.register(check, tag)
        registered.append(check)

    yield register
    for check in registered:
        checks.registry.registry.registered_checks.discard(check)


@pytest.mark.django_db(transaction=True)
def test_the_worker_runs_the_system_checks_but_not_the_url_ones(db_tasks, failing_check):
    failing_check(checks.Tags.urls)
    db_tasks(skip_checks=False)  # a broken URL check does not stop a worker

    failing_check(checks.Tags.models)
    with pytest.raises(SystemCheckError, match="broken models"):
        db_tasks(skip_checks=False)
