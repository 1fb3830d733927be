"""The outbox backend: what send_mail() stores, and what the worker then sends."""

import logging
from datetime import timedelta
from email.mime.image import MIMEImage

import pytest
from anymail.message import AnymailMessage
from django.core import checks, mail
from django.core.mail import EmailMultiAlternatives, get_connection, send_mail
from django.db import transaction
from django.utils import timezone

from transactional import outbox as outbox_module
from transactional.exceptions import MessageTooLarge, ProviderConfigurationError
from transactional.models import Message, Recipient, Suppression

pytestmark = pytest.mark.django_db

PIXEL = bytes.fromhex("47494638396101000100800000000000ffffff21f90401000000002c00000000010001000002024401003b")


@pytest.fixture
def deliver_on_commit(outbox, django_capture_on_commit_callbacks):
    """Send inside a block whose commit runs the (immediate) delivery task."""
    return lambda: django_capture_on_commit_callbacks(execute=True)


def test_send_mail_stores_then_delivers_after_commit(deliver_on_commit, mailoutbox):
    with deliver_on_commit():
        accepted = send_mail("Receipt", "Thanks!", "Shop <shop@acme.test>", ["ann@example.org", "Bob <BOB@example.org>"])
        stored = Message.objects.get()
        assert stored.status == Message.Status.QUEUED
        assert mailoutbox == []

    assert accepted == 1
    stored.refresh_from_db()
    assert stored.status == Message.Status.SENT
    assert stored.attempts == 1
    assert stored.provider == "locmem"
    assert stored.sent_at is not None
    assert stored.subject == "Receipt"
    assert stored.from_email == "Shop <shop@acme.test>"
    assert list(stored.recipients.values_list("address", "kind", "status")) == [
        ("ann@example.org", "to", "sent"),
        ("bob@example.org", "to", "sent"),
    ]
    [sent] = mailoutbox
    assert sent.to == ["ann@example.org", "Bob <BOB@example.org>"]
    assert sent.extra_headers["Message-ID"] == stored.message_id
    assert stored.message_id.endswith("@acme.test>")
    assert stored.recipients.first().esp_message_id == stored.message_id


def test_a_rolled_back_transaction_stores_and_sends_nothing(deliver_on_commit, mailoutbox):
    with deliver_on_commit():
        with pytest.raises(RuntimeError), transaction.atomic():
            send_mail("Never", "Rolled back", "shop@acme.test", ["ann@example.org"])
            raise RuntimeError("the view failed after sending")

    assert not Message.objects.exists()
    assert mailoutbox == []


