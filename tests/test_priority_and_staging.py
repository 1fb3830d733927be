"""Priorities decide the claim order; staging safety decides, at delivery, who really gets mail."""

import pytest
from django.core import mail
from django.core.mail import EmailMessage, send_mail

from transactional.delivery import claim
from transactional.models import Message, Recipient
from transactional.templated import send_templated

pytestmark = pytest.mark.django_db


@pytest.fixture
def deliver(outbox, deliver):
    """conftest's deliver, through the outbox."""
    return deliver


def notice(i: int, priority: str | None = None) -> EmailMessage:
    message = EmailMessage(f"Notice {i}", "Hello", "news@acme.test", [f"reader{i}@example.org"])
    if priority is not None:
        message.priority = priority
    return message


def test_a_password_reset_queued_behind_low_priority_notices_goes_out_first(outbox, deliver, settings):
    settings.TRANSACTIONAL_BATCH_SIZE = 10
    settings.TRANSACTIONAL_CONCURRENCY = 1  # mail.outbox in sending order
    for i in range(300):
        notice(i, "low").send()
    reset = EmailMessage("Reset your password", "Click", "security@acme.test", ["ann@example.org"])
    reset.priority = "high"
    reset.send()
    for i in range(300, 310):
        notice(i).send()  # normal

    deliver(limit=11)

    subjects = [m.subject for m in mail.outbox]
    assert subjects[0] == "Reset your password"
    # Then the normal ones, before any low one.
    assert subjects[1:] == [f"Notice {i}" for i in range(300, 310)]
    assert Message.objects.filter(priority=Message.Priority.LOW, status=Message.Status.QUEUED).count() == 300


def test_claim_takes_higher_priority_first_then_oldest(outbox):
    for i, priority in enumerate(["low", "normal", "high", "normal", "high"]):
        notice(i, priority).send()

    claimed = claim(5)

    assert [m.subject for m in claimed] == ["Notice 2", "Notice 4", "Notice 1", "Notice 3", "Notice 0"]


@pytest.mark.parametrize("given, stored", [
    (None, Message.Priority.NORMAL), ("high", Message.Priority.HIGH), (" LOW ", Message.Priority.LOW),
    (Message.Priority.HIGH, Message.Priority.HIGH),
])
def test_priority_is_stored(outbox, given, stored):
    notice(1, given).send()

    assert Message.objects.get().priority == stored


@pytest.mark.parametrize("bad", ["urgent", 1, "", ["high"]])
def test_an_unknown_priority_is_refused_at_send_and_nothing_is_stored(outbox, bad):
    with pytest.raises(ValueError, match="priority=.*use one of 'high', 'normal', 'low'"):
        notice(1, bad).send()

    assert not Message.objects.exists()


def test_send_templated_takes_a_priority(outbox):
    send_templated(
        "birthday/beatles_alert", to=["admin@acme.test"], priority="high",
        context={"first_name": "John", "last_name": "Lennon", "full_name": "John Lennon"},
    )

    assert Message.objects.get().priority == Message.Priority.HIGH


# -- Staging safety, end to end ----------------------------------------------


def test_mail_outside_the_allow_list_is_redirected_and_the_originals_are_kept(deliver, settings):
    settings.TRANSACTIONAL_ALLOWED_RECIPIENTS = ["acme.test"]
    settings.TRANSACTIONAL_REDIRECT_TO = ["QA Inbox <qa@acme.test>"]
    EmailMessage("Receipt", "Paid", "shop@acme.test", ["Ann <ann@example.org>", "dev@acme.test"],
                 cc=["bob@example.net"]).send()

    assert deliver() == 1

    [sent] = mail.outbox
    assert sent.to == ["dev@acme.test", "QA Inbox <qa@acme.test>"]
    assert sent.cc == []
    headers = sent.message()
    assert headers["X-Original-To"] == "Ann <ann@example.org>, dev@acme.test"
    assert headers["X-Original-Cc"] == "bob@example.net"
    message = Message.objects.get()
    assert message.status == Message.Status.SENT
    assert dict(message.recipients.values_list("address", "status")) == {
        "ann@example.org": Recipient.Status.REDIRECTED,
        "bob@example.net": Recipient.Status.REDIRECTED,
        "dev@acme.test": Recipient.Status.SENT,
        "qa@acme.test": Recipient.Status.SENT,  # added, so its ESP events find it
    }


