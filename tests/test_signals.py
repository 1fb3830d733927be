"""The public signals (transactional/signals.py): sent after the commit, fresh, robust, free when unheard.

Mail goes through the real outbox and the real delivery run; Mailgun's API
is mocked at the wire with ``responses``, and its webhooks are posted signed
through the real views.
"""

import io
import logging
from collections.abc import Iterator
from typing import Any

import pytest
import responses
from django.core.mail import send_mail
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from tests.factories import make_message
from transactional import delivery, signals, unsubscribe
from transactional.models import Event, Message, Recipient, Suppression
from transactional.suppression import suppress, suppress_many
from transactional.suppression_csv import import_csv
from transactional.testing.webhooks import mailgun_event, post_webhook, sendgrid_event

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.filterwarnings("ignore::anymail.exceptions.AnymailNotSupportedWarning"),
]

API = "https://api.mailgun.net/v3/mg.acme-mail.com/messages"
ESP_ID = "<20261126.1.ABC@mg.acme-mail.com>"
QUEUED = {"id": ESP_ID, "message": "Queued. Thank you."}
ANN, BOB = "ann@example.org", "bob@example.org"
SIGNALS = ("message_queued", "message_sent", "message_failed", "recipient_status_changed", "address_suppressed")


class Heard(list):
    """``(signal name, keyword arguments)`` of every send, with what the instances said then."""

    def named(self, name: str) -> list[dict[str, Any]]:
        return [kwargs for heard, kwargs in self if heard == name]

    def names(self) -> list[str]:
        return [name for name, _ in self]

    def changes(self) -> list[tuple[str, str, str, str | None]]:
        return [
            (k["recipient"].address, k["old_status"], k["new_status"], k["event"] and k["event"].event_type)
            for k in self.named("recipient_status_changed")
        ]


@pytest.fixture
def heard() -> Iterator[Heard]:
    """Listen to all five signals."""
    found = Heard()
    receivers = []
    for name in SIGNALS:
        def receive(sender, signal, name=name, **kwargs):
            snapshot = {
                "message_status": kwargs["message"].status if "message" in kwargs else None,
                "recipient_statuses": sorted(
                    (r.address, r.status) for r in kwargs.get("recipients", [])
                ),
            }
            found.append((name, {**kwargs, **snapshot, "sender": sender}))

        getattr(signals, name).connect(receive, dispatch_uid=f"test-{name}")
        receivers.append((name, receive))
    yield found
    for name, _ in receivers:
        getattr(signals, name).disconnect(dispatch_uid=f"test-{name}")


@pytest.fixture
def commit(django_capture_on_commit_callbacks):
    """Run the block's commit hooks as a real commit would (delivery and signals)."""
    return lambda: django_capture_on_commit_callbacks(execute=True)


@pytest.fixture
def deliver(commit):
    def run() -> int:
        with commit():
            return delivery.deliver_due()

    return run


@pytest.fixture
def mailgun(mail_settings, outbox, settings, request) -> responses.RequestsMock:
    """Deliver through anymail's Mailgun backend, its API mocked; retry at once.

    The webhook kit's credentials are added after the provider's settings
    (which replace ``ANYMAIL``), and its ``responses`` mock serves the API.
    """
    mail_settings("mailgun", MAILGUN_API_KEY="key-test", MAILGUN_SENDER_DOMAIN="mg.acme-mail.com")
    settings.EMAIL_BACKEND = "transactional.backends.EmailBackend"
    settings.TRANSACTIONAL_RETRY_BASE_SECONDS = 0
    # One call in flight: the run claims again only once the call is judged,
    # so a retry due at once is in that claim. With more, a claim made while
    # the call is still out (a slow machine) finds nothing and ends the run.
    settings.TRANSACTIONAL_CONCURRENCY = 1
    return request.getfixturevalue("webhooks").rsps


def send(*to: str, subject: str = "Receipt") -> None:
    send_mail(subject, "Paid.", "shop@acme.test", list(to or [ANN]))


# Queued and sent
# ------------------------------------------------------------------------------