def test_nothing_is_sent_before_commit(outbox, mailoutbox, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        send_mail("Later", "Body", "shop@acme.test", ["ann@example.org"])

    assert mailoutbox == []
    assert len(callbacks) == 1


def test_send_messages_counts_messages_with_a_recipient(outbox):
    connection = get_connection()
    messages = [
        mail.EmailMessage("One", "1", "shop@acme.test", ["a@example.org"]),
        mail.EmailMessage("Nobody", "2", "shop@acme.test", []),
        mail.EmailMessage("Two", "3", "shop@acme.test", ["b@example.org"]),
    ]

    assert connection.send_messages(messages) == 2
    assert Message.objects.count() == 2


def test_the_worker_sends_exactly_what_the_caller_built(deliver_on_commit, mailoutbox):
    email = EmailMultiAlternatives(
        "Ваш заказ №42", "Текст", "Магазин <shop@acme.test>", ["ann@example.org"],
        cc=["cc@example.org"], bcc=["audit@acme.test"], reply_to=["help@acme.test"],
        headers={"X-Order": "42", "List-Unsubscribe": "<mailto:unsub@acme.test>"},
    )
    email.attach_alternative("<p>Текст <img src='cid:logo'></p>", "text/html")
    email.attach("invoice.pdf", b"%PDF-1.4 binary \x00\xff", "application/pdf")
    logo = MIMEImage(PIXEL, "gif")
    logo.add_header("Content-ID", "<logo>")
    email.attach(logo)
    email.tags = ["receipt"]
    email.metadata = {"order": 42}
    email.envelope_sender = "bounces@acme.test"
    email.track_clicks = False
    original = email.message().as_bytes()

    with deliver_on_commit():
        email.send()

    [sent] = mailoutbox
    assert sent.subject == email.subject
    assert sent.cc == ["cc@example.org"] and sent.bcc == ["audit@acme.test"]
    assert sent.reply_to == ["help@acme.test"]
    assert sent.extra_headers["X-Order"] == "42"
    assert sent.alternatives == email.alternatives
    assert sent.attachments[0] == email.attachments[0]
    assert sent.attachments[1].as_bytes() == logo.as_bytes()
    assert (sent.tags, sent.metadata, sent.envelope_sender, sent.track_clicks) == (
        ["receipt"], {"order": 42}, "bounces@acme.test", False
    )
    assert len(sent.message().as_bytes()) == pytest.approx(len(original), abs=200)


def test_an_inline_image_goes_through_the_outbox(deliver_on_commit, mailoutbox):
    # anymail makes it a MIMEImage on Django 5.2, an email.message.MIMEPart on Django 6.
    email = AnymailMessage("Logo", "Text", "shop@acme.test", ["ann@example.org"])
    cid = email.attach_inline_image(PIXEL, filename="logo.gif")

    with deliver_on_commit():
        email.send()

    [sent] = mailoutbox
    assert sent.attachments[0]["Content-ID"] == f"<{cid}>"
    assert sent.attachments[0].get_payload(decode=True) == PIXEL


def test_suppressed_recipients_are_dropped_at_enqueue(deliver_on_commit, mailoutbox):
    Suppression.objects.create(address="Bounced@Example.org", reason="bounced")

    with deliver_on_commit():
        accepted = send_mail("Hi", "Body", "shop@acme.test", ["ann@example.org", "bounced@example.org"])

    assert accepted == 1
    message = Message.objects.get()
    assert message.status == Message.Status.SENT
    assert dict(message.recipients.values_list("address", "status")) == {
        "ann@example.org": "sent",
        "bounced@example.org": "suppressed",
    }
    assert mailoutbox[0].to == ["ann@example.org"]


def test_a_message_with_only_suppressed_recipients_never_reaches_the_provider(deliver_on_commit, mailoutbox):
    Suppression.objects.create(address="bounced@example.org", reason="bounced")

    with deliver_on_commit():
        accepted = send_mail("Hi", "Body", "shop@acme.test", ["bounced@example.org"])

    assert accepted == 0
    message = Message.objects.get()
    assert message.status == Message.Status.SUPPRESSED
    assert message.attempts == 0
    assert message.last_error == "Every recipient is on the suppression list."
    assert mailoutbox == []


def test_suppression_is_checked_again_at_each_attempt(outbox, transactional_outbox, settings):
    send_mail("Hi", "Body", "shop@acme.test", ["ann@example.org", "bob@example.org"])
    Suppression.objects.create(address="bob@example.org", reason="complained")

    [sent] = transactional_outbox.deliver()

    assert sent.to == ["ann@example.org"]
    assert dict(Recipient.objects.values_list("address", "status")) == {
        "ann@example.org": "sent",
        "bob@example.org": "suppressed",
    }


def test_everyone_suppressed_between_attempts_ends_suppressed(transactional_outbox):
    send_mail("Hi", "Body", "shop@acme.test", ["bob@example.org"])
    Suppression.objects.create(address="bob@example.org", reason="complained")

    assert transactional_outbox.deliver() == []
    message = Message.objects.get()
    assert message.status == Message.Status.SUPPRESSED
    assert message.attempt_log.get().outcome == "suppressed"


def test_bypass_suppression_for_mail_that_must_go(deliver_on_commit, mailoutbox):
    Suppression.objects.create(address="bob@example.org", reason="unsubscribed")
    notice = mail.EmailMessage("Your password was changed", "If this was not you...", "security@acme.test", ["bob@example.org"])
    notice.bypass_suppression = True

    with deliver_on_commit():
        notice.send()

    assert mailoutbox[0].to == ["bob@example.org"]
    assert Message.objects.get().bypass_suppression is True


def test_idempotency_key_sends_once_within_the_window(transactional_outbox, settings):
    def send() -> int:
        email = mail.EmailMessage("Receipt #7", "Paid", "shop@acme.test", ["ann@example.org"])
        email.idempotency_key = "order-7-receipt"
        return email.send()

    assert send() == 1
    assert send() == 1  # accepted, as the caller expects, but not stored again
    assert len(transactional_outbox.deliver()) == 1
    assert Message.objects.count() == 1

    Message.objects.update(created_at=timezone.now() - timedelta(days=2))
    assert send() == 1
    assert len(transactional_outbox.deliver()) == 2
    assert Message.objects.filter(idempotency_key="order-7-receipt").count() == 1


def test_an_idempotency_key_accepted_concurrently_is_not_stored_twice(outbox, monkeypatch, caplog):
    def send() -> int:
        email = mail.EmailMessage("Receipt #7", "Paid", "shop@acme.test", ["ann@example.org"])
        email.idempotency_key = "order-7-receipt"
        return email.send()

    checked = outbox_module._seen_recently

    def another_process_commits_the_same_key_after_the_check(key: str) -> bool:
        seen = checked(key)
        Message.objects.create(
            subject="Receipt #7", from_email="shop@acme.test", message_id="<other@acme.test>",
            idempotency_key=key, next_attempt_at=timezone.now(),
        )
        return seen

    monkeypatch.setattr(outbox_module, "_seen_recently", another_process_commits_the_same_key_after_the_check)
    with caplog.at_level(logging.INFO, logger="transactional.outbox"):
        assert send() == 1  # accepted: the other process stored it

    assert list(Message.objects.values_list("message_id", flat=True)) == ["<other@acme.test>"]
    assert not Recipient.objects.exists()
    assert "accepted concurrently" in caplog.text


def test_a_message_over_the_size_limit_is_refused_at_send_time(outbox, settings):
    settings.TRANSACTIONAL_MAX_MESSAGE_BYTES = 10_000
    email = mail.EmailMessage("Big", "See attachment", "shop@acme.test", ["ann@example.org"])
    # 7,600 raw bytes grow past 10,000 once base64-encoded, as providers count.
    email.attach("scan.bin", b"\x00" * 7_600, "application/octet-stream")

    with pytest.raises(MessageTooLarge, match=r"over the 10,000-byte limit \(TRANSACTIONAL_MAX_MESSAGE_BYTES\)"):
        email.send()
    assert not Message.objects.exists()


def test_fail_silently_swallows_a_refused_message_but_logs_it(outbox, settings, caplog):
    settings.TRANSACTIONAL_MAX_MESSAGE_BYTES = 100

    with caplog.at_level(logging.ERROR, logger="transactional.backends"):
        assert send_mail("Big", "x" * 500, "shop@acme.test", ["ann@example.org"], fail_silently=True) == 0

    assert "Could not store 1 message(s) in the outbox" in caplog.text


def test_send_at_holds_the_message_until_then(transactional_outbox):
    later = timezone.now() + timedelta(hours=3)
    email = mail.EmailMessage("Reminder", "Tomorrow", "shop@acme.test", ["ann@example.org"])
    email.send_at = later
    email.send()

    assert transactional_outbox.deliver() == []
    message = Message.objects.get()
    assert message.status == Message.Status.QUEUED
    assert message.send_at == later and message.next_attempt_at == later

    Message.objects.update(next_attempt_at=timezone.now())
    [sent] = transactional_outbox.deliver()
    assert not hasattr(sent, "send_at")  # the outbox held it; the provider sends now


def test_a_delivery_backend_that_is_the_outbox_is_refused(outbox, settings):
    settings.TRANSACTIONAL_DELIVERY_BACKEND = "transactional.backends.EmailBackend"

    with pytest.raises(ProviderConfigurationError, match="mail would loop forever"):
        send_mail("Loop", "Body", "shop@acme.test", ["ann@example.org"])
    assert [e.id for e in checks.run_checks() if e.id.startswith("transactional")] == ["transactional.E002"]


def test_the_test_fixture_helpers_read_well(transactional_outbox):
    send_mail("Welcome", "Hello", "shop@acme.test", ["ann@example.org"])
    transactional_outbox.suppress("bob@example.org")
    send_mail("Welcome", "Hello", "shop@acme.test", ["bob@example.org"])

    transactional_outbox.assert_sent(to="ann@example.org", subject="Welcome")
    transactional_outbox.assert_suppressed("bob@example.org")
    with pytest.raises(AssertionError, match="Expected 1 mail"):
        transactional_outbox.assert_sent(to="carol@example.org")


def test_assert_suppressed_looks_at_the_last_mail_not_the_one_that_bounced(transactional_outbox):
    send_mail("Receipt", "Thanks", "shop@acme.test", ["ann@example.org"])
    transactional_outbox.deliver()  # delivered, then (say) it bounced:
    transactional_outbox.suppress("ann@example.org", reason="bounced")
    send_mail("Another receipt", "Thanks", "shop@acme.test", ["ann@example.org"])

    transactional_outbox.assert_suppressed("ann@example.org")
    with pytest.raises(AssertionError, match="status 'sent', not 'suppressed'"):
        send_mail("Bypass", "Thanks", "shop@acme.test", ["bob@example.org"])
        transactional_outbox.assert_suppressed("bob@example.org")


@pytest.mark.parametrize(
    "build",
    [
        lambda: mail.EmailMessage("Hi", "Body", "shop@acme.test", ["ann@example.org"]),
        lambda: mail.EmailMessage("Привет " * 40, "Тело письма " * 500, "Магазин <shop@acme.test>",
                                  ["Анна <ann@example.org>"] * 20),
        lambda: _with_parts(),
    ],
)
def test_the_size_estimate_is_an_upper_bound(build):
    from transactional.outbox import _size_upper_bound, _with_message_id

    email = _with_message_id(build())

    assert _size_upper_bound(email) >= len(email.message().as_bytes())


def _with_parts() -> EmailMultiAlternatives:
    email = EmailMultiAlternatives("Report", "x" * 3000, "shop@acme.test", ["ann@example.org"])
    email.attach_alternative("<p>" + "é" * 5000 + "</p>", "text/html")
    email.attach("data.bin", bytes(range(256)) * 40, "application/octet-stream")
    email.attach("notes.txt", "ünïcode " * 300, "text/plain")
    logo = MIMEImage(PIXEL, "gif")
    logo.add_header("Content-ID", "<logo>")
    email.attach(logo)
    return email


def test_a_message_whose_estimate_is_over_but_real_size_is_under_the_limit_is_accepted(outbox, settings):
    email = mail.EmailMessage("Plain", "a" * 9_000, "shop@acme.test", ["ann@example.org"])
    settings.TRANSACTIONAL_MAX_MESSAGE_BYTES = 10_000  # 7bit body: ~9.3 kB real, estimate ~14 kB

    assert email.send() == 1
    assert 9_000 < Message.objects.get().size <= 10_000
