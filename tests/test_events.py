"""ESP tracking webhooks become Event rows: once each, linked, status and suppression applied.

Payloads are posted through anymail's own views (tests/anymail_urls.py), so
these tests cover anymail's parsing of each ESP plus our recording.
"""

import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime

import pytest
import responses
from anymail.signals import AnymailTrackingEvent
from django.core import mail
from django.core.mail import send_mail
from django.db import connection, reset_queries, transaction
from django.test.utils import CaptureQueriesContext

from tests.esp import (
    MAILGUN_DOMAIN,
    MAILGUN_KEY,
    MAILGUN_MESSAGE_ID,
    SENDGRID_KEY,
    SES_ENV,
    SES_MESSAGE_ID,
    intercept_requests,
    mailgun_accepts,
    posted_json,
    sendgrid_accepts,
    stand_in_for_ses,
)
from tests.factories import make_message
from tests.tracking import (
    WHEN,
    Webhooks,
    anymail_settings,
    mailgun_delivered,
    mailgun_event,
    mailgun_failed,
    sendgrid_event,
    ses_bounce,
    ses_delivery,
    ses_event,
    ses_open,
)
from transactional import db_limits, delivery, event_queries, events, suppression
from transactional.metrics.counters import EVENTS, sums
from transactional.models import Event, Message, Recipient, Suppression

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.urls("tests.anymail_urls"),
    pytest.mark.filterwarnings("ignore::anymail.exceptions.AnymailNotSupportedWarning"),
]

ANN, BOB = "ann@example.com", "bob@example.com"
MAILGUN_ID = "<20260314093012.1.5B4D2A7E8C1F3A09@mg.acme-mail.com>"
SENDGRID_ID = "5f0b7c38-1f5e-4e4e-9d4b-0d9f1c7a2b61"
SES_ID = "0102018e3a1f2b4c-5d6e7f80-91a2-4b3c-8d4e-5f6a7b8c9d0e-000000"


@pytest.fixture
def webhooks(client, settings) -> Webhooks:
    settings.ANYMAIL = anymail_settings(getattr(settings, "ANYMAIL", {}))
    return Webhooks(client)


def sent(esp_message_id: str, *addresses: str, provider: str = "mailgun") -> Message:
    """Store a message as delivery leaves it: sent, the ESP's id on each recipient."""
    message = make_message(
        status=Message.Status.SENT,
        to=addresses or (ANN,),
        recipient_status="sent",
        provider=provider,
    )
    message.recipients.update(esp_message_id=esp_message_id)
    return message


def status_of(message: Message, address: str = ANN) -> str:
    return message.recipients.get(address=address).status


# Recording each ESP's fields
# ------------------------------------------------------------------------------


def test_a_mailgun_event_is_recorded_with_every_field_and_linked(webhooks):
    message = sent(MAILGUN_ID)

    webhooks.mailgun(
        mailgun_delivered(recipient="Ann@Example.com", message_id=MAILGUN_ID), token="t" * 50
    )

    event = Event.objects.get()
    recipient = message.recipients.get()
    assert (event.esp, event.event_id, event.address) == ("mailgun", "t" * 50, ANN)
    assert (event.event_type, event.esp_message_id) == ("delivered", MAILGUN_ID)
    assert event.timestamp == datetime.fromtimestamp(WHEN + 0.5, tz=UTC)
    assert (event.message, event.recipient) == (message, recipient)
    assert (event.mta_response, event.description, event.reject_reason) == ("OK", "", "")
    assert (event.tags, event.metadata) == (["receipt"], {"order_id": "1042"})
    assert event.raw["event"] == "delivered"
    assert recipient.status == Recipient.Status.DELIVERED


def test_mailgun_raw_keeps_the_event_but_not_the_signature(webhooks):
    webhooks.mailgun(mailgun_delivered(recipient=ANN, message_id=MAILGUN_ID))

    raw = Event.objects.get().raw
    assert "signature" not in raw and "event-data" not in raw
    assert raw["message"]["headers"]["subject"] == "Your receipt"