def test_a_sent_message_is_announced_queued_then_sent_with_fresh_rows(mailgun, heard, commit):
    mailgun.post(API, json=QUEUED)

    with commit():  # the commit kicks an (immediate) delivery run
        send(ANN, BOB)

    message = Message.objects.get()
    assert heard.names() == ["message_queued", "message_sent", *["recipient_status_changed"] * 2]
    [queued] = heard.named("message_queued")
    assert queued["sender"] is Message and queued["message_status"] == "queued"
    assert queued["recipient_statuses"] == [(ANN, "queued"), (BOB, "queued")]
    [sent] = heard.named("message_sent")
    assert sent["message"] == message and sent["message_status"] == "sent"
    assert sent["provider"] == message.provider == "mailgun"
    assert sent["message"].sent_at is not None
    assert sent["recipient_statuses"] == [(ANN, "sent"), (BOB, "sent")]
    assert {r.esp_message_id for r in sent["recipients"]} == {ESP_ID}
    assert heard.changes() == [(ANN, "queued", "sent", None), (BOB, "queued", "sent", None)]
    changed = heard.named("recipient_status_changed")[0]
    assert changed["sender"] is Recipient and changed["recipient"].message == message


def test_a_partly_suppressed_message_is_queued_and_a_wholly_suppressed_one_is_not(outbox, heard, commit):
    Suppression.objects.create(address=BOB, reason="bounced")

    with commit():
        send(ANN, BOB, subject="Partly")
        send(BOB, subject="Wholly")

    [queued] = heard.named("message_queued")
    assert queued["message"].subject == "Partly"
    assert queued["recipient_statuses"] == [(ANN, "queued"), (BOB, "suppressed")]
    assert Message.objects.get(subject="Wholly").status == Message.Status.SUPPRESSED


def test_a_recipient_suppressed_after_queueing_is_announced_when_claimed(mailgun, heard, commit, deliver):
    mailgun.post(API, json=QUEUED)
    send(ANN, BOB)
    Suppression.objects.create(address=BOB, reason="complained")

    deliver()

    assert heard.changes() == [(BOB, "queued", "suppressed", None), (ANN, "queued", "sent", None)]


# Failed
# ------------------------------------------------------------------------------


def test_a_permanent_failure_is_announced_once_with_its_error(mailgun, heard, deliver):
    mailgun.post(API, status=400, json={"message": "'to' parameter is not a valid address."})
    send(ANN)

    deliver()

    [failed] = heard.named("message_failed")
    assert failed["message_status"] == "failed" and failed["reason"] == "permanent error"
    assert "not a valid address" in failed["message"].last_error
    assert "not a valid address" in str(failed["error"])
    assert failed["recipient_statuses"] == [(ANN, "failed")]
    assert heard.changes() == [(ANN, "queued", "failed", None)]
    assert heard.named("message_sent") == []


def test_retrying_a_failed_message_by_hand_announces_its_recipients_queued_again(mailgun, heard, deliver, commit):
    from transactional import operations
    from transactional.models import Message

    mailgun.post(API, status=400, json={"message": "'to' parameter is not a valid address."})
    send(ANN)
    deliver()
    heard.clear()

    with commit():
        assert operations.retry(Message.objects.all()).requeued == 1

    # Queued again, then (the immediate backend delivers at once) refused again.
    assert heard.changes() == [(ANN, "failed", "queued", None), (ANN, "queued", "failed", None)]


def test_a_transient_failure_that_is_retried_is_not_a_failure(mailgun, heard, deliver):
    mailgun.post(API, status=500, json={"message": "Internal error"})
    mailgun.post(API, json=QUEUED)
    send(ANN)

    deliver()

    assert Message.objects.get().attempts == 2
    assert heard.names() == ["message_sent", "recipient_status_changed"]


def test_running_out_of_attempts_is_a_failure(mailgun, heard, deliver, settings):
    settings.TRANSACTIONAL_MAX_ATTEMPTS = 2
    mailgun.post(API, status=500, json={"message": "Internal error"})
    send(ANN)

    deliver()

    [failed] = heard.named("message_failed")
    assert failed["reason"] == "gave up after 2 attempt(s)"