def test_without_a_redirect_mail_outside_the_allow_list_is_blocked(deliver, settings):
    settings.TRANSACTIONAL_ALLOWED_RECIPIENTS = ["*.acme.test"]
    send_mail("Receipt", "Paid", "shop@acme.test", ["ann@example.org", "qa@staging.acme.test"])

    deliver()

    assert [m.to for m in mail.outbox] == [["qa@staging.acme.test"]]
    statuses = dict(Recipient.objects.values_list("address", "status"))
    assert statuses == {"ann@example.org": "blocked", "qa@staging.acme.test": "sent"}


def test_a_message_with_every_recipient_blocked_is_never_sent_and_says_why(deliver, settings):
    settings.TRANSACTIONAL_ALLOWED_RECIPIENTS = ["qa@acme.test"]
    send_mail("Receipt", "Paid", "shop@acme.test", ["ann@example.org"])

    assert deliver() == 0

    assert mail.outbox == []
    message = Message.objects.get()
    assert message.status == Message.Status.BLOCKED
    assert "TRANSACTIONAL_ALLOWED_RECIPIENTS" in message.last_error
    assert "ann@example.org" in message.last_error
    assert message.recipients.get().status == Recipient.Status.BLOCKED


def test_mail_queued_before_staging_safety_was_switched_on_obeys_it(outbox, deliver, settings):
    send_mail("Receipt", "Paid", "shop@acme.test", ["ann@example.org"])  # e.g. a restored dump
    settings.TRANSACTIONAL_REDIRECT_TO = ["qa@acme.test"]

    deliver()

    assert [m.to for m in mail.outbox] == [["qa@acme.test"]]


def test_an_invalid_allow_list_stops_delivery_before_anything_is_claimed(outbox, deliver, settings):
    from django.core.exceptions import ImproperlyConfigured

    send_mail("Receipt", "Paid", "shop@acme.test", ["ann@example.org"])
    settings.TRANSACTIONAL_ALLOWED_RECIPIENTS = ["not an address"]

    with pytest.raises(ImproperlyConfigured, match="TRANSACTIONAL_ALLOWED_RECIPIENTS"):
        deliver()

    message = Message.objects.get()
    assert (message.status, message.attempts) == (Message.Status.QUEUED, 0)
    assert mail.outbox == []


def test_invalid_staging_settings_are_an_error_of_plain_check_too(settings):
    from django.core.checks import run_checks

    settings.TRANSACTIONAL_ALLOWED_RECIPIENTS = ["not an address"]

    assert "transactional.E010" in [m.id for m in run_checks()]


def test_the_worker_refuses_to_start_with_invalid_staging_settings(settings):
    from django.core.exceptions import ImproperlyConfigured
    from django.core.management import call_command

    settings.TASKS = {"default": {"BACKEND": "django_tasks_db.DatabaseBackend"}}
    settings.TRANSACTIONAL_REDIRECT_TO = ["@"]

    with pytest.raises(ImproperlyConfigured, match="TRANSACTIONAL_REDIRECT_TO"):
        call_command("delivery_worker", "--batch", "-v0")


def test_the_oldest_due_message_is_found_whatever_its_priority(outbox):
    from datetime import timedelta

    from django.utils import timezone

    from transactional.operations import oldest_due_seconds

    notice(1, "low").send()
    notice(2, "high").send()
    Message.objects.filter(priority=Message.Priority.LOW).update(
        next_attempt_at=timezone.now() - timedelta(hours=2)
    )

    assert oldest_due_seconds() > 7000


def test_redirected_and_blocked_recipients_do_not_count_as_sent_in_the_stats(deliver, settings):
    from datetime import timedelta

    from django.utils import timezone

    from transactional.stats import _sent_per_day

    settings.TRANSACTIONAL_REDIRECT_TO = ["qa@acme.test"]
    send_mail("Receipt", "Paid", "shop@acme.test", ["ann@example.org", "bob@example.org"])
    deliver()

    now = timezone.now()
    window = (Recipient.objects.all(), now - timedelta(days=1), now + timedelta(days=1))
    assert sum(_sent_per_day(*window).values()) == 1  # qa@ only