def test_a_legacy_mailgun_post_is_recorded_from_its_form_fields(webhooks):
    message = sent(MAILGUN_ID)

    webhooks.mailgun_legacy(
        {
            "event": "bounced",
            "recipient": ANN,
            "domain": "mg.acme-mail.com",
            "code": "550",
            "error": "5.1.1 The email account that you tried to reach does not exist.",
            "Message-Id": MAILGUN_ID.strip("<>"),
            "message-headers": "[]",
        },
        token="legacy-token",
    )

    event = Event.objects.get()
    assert (event.event_id, event.event_type, event.recipient) == (
        "legacy-token",
        "bounced",
        message.recipients.get(),
    )
    assert event.raw["code"] == "550" and "signature" not in event.raw
    assert Suppression.objects.get().reason == "bounced"


def test_a_sendgrid_batch_records_each_event(webhooks):
    message = sent(SENDGRID_ID, provider="sendgrid")
    common = {"email": ANN, "anymail_id": SENDGRID_ID}

    webhooks.sendgrid(
        [
            sendgrid_event("processed", **common),
            sendgrid_event("delivered", response="250 2.0.0 OK", **common),
            sendgrid_event("open", useragent="Mozilla/5.0", sg_machine_open=False, **common),
            sendgrid_event(
                "click", url="https://acme.test/orders/1042", category="receipt", **common
            ),
        ]
    )

    rows = {event.event_type: event for event in Event.objects.all()}
    assert set(rows) == {"queued", "delivered", "opened", "clicked"}
    assert all(row.message == message and row.esp == "sendgrid" for row in rows.values())
    assert rows["delivered"].mta_response == "250 2.0.0 OK"
    assert rows["opened"].user_agent == "Mozilla/5.0"
    # SendGrid's newer fields leak into anymail's metadata; ours keeps the custom args only.
    assert rows["opened"].metadata == {"order_id": "1042"}
    assert rows["clicked"].click_url == "https://acme.test/orders/1042"
    assert rows["clicked"].tags == ["receipt"]  # SendGrid sent a bare string
    assert rows["clicked"].raw["url"] == "https://acme.test/orders/1042"
    assert status_of(message) == Recipient.Status.CLICKED


def test_an_ses_notification_records_one_event_per_recipient_under_one_id(webhooks):
    message = sent(SES_ID, ANN, BOB, provider="ses")

    webhooks.ses(
        ses_delivery([ANN, BOB], message_id=SES_ID, destination=[ANN, BOB]),
        sns_message_id="6a1a4f3c-sns",
    )

    rows = Event.objects.order_by("address")
    assert [(r.esp, r.event_id, r.address, r.event_type) for r in rows] == [
        ("amazon_ses", "6a1a4f3c-sns", ANN, "delivered"),
        ("amazon_ses", "6a1a4f3c-sns", BOB, "delivered"),
    ]
    assert rows[0].mta_response == "250 2.6.0 Message received"
    assert (rows[0].tags, rows[0].metadata) == (["receipt"], {"order_id": "1042"})
    assert rows[0].raw["eventType"] == "Delivery"  # the SES event, not the SNS envelope
    assert {status_of(message, a) for a in (ANN, BOB)} == {Recipient.Status.DELIVERED}


# Duplicates
# ------------------------------------------------------------------------------


def test_a_replayed_mailgun_post_writes_nothing_the_second_time(webhooks):
    message = sent(MAILGUN_ID)
    bounce = mailgun_failed(recipient=ANN, message_id=MAILGUN_ID)
    webhooks.mailgun(bounce, token="replayed-token")
    before = message.recipients.get().updated_at

    webhooks.mailgun(bounce, token="replayed-token")

    assert Event.objects.count() == 1
    assert Suppression.objects.count() == 1
    assert message.recipients.get().updated_at == before