# Webhooks
# ------------------------------------------------------------------------------


def test_a_hard_bounce_changes_the_status_and_suppresses_with_the_event(
    client, mailgun, heard, commit, deliver
):
    mailgun.post(API, json=QUEUED)
    send(ANN)
    deliver()
    heard.clear()

    with commit():
        response = post_webhook(client, "mailgun", mailgun_event("hard_bounce", message_id=ESP_ID, recipient=ANN))

    assert response.status_code == 200
    event = Event.objects.get()
    assert heard.changes() == [(ANN, "sent", "bounced", "bounced")]
    [changed] = heard.named("recipient_status_changed")
    assert changed["event"] == event and changed["recipient"].status == "bounced"
    [suppressed] = heard.named("address_suppressed")
    assert suppressed["sender"] is Suppression and suppressed["event"] == event
    row = suppressed["suppression"]
    assert (row.pk, row.address, row.reason, row.source) == (Suppression.objects.get().pk, ANN, "bounced", "mailgun")
    assert heard.names() == ["recipient_status_changed", "address_suppressed"]


def test_several_events_for_one_recipient_in_one_post_are_one_change(client, webhooks, heard, commit):
    sendgrid_id = "5f0b7c38-1f5e-4e4e-9d4b-0d9f1c7a2b61"
    message = make_message(status=Message.Status.SENT, to=[ANN], recipient_status="sent", provider="sendgrid")
    message.recipients.update(esp_message_id=sendgrid_id)
    batch = [sendgrid_event(kind, message_id=sendgrid_id, recipient=ANN) for kind in ("delivered", "open", "processed")]

    with commit():
        assert post_webhook(client, "sendgrid", batch).status_code == 200

    assert heard.changes() == [(ANN, "sent", "opened", "opened")]
    assert heard.named("address_suppressed") == []


def test_a_replayed_webhook_is_not_announced_again(client, mailgun, heard, commit, deliver):
    mailgun.post(API, json=QUEUED)
    send(ANN)
    deliver()
    heard.clear()
    bounce = mailgun_event("hard_bounce", message_id=ESP_ID, recipient=ANN)

    with commit():
        post_webhook(client, "mailgun", bounce)
        post_webhook(client, "mailgun", bounce)

    assert heard.names() == ["recipient_status_changed", "address_suppressed"]


# Suppression from every path
# ------------------------------------------------------------------------------


def test_suppressions_by_hand_import_and_unsubscribe_are_announced_without_an_event(
    admin_client, client, heard, commit, settings
):
    settings.TRANSACTIONAL_STREAMS = ["newsletter"]
    with commit():
        admin_client.post(reverse("admin:transactional_suppression_add"), {"address": ANN, "reason": "manual"})
        import_csv(io.BufferedReader(io.BytesIO(f"{BOB}\ncat@example.org\n".encode())))
        token = unsubscribe.make_token("dan@example.org", "newsletter")
        client.post(reverse("transactional-unsubscribe", args=[token]), "List-Unsubscribe=One-Click",
                    content_type="application/x-www-form-urlencoded")
        suppress("eve@example.org", reason="manual", source="support")

    found = [
        (k["suppression"].address, k["suppression"].stream, k["suppression"].source, k["event"])
        for k in heard.named("address_suppressed")
    ]
    assert found == [
        (ANN, "", "admin", None),
        (BOB, "", "import", None),
        ("cat@example.org", "", "import", None),
        ("dan@example.org", "newsletter", "one-click", None),
        ("eve@example.org", "", "support", None),
    ]
    assert all(k["suppression"].pk for k in heard.named("address_suppressed"))


def test_only_new_suppressions_are_announced(heard, commit):
    suppress(ANN, reason="bounced")
    heard.clear()

    with commit():
        suppress(ANN, reason="manual")
        suppress_many([Suppression(address=ANN, reason="bounced"), Suppression(address=BOB, reason="bounced")])

    assert [k["suppression"].address for k in heard.named("address_suppressed")] == [BOB]