def test_sendgrid_repeats_within_and_across_batches_are_recorded_once(webhooks):
    delivered = sendgrid_event("delivered", email=ANN, anymail_id=SENDGRID_ID)

    webhooks.sendgrid([delivered, delivered])
    webhooks.sendgrid([delivered, sendgrid_event("open", email=ANN, anymail_id=SENDGRID_ID)])

    assert sorted(Event.objects.values_list("event_type", flat=True)) == ["delivered", "opened"]


def test_an_event_without_an_id_is_keyed_by_a_hash_of_its_payload():
    def anonymous() -> AnymailTrackingEvent:
        return AnymailTrackingEvent(
            event_type="delivered",
            recipient=ANN,
            message_id=SENDGRID_ID,
            esp_event={"event": "delivered", "email": ANN, "timestamp": WHEN},
        )

    first = events.record(anonymous(), "SendGrid")
    again = events.record(anonymous(), "SendGrid")

    assert first is not None and len(first.event_id) == 64
    assert again is None
    assert Event.objects.count() == 1


def sendgrid_tracking(event_id: str, kind: str, message_id: str = "") -> AnymailTrackingEvent:
    return AnymailTrackingEvent(
        event_type=kind, event_id=event_id, recipient=ANN, message_id=message_id, esp_event={}
    )


def test_an_event_a_concurrent_request_recorded_first_is_skipped():
    """Two requests read before either writes: the second to write skips what the first recorded."""
    late = events.prepare(
        [sendgrid_tracking("raced", "complained"), sendgrid_tracking("fresh", "delivered")],
        "SendGrid",
    )
    events.record(sendgrid_tracking("raced", "complained"), "SendGrid")  # the other request

    with transaction.atomic():
        recorded = late.write()

    assert [row.event_id for row in recorded] == ["fresh"] and recorded[0].pk
    assert Event.objects.count() == 2
    assert Suppression.objects.get().event.event_id == "raced"
    # prepare() worked the metrics out before the write: the skipped row counts once.
    counted = {key.label: total for key, total, _ in sums(since=date.min) if key.name == EVENTS}
    assert counted == {"complained": 1, "delivered": 1}


def test_a_status_read_before_a_concurrent_request_raised_it_is_not_lowered():
    message = sent(SENDGRID_ID, provider="sendgrid")
    late = events.prepare([sendgrid_tracking("d1", "delivered", SENDGRID_ID)], "SendGrid")
    events.record(sendgrid_tracking("c1", "clicked", SENDGRID_ID), "SendGrid")  # the other request

    with transaction.atomic():
        late.write()

    assert status_of(message) == Recipient.Status.CLICKED
    assert message.events.count() == 2


def test_events_from_an_unsupported_esp_are_logged_and_ignored(caplog):
    event = AnymailTrackingEvent(event_type="delivered", event_id="1", recipient=ANN, esp_event={})

    with caplog.at_level(logging.WARNING, logger="transactional.events"):
        assert events.record(event, "Postmark") is None

    assert not Event.objects.exists()
    assert "unsupported ESP 'Postmark'" in caplog.text


# Linking
# ------------------------------------------------------------------------------


def test_an_event_before_its_message_is_sent_waits_then_links_with_its_status(webhooks):
    message = make_message(status=Message.Status.SENDING)
    webhooks.mailgun(mailgun_delivered(recipient=ANN, message_id=MAILGUN_ID))
    webhooks.mailgun(mailgun_event("opened", recipient=ANN, message_id=MAILGUN_ID))
    assert Event.objects.filter(message=None).count() == 2

    # What delivery records on success, then the call it makes:
    message.recipients.update(esp_message_id=MAILGUN_ID, status=Recipient.Status.SENT)
    linked = events.link_pending(message.recipients.all())

    assert linked == 2
    assert not Event.objects.filter(message=None).exists()
    assert Event.objects.filter(recipient__address=ANN, message=message).count() == 2
    assert status_of(message) == Recipient.Status.OPENED


def test_the_next_event_links_the_ones_that_came_before_the_message(webhooks):
    message = make_message(status=Message.Status.SENDING)
    webhooks.mailgun(mailgun_event("opened", recipient=ANN, message_id=MAILGUN_ID))
    message.recipients.update(esp_message_id=MAILGUN_ID, status=Recipient.Status.SENT)

    webhooks.mailgun(mailgun_delivered(recipient=ANN, message_id=MAILGUN_ID))

    assert not Event.objects.filter(message=None).exists()
    assert status_of(message) == Recipient.Status.OPENED


def test_link_pending_without_recipients_retries_recent_unlinked_events(webhooks):
    message = make_message(status=Message.Status.SENDING)
    webhooks.mailgun(mailgun_delivered(recipient=ANN, message_id=MAILGUN_ID))
    webhooks.mailgun(mailgun_delivered(recipient=ANN, message_id="<not-ours@example.net>"))
    message.recipients.update(esp_message_id=MAILGUN_ID, status=Recipient.Status.SENT)

    assert events.link_pending() == 1
    assert events.link_pending() == 0
    assert status_of(message) == Recipient.Status.DELIVERED


def test_an_event_read_before_the_send_was_recorded_and_written_after_links_on_the_sweep():
    """The post reads (no message yet), the worker commits the send, then the post writes."""
    message = make_message(status=Message.Status.SENDING)
    late = events.prepare([sendgrid_tracking("d1", "delivered", SENDGRID_ID)], "SendGrid")
    message.recipients.update(esp_message_id=SENDGRID_ID, status=Recipient.Status.SENT)
    assert events.link_pending(message.recipients.all()) == 0  # delivery's call: nothing yet

    with transaction.atomic():
        late.write()
    assert Event.objects.get().message is None

    assert delivery.sweep()["linked"] == 1
    assert Event.objects.get().message == message
    assert status_of(message) == Recipient.Status.DELIVERED


@pytest.mark.skipif(connection.vendor != "sqlite", reason="reads SQLite's query plan")
def test_looking_for_unlinked_events_reads_only_those_of_the_posted_messages():
    """Mail another system sends through the ESP leaves unlinked events for ever: never scan them."""
    with CaptureQueriesContext(connection) as queries:
        events.prepare(
            [sendgrid_tracking(f"e{n}", "delivered", f"{SENDGRID_ID}-{n}") for n in range(3)],
            "SendGrid",
        )
    lookup = next(q["sql"] for q in queries if "transactional_event" in q["sql"])

    with connection.cursor() as cursor:
        cursor.execute(f"EXPLAIN QUERY PLAN {lookup}")
        plan = " / ".join(row[-1] for row in cursor.fetchall())

    assert "USING INDEX event_unlinked_idx (esp_message_id=?)" in plan, plan
    assert "SCAN" not in plan, plan


def test_an_address_the_message_was_not_sent_to_links_the_message_only(webhooks):
    message = sent(MAILGUN_ID)

    webhooks.mailgun(mailgun_delivered(recipient="alias@example.com", message_id=MAILGUN_ID))

    event = Event.objects.get()
    assert (event.message, event.recipient) == (message, None)
    assert status_of(message) == Recipient.Status.SENT


# Precedence
# ------------------------------------------------------------------------------


def test_a_late_delivered_does_not_undo_an_open(webhooks):
    message = sent(MAILGUN_ID)

    webhooks.mailgun(mailgun_event("opened", recipient=ANN, message_id=MAILGUN_ID))
    webhooks.mailgun(mailgun_delivered(recipient=ANN, message_id=MAILGUN_ID))

    assert status_of(message) == Recipient.Status.OPENED


def test_a_soft_bounce_then_delivery_ends_delivered(webhooks):
    message = sent(MAILGUN_ID)

    webhooks.mailgun(
        mailgun_failed(severity="temporary", reason="generic", recipient=ANN, message_id=MAILGUN_ID)
    )
    assert status_of(message) == Recipient.Status.DEFERRED
    webhooks.mailgun(mailgun_delivered(recipient=ANN, message_id=MAILGUN_ID))

    assert status_of(message) == Recipient.Status.DELIVERED
    assert not Suppression.objects.exists()