# After the commit only, and robustly
# ------------------------------------------------------------------------------


def test_nothing_is_announced_for_a_rolled_back_transaction(outbox, heard, commit):
    with commit(), pytest.raises(RuntimeError), transaction.atomic():
        send(ANN)
        suppress(BOB, reason="manual")
        raise RuntimeError("rolled back")

    assert heard == []
    assert Message.objects.count() == 0


def test_nothing_is_announced_before_the_commit(outbox, heard, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False):
        send(ANN)
        suppress(BOB, reason="manual")

    assert heard == []


def test_a_raising_receiver_neither_loses_mail_nor_stops_the_batch(mailgun, heard, deliver, caplog):
    mailgun.post(API, json=QUEUED)

    def broken(**kwargs):
        raise ValueError("receiver bug")

    signals.message_sent.connect(broken, dispatch_uid="broken")
    try:
        for n in range(3):
            send(f"user{n}@example.org")
        with caplog.at_level(logging.ERROR, logger="transactional.signals"):
            assert deliver() == 3
    finally:
        signals.message_sent.disconnect(dispatch_uid="broken")

    assert set(Message.objects.values_list("status", flat=True)) == {"sent"}
    assert len(heard.named("message_sent")) == 3  # the other receiver heard every one
    errors = [r.getMessage() for r in caplog.records if r.name == "transactional.signals"]
    assert len(errors) == 3
    assert "tests.test_signals.test_a_raising_receiver_neither_loses_mail_nor_stops_the_batch.<locals>.broken" in errors[0]
    assert "message_sent raised ValueError: receiver bug" in errors[0]


# Free when nobody listens; one callback per group when someone does
# ------------------------------------------------------------------------------


@pytest.fixture
def hooks_off(monkeypatch):
    """Replace every hook with a no-op: the cost of the code without signals."""

    def off() -> None:
        for name in dir(signals):
            if name.startswith("announce_"):
                monkeypatch.setattr(signals, name, lambda *args, **kwargs: None)
        monkeypatch.setattr(signals, "queued_collector", lambda: None)
        monkeypatch.setattr(signals, "statuses", lambda rows: {})

    return off


def _cost(client, commit) -> tuple[int, int]:
    """Queries and commit callbacks of sending 5 mails, delivering them, and bouncing one."""
    with CaptureQueriesContext(connection) as queries, commit() as callbacks:
        for n in range(5):
            send(f"user{n}@example.org")
        delivery.deliver_due()
        post_webhook(client, "mailgun", mailgun_event("hard_bounce", message_id=ESP_ID, recipient="user0@example.org"))
    return len(queries), len(callbacks)


def _forget_mail() -> None:
    Message.objects.all().delete()
    Event.objects.all().delete()
    Suppression.objects.all().delete()


def test_with_no_receivers_the_hooks_cost_no_query_and_no_callback(client, mailgun, commit, hooks_off):
    mailgun.post(API, json=QUEUED)
    _cost(client, commit)  # warm up: the first run creates the outbox's and providers' state rows
    _forget_mail()
    with_hooks = _cost(client, commit)
    _forget_mail()
    hooks_off()

    assert _cost(client, commit) == with_hooks


def test_a_group_of_results_is_one_callback(mailgun, heard, django_capture_on_commit_callbacks, monkeypatch):
    mailgun.post(API, json=QUEUED)
    for n in range(5):
        send(f"user{n}@example.org")
    groups = []
    record_successes = delivery._record_successes
    monkeypatch.setattr(delivery, "_record_successes",
                        lambda results: groups.append(len(results)) or record_successes(results))

    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        delivery.deliver_due()

    assert len(heard.named("message_sent")) == 5
    assert len(heard.named("recipient_status_changed")) == 5
    assert sum(groups) == 5
    signal_callbacks = [c for c in callbacks if getattr(c, "__module__", "") == signals.__name__]
    assert len(signal_callbacks) == len([size for size in groups if size])