def test_a_complaint_outranks_everything_in_any_order(webhooks):
    message = sent(SENDGRID_ID, provider="sendgrid")
    batch = [
        sendgrid_event(kind, email=ANN, anymail_id=SENDGRID_ID)
        for kind in ("click", "spamreport", "open", "delivered", "unsubscribe")
    ]

    webhooks.sendgrid(batch)

    assert status_of(message) == Recipient.Status.COMPLAINED


# Amazon SES opens and clicks: reported for every destination
# ------------------------------------------------------------------------------


def test_an_ses_open_of_a_single_destination_mail_is_that_recipients(webhooks):
    message = sent(SES_ID, provider="ses")

    webhooks.ses(ses_open(message_id=SES_ID, destination=[ANN]))

    event = Event.objects.get()
    assert event.recipient == message.recipients.get()
    assert status_of(message) == Recipient.Status.OPENED


def test_an_ses_open_of_a_mail_to_several_is_recorded_but_opens_nobody(webhooks):
    message = sent(SES_ID, ANN, BOB, provider="ses")

    webhooks.ses(ses_open(message_id=SES_ID, destination=[ANN, BOB]))

    rows = Event.objects.order_by("address")
    assert [(r.address, r.event_type, r.message, r.recipient) for r in rows] == [
        (ANN, "opened", message, None),
        (BOB, "opened", message, None),
    ]
    assert {status_of(message, a) for a in (ANN, BOB)} == {Recipient.Status.SENT}


def test_an_ses_delivery_to_several_is_attributed_per_recipient(webhooks):
    message = sent(SES_ID, ANN, BOB, provider="ses")

    webhooks.ses(ses_delivery([BOB], message_id=SES_ID, destination=[ANN, BOB]))

    assert (status_of(message, ANN), status_of(message, BOB)) == ("sent", "delivered")


# Automatic suppression
# ------------------------------------------------------------------------------


def test_a_mailgun_hard_bounce_suppresses_the_address_with_its_event(webhooks):
    sent(MAILGUN_ID)

    webhooks.mailgun(mailgun_failed(recipient=ANN, message_id=MAILGUN_ID))

    row = Suppression.objects.get()
    assert (row.address, row.reason, row.source) == (ANN, "bounced", "mailgun")
    assert row.event == Event.objects.get()
    assert len(row.address_hash) == 64


def test_a_sendgrid_blocked_bounce_is_soft_and_an_invalid_address_is_hard(webhooks):
    webhooks.sendgrid(
        [
            sendgrid_event(
                "bounce",
                email=ANN,
                anymail_id=SENDGRID_ID,
                type="blocked",
                bounce_classification="Reputation",
                reason="554 blocked",
            ),
            sendgrid_event(
                "bounce",
                email=BOB,
                anymail_id=SENDGRID_ID,
                type="bounce",
                bounce_classification="Invalid Address",
                reason="550 5.1.1 unknown user",
            ),
        ]
    )

    assert list(Suppression.objects.values_list("address", "reason", "source")) == [
        (BOB, "bounced", "sendgrid")
    ]


def test_an_ses_transient_bounce_is_soft_and_a_permanent_one_hard(webhooks):
    webhooks.ses(
        ses_bounce("Transient", "MailboxFull", [ANN], message_id=SES_ID, destination=[ANN, BOB])
    )
    webhooks.ses(
        ses_bounce("Permanent", "General", [BOB], message_id=SES_ID, destination=[ANN, BOB])
    )

    assert list(Suppression.objects.values_list("address", "reason", "source")) == [
        (BOB, "bounced", "amazon_ses")
    ]


def test_an_internationalized_domain_reported_in_punycode_matches_the_address_we_sent_to(
    webhooks,
):
    """SES reports ann@xn--bcher-kva.example for mail sent to ann@bücher.example."""
    message = sent(SES_ID, "ann@bücher.example", provider="amazon_ses")
    punycode = "ann@xn--bcher-kva.example"

    webhooks.ses(
        ses_bounce("Permanent", "General", [punycode], message_id=SES_ID, destination=[punycode])
    )

    assert status_of(message, "ann@bücher.example") == Recipient.Status.BOUNCED
    assert suppression.suppressed_among(["ANN@bücher.example", punycode]) == {"ann@bücher.example"}


@pytest.mark.parametrize(
    ("kind", "reason"),
    [
        ("spamreport", "complained"),
        ("unsubscribe", "unsubscribed"),
        ("group_unsubscribe", "unsubscribed"),
        ("open", None),
    ],
)
def test_complaints_and_unsubscribes_suppress(webhooks, kind, reason):
    webhooks.sendgrid([sendgrid_event(kind, email=ANN, anymail_id=SENDGRID_ID)])

    assert list(Suppression.objects.values_list("reason", flat=True)) == (
        [reason] if reason else []
    )


def test_an_ses_complaint_suppresses(webhooks):
    complaint = ses_event(
        "Complaint",
        message_id=SES_ID,
        destination=[ANN],
        complaint={
            "complainedRecipients": [{"emailAddress": ANN}],
            "complaintFeedbackType": "abuse",
            "timestamp": "2026-03-14T10:00:00.000Z",
            "feedbackId": "f-1",
        },
    )

    webhooks.ses(complaint)

    assert list(Suppression.objects.values_list("address", "reason")) == [(ANN, "complained")]


def test_suppression_does_not_wait_for_the_message_to_be_known(webhooks):
    webhooks.mailgun(mailgun_failed(recipient=ANN, message_id="<sent-by-another-app@example.net>"))

    assert Event.objects.get().message is None
    assert Suppression.objects.filter(address=ANN, reason="bounced").exists()


def test_an_address_already_suppressed_keeps_its_first_entry(webhooks):
    Suppression.objects.create(address=ANN, reason="manual", source="admin")

    webhooks.mailgun(mailgun_failed(recipient=ANN, message_id=MAILGUN_ID))

    assert list(Suppression.objects.values_list("reason", "source")) == [("manual", "admin")]


# Recording a request's events in bulk (events.batch())
# ------------------------------------------------------------------------------


def batch_of(count: int) -> list[dict]:
    kinds = ("processed", "delivered", "open", "click", "bounce")
    return [
        sendgrid_event(
            kinds[n % 5], email=f"user{n}@example.com", anymail_id=SENDGRID_ID, type="bounce"
        )
        for n in range(count)
    ]


@contextmanager
def captured_queries() -> Iterator[CaptureQueriesContext]:
    """CaptureQueriesContext, starting from an empty query log.

    The log is a deque capped at 9,000 queries; once earlier tests have
    filled it, its length stops growing and a plain CaptureQueriesContext
    captures nothing.
    """
    reset_queries()
    with CaptureQueriesContext(connection) as queries:
        yield queries


def recorded() -> list[tuple]:
    return sorted(
        Event.objects.values_list(
            "event_id", "address", "event_type", "message", "recipient", "metadata"
        )
    )


def test_the_batched_view_records_what_the_per_event_receiver_records(webhooks):
    message = sent(SENDGRID_ID, "user1@example.com", "user4@example.com", provider="sendgrid")
    payload = batch_of(10)

    webhooks.sendgrid(payload)
    one_by_one, suppressed = (
        recorded(),
        sorted(Suppression.objects.values_list("address", "reason")),
    )
    Event.objects.all().delete()
    Suppression.objects.all().delete()
    message.recipients.update(status=Recipient.Status.SENT)
    webhooks.sendgrid(payload, path="/batched/sendgrid/tracking/")

    assert recorded() == one_by_one
    assert sorted(Suppression.objects.values_list("address", "reason")) == suppressed
    assert (status_of(message, "user1@example.com"), status_of(message, "user4@example.com")) == (
        "delivered",
        "bounced",
    )


def test_a_batch_takes_a_few_queries_whatever_its_size(webhooks):
    sent(SENDGRID_ID, *(f"user{n}@example.com" for n in range(200)), provider="sendgrid")
    counts = []
    for size in (10, 200):
        Event.objects.all().delete()
        with captured_queries() as queries:
            webhooks.sendgrid(batch_of(size), path="/batched/sendgrid/tracking/")
        counts.append(len(queries))

    assert Event.objects.count() == 200
    # SQLite splits the 200-row inserts by its parameter limit; nothing else grows.
    assert counts[0] <= 15 and counts[1] <= 25


def test_a_batch_over_the_queries_list_limits_is_read_and_written_in_parts(webhooks, monkeypatch):
    """IN lists are split to stay inside SQLite's 32,766 parameters; here, 3 values a list."""
    monkeypatch.setattr(db_limits, "MAX_IN", 3)
    kinds = ("processed", "delivered", "open", "click", "bounce")
    early = AnymailTrackingEvent(
        event_type="delivered",
        event_id="early",
        recipient="user0@example.com",
        message_id=f"{SENDGRID_ID}-0",
        esp_event={},
    )
    events.record(early, "SendGrid")  # before its message was recorded: unlinked
    messages = [
        sent(f"{SENDGRID_ID}-{n}", f"user{n}@example.com", provider="sendgrid") for n in range(20)
    ]
    payload = [
        sendgrid_event(
            kinds[n % 5],
            email=f"user{n}@example.com",
            anymail_id=f"{SENDGRID_ID}-{n}",
            type="bounce",
        )
        for n in range(20)
    ]
    # More event ids than ESP message ids: their lists split into more parts.
    payload += [
        sendgrid_event("processed", email=f"user{n}@example.com", anymail_id=f"{SENDGRID_ID}-{n}")
        for n in range(10)
    ]

    with captured_queries() as queries:
        webhooks.sendgrid(payload, path="/batched/sendgrid/tracking/")
    # Every IN list of ids, addresses and hashes (not the fixed list of statuses).
    in_lists = [
        values.count(",") + 1
        for query in queries
        for values in re.findall(r" IN \(([^)]*)\)", query["sql"])
        if "'queued'" not in values
    ]
    with captured_queries() as retry:
        webhooks.sendgrid(payload, path="/batched/sendgrid/tracking/")  # the ESP retries
    retry_inserts = [q for q in retry if q["sql"].startswith("INSERT")]

    assert in_lists and max(in_lists) <= 3
    assert retry_inserts == []  # every event found recorded, though its ids took several queries
    assert Event.objects.count() == 31 and not Event.objects.filter(message=None).exists()
    expected = ["sent", "delivered", "opened", "clicked", "bounced"]
    assert [status_of(m, f"user{n}@example.com") for n, m in enumerate(messages)] == [
        "delivered",  # user0: the early event, linked now
        *(expected[n % 5] for n in range(1, 20)),
    ]
    assert sorted(Suppression.objects.values_list("address", flat=True)) == [
        f"user{n}@example.com" for n in (14, 19, 4, 9)
    ]


def test_nothing_is_recorded_when_the_batch_fails():
    event = AnymailTrackingEvent(event_type="delivered", event_id="e1", recipient=ANN, esp_event={})

    with pytest.raises(RuntimeError), transaction.atomic(), events.batch():
        events.receive(event, "SendGrid")
        raise RuntimeError("the view failed after parsing")

    assert not Event.objects.exists()


# The ESP's id at send time is the one its webhooks carry
# ------------------------------------------------------------------------------


@pytest.fixture
def rsps() -> Iterator[responses.RequestsMock]:
    with intercept_requests() as mock:
        yield mock


@pytest.fixture
def send_through(mail_settings, settings, webhooks):
    """Configure a provider, route send_mail() through the outbox, keep webhooks authenticated."""

    def configure(provider: str, **environ: str) -> None:
        mail_settings(provider, **environ)
        settings.EMAIL_BACKEND = "transactional.backends.EmailBackend"
        settings.ANYMAIL = anymail_settings(settings.ANYMAIL)

    return configure


def send_and_deliver() -> Message:
    send_mail("Your receipt", "Thanks!", "billing@acme-mail.com", [ANN])
    delivery.deliver_due()
    return Message.objects.get()


def test_mailgun_links_by_the_message_id_its_api_returned(send_through, rsps, webhooks):
    send_through("mailgun", MAILGUN_API_KEY=MAILGUN_KEY, MAILGUN_SENDER_DOMAIN=MAILGUN_DOMAIN)
    mailgun_accepts(rsps)
    message = send_and_deliver()

    # Mailgun's webhook carries the Message-Id header without brackets.
    webhooks.mailgun(mailgun_delivered(recipient=ANN, message_id=MAILGUN_MESSAGE_ID.strip("<>")))

    assert Event.objects.get().recipient == message.recipients.get()


def test_sendgrid_links_by_the_anymail_id_it_sent_as_a_custom_arg(send_through, rsps, webhooks):
    send_through("sendgrid", SENDGRID_API_KEY=SENDGRID_KEY)
    sendgrid_accepts(rsps)
    message = send_and_deliver()
    [personalization] = posted_json(rsps.calls[0].request)["personalizations"]

    webhooks.sendgrid(
        [
            sendgrid_event(
                "delivered", email=ANN, anymail_id=personalization["custom_args"]["anymail_id"]
            )
        ]
    )

    assert Event.objects.get().recipient == message.recipients.get()


def test_ses_links_by_the_message_id_send_email_returned(send_through, monkeypatch, webhooks):
    ses = stand_in_for_ses(monkeypatch)
    send_through("ses", AWS_REGION="eu-west-1", **SES_ENV)
    ses.accepts(SES_MESSAGE_ID)
    message = send_and_deliver()

    webhooks.ses(ses_delivery([ANN], message_id=SES_MESSAGE_ID, destination=[ANN]))

    assert Event.objects.get().recipient == message.recipients.get()


# End to end
# ------------------------------------------------------------------------------


def test_the_next_mail_to_a_hard_bounced_address_is_suppressed_without_a_provider_call(
    outbox, settings, mailoutbox, webhooks
):
    settings.TRANSACTIONAL_DELIVERY_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    send_mail("Welcome", "Hello", "shop@acme.test", ["Ann@Example.com"])
    delivery.deliver_due()
    [first] = mailoutbox
    esp_message_id = Recipient.objects.get().esp_message_id

    webhooks.mailgun(mailgun_failed(recipient=ANN, message_id=esp_message_id))
    assert Recipient.objects.get().status == Recipient.Status.BOUNCED
    send_mail("Welcome back", "Hello again", "shop@acme.test", [ANN])
    delivery.deliver_due()

    second = Message.objects.get(subject="Welcome back")
    assert second.status == Message.Status.SUPPRESSED
    assert second.recipients.get().status == Recipient.Status.SUPPRESSED
    assert mail.outbox == [first]


def test_the_recorders_reads_load_only_what_linking_needs():
    """event_queries reads rows with a cursor: the JSON payload decoded, other columns deferred."""
    early = AnymailTrackingEvent(
        event_type="opened",
        event_id="e-early",
        recipient=ANN,
        message_id=SES_ID,
        esp_event={"eventType": "Open", "mail": {"destination": [ANN]}},
    )
    events.record(early, "Amazon SES")  # before its message: unlinked
    message = sent(MAILGUN_ID, BOB)

    [row] = event_queries.recorded_or_unlinked_events("amazon_ses", ["e-early"], [SES_ID])
    [recipient] = event_queries.recipients_sent_as([MAILGUN_ID])

    assert (row.event_id, row.address, row.message_id) == ("e-early", ANN, None)
    assert row.raw == {"eventType": "Open", "mail": {"destination": [ANN]}}
    assert {"description", "metadata", "received_at"} <= row.get_deferred_fields()
    assert (recipient.message_id, recipient.address, recipient.status) == (message.pk, BOB, "sent")
    assert "updated_at" in recipient.get_deferred_fields()
