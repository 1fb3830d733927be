"""SendGrid tracking webhook (transactional/webhooks/sendgrid.py): signature, batches, transaction."""

import base64
import json
import logging
import sqlite3
import threading

import pytest
from anymail.signals import EventType, tracking
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from django.contrib.auth.models import Group
from django.db import DatabaseError, connection, reset_queries
from django.test.utils import CaptureQueriesContext

from tests.factories import make_message
from transactional.models import Event, Message
from transactional.testing.webhooks import (  # noqa: F401  (fixtures)
    basic_auth,
    kinds,
    post_webhook,
    sendgrid_batch,
    sendgrid_event,
    sendgrid_keypair,
    sendgrid_signed,
    tracking_events,
    webhooks,
)

pytestmark = [
    pytest.mark.django_db,
    # anymail 15 warns on every SendGrid view; we support SendGrid ourselves.
    pytest.mark.filterwarnings("ignore::anymail.exceptions.AnymailNotSupportedWarning"),
]

URL = "/anymail/sendgrid/tracking/"


def assert_nothing_recorded(tracking_events):
    assert tracking_events == []
    assert Event.objects.count() == 0


def post_body(client, body, *, content_type="application/json", sign=True):
    body = body.encode() if isinstance(body, str) else body
    headers = {"Authorization": basic_auth("anymail:test-webhook-password")}
    if sign:
        headers.update(sendgrid_signed(body))
    return client.post(URL, data=body, content_type=content_type, headers=headers)


@pytest.mark.parametrize(
    ("kind", "event_type"),
    [
        ("processed", EventType.QUEUED),
        ("delivered", EventType.DELIVERED),
        ("hard_bounce", EventType.BOUNCED),
        ("blocked", EventType.BOUNCED),
        ("soft_bounce", EventType.DEFERRED),
        ("dropped", EventType.REJECTED),
        ("complaint", EventType.COMPLAINED),
        ("open", EventType.OPENED),
        ("click", EventType.CLICKED),
        ("unsubscribe", EventType.UNSUBSCRIBED),
        ("group_unsubscribe", EventType.UNSUBSCRIBED),
    ],
)
def test_each_stored_event_is_dispatched(client, webhooks, tracking_events, kind, event_type):
    response = post_webhook(client, "sendgrid", sendgrid_event(kind))

    assert response.status_code == 200
    [(esp_name, event)] = tracking_events
    assert (esp_name, event.event_type, event.recipient) == (
        "SendGrid",
        event_type,
        "ann@example.org",
    )
    assert event.message_id == "5f0b3d2e-8c1a-4e6f-9b7d-2a4c6e8f0b1d"


def test_every_stored_kind_is_covered():
    assert set(kinds("sendgrid")) >= {
        "delivered",
        "hard_bounce",
        "soft_bounce",
        "complaint",
        "open",
        "click",
        "unsubscribe",
        "batch",
    }


def test_a_batch_dispatches_every_event_and_records_them(client, webhooks, tracking_events):
    batch = sendgrid_batch()

    assert post_webhook(client, "sendgrid", batch).status_code == 200
    assert [event.event_id for _, event in tracking_events] == [e["sg_event_id"] for e in batch]
    assert Event.objects.filter(esp="sendgrid").count() == len(batch)


def test_templates_target_a_stored_message(client, webhooks, tracking_events):
    event = sendgrid_event(
        "delivered", message_id="0f1e2d3c", recipient="bob@example.org", event_id="evt-1"
    )

    post_webhook(client, "sendgrid", event)

    [(_, parsed)] = tracking_events
    assert (parsed.message_id, parsed.recipient, parsed.event_id) == (
        "0f1e2d3c",
        "bob@example.org",
        "evt-1",
    )


def test_an_empty_batch_is_accepted(client, webhooks, tracking_events):
    assert post_body(client, "[]").status_code == 200
    assert tracking_events == []


# Authentication
# ------------------------------------------------------------------------------


@pytest.mark.parametrize("auth", [None, "anymail:wrong-password"])
def test_missing_or_wrong_basic_auth_is_refused(client, webhooks, tracking_events, auth):
    assert (
        post_webhook(client, "sendgrid", sendgrid_event("delivered"), auth=auth).status_code == 400
    )
    assert_nothing_recorded(tracking_events)


def test_both_credentials_work_during_a_rotation(client, webhooks, settings, tracking_events):
    settings.ANYMAIL = {
        **settings.ANYMAIL,
        "WEBHOOK_SECRET": ["anymail:old-password", "anymail:new-password"],
    }

    old = post_webhook(client, "sendgrid", sendgrid_event("delivered"), auth="anymail:old-password")
    new = post_webhook(client, "sendgrid", sendgrid_event("open"), auth="anymail:new-password")

    assert (old.status_code, new.status_code) == (200, 200)
    assert len(tracking_events) == 2


def test_production_without_webhook_secret_refuses_every_post(
    client, webhooks, settings, tracking_events
):
    settings.ANYMAIL = {**settings.ANYMAIL, "WEBHOOK_SECRET": ""}

    assert post_webhook(client, "sendgrid", sendgrid_event("delivered")).status_code == 503
    assert_nothing_recorded(tracking_events)


def test_missing_signature_is_refused(client, webhooks, tracking_events):
    assert (
        post_webhook(client, "sendgrid", sendgrid_event("delivered"), sign=False).status_code == 400
    )
    assert_nothing_recorded(tracking_events)


def test_signature_by_another_key_is_refused(client, webhooks, tracking_events):
    other = sendgrid_keypair().private_key

    assert (
        post_webhook(
            client, "sendgrid", sendgrid_event("delivered"), sendgrid_key=other
        ).status_code
        == 400
    )
    assert_nothing_recorded(tracking_events)


def test_tampered_body_is_refused(client, webhooks, tracking_events):
    body = json.dumps([sendgrid_event("delivered")]).encode()
    headers = sendgrid_signed(body) | {"Authorization": basic_auth(webhooks.secret)}

    response = client.post(
        URL, data=body.replace(b"ann@", b"eve@"), content_type="application/json", headers=headers
    )

    assert response.status_code == 400
    assert_nothing_recorded(tracking_events)


def test_garbled_signature_header_is_refused(client, webhooks, tracking_events):
    headers = {"X-Twilio-Email-Event-Webhook-Signature": "%%%not-base64"}

    response = post_webhook(client, "sendgrid", sendgrid_event("delivered"), headers=headers)

    assert response.status_code == 400
    assert_nothing_recorded(tracking_events)


def test_without_verification_key_basic_auth_alone_is_checked(
    client, webhooks, settings, tracking_events
):
    anymail = dict(settings.ANYMAIL)
    del anymail["SENDGRID_TRACKING_WEBHOOK_VERIFICATION_KEY"]
    settings.ANYMAIL = anymail

    assert (
        post_webhook(client, "sendgrid", sendgrid_event("delivered"), sign=False).status_code == 200
    )
    assert len(tracking_events) == 1


def test_invalid_verification_key_refuses_with_503_naming_it(
    client, webhooks, settings, tracking_events, caplog
):
    settings.ANYMAIL = {
        **settings.ANYMAIL,
        "SENDGRID_TRACKING_WEBHOOK_VERIFICATION_KEY": "MFkwEwYHKoZIzj0CAQYI",
    }

    with caplog.at_level(logging.ERROR, logger="transactional.webhooks"):
        response = post_webhook(client, "sendgrid", sendgrid_event("delivered"))

    assert response.status_code == 503
    assert "SENDGRID_TRACKING_WEBHOOK_VERIFICATION_KEY" in caplog.text
    assert_nothing_recorded(tracking_events)


def test_a_verification_key_that_is_not_elliptic_curve_refuses_with_503(
    client, webhooks, settings, tracking_events, caplog
):
    """anymail loads any public key, then fails to verify every post with it."""
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    der = rsa_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    settings.ANYMAIL = {
        **settings.ANYMAIL,
        "SENDGRID_TRACKING_WEBHOOK_VERIFICATION_KEY": base64.b64encode(der).decode(),
    }

    with caplog.at_level(logging.ERROR, logger="transactional.webhooks"):
        response = post_webhook(client, "sendgrid", sendgrid_event("delivered"))

    assert response.status_code == 503
    assert "not an elliptic-curve public key" in caplog.text
    assert_nothing_recorded(tracking_events)


# Malformed input: 4xx, nothing recorded; batches judged event by event
# ------------------------------------------------------------------------------

MALFORMED_BODIES = {
    "not json": "[{'event': 'delivered'}",
    "not utf-8": b"[\xff]",
    "object instead of array": json.dumps(sendgrid_event("delivered")),
    "number": "42",
    "string": '"delivered"',
    "null": "null",
    "array of non-events": json.dumps([1, "two", None, []]),
    "events without event": json.dumps([{"email": "ann@example.org", "sg_event_id": "x"}]),
    "event not a string": json.dumps([{"event": ["delivered"], "email": "ann@example.org"}]),
    "timestamp not a number": json.dumps([{"event": "delivered", "timestamp": "yesterday"}]),
    "timestamp out of range": json.dumps([{"event": "delivered", "timestamp": 10**20}]),
    "timestamp out of the C library's range": json.dumps(
        [{"event": "delivered", "timestamp": 2**62}]
    ),
    "dropped reason not a string": json.dumps([{"event": "dropped", "reason": 550}]),
    "email not a string": json.dumps([{"event": "delivered", "email": ["ann@example.org"]}]),
    "event id too long": json.dumps([{"event": "delivered", "sg_event_id": "x" * 300}]),
}


@pytest.mark.parametrize("body", MALFORMED_BODIES.values(), ids=MALFORMED_BODIES.keys())
def test_malformed_bodies_are_a_400_and_record_nothing(client, webhooks, tracking_events, body):
    assert post_body(client, body).status_code == 400
    assert_nothing_recorded(tracking_events)


def test_form_encoded_body_is_a_400(client, webhooks, tracking_events):
    body = "event=delivered&email=ann%40example.org"

    assert (
        post_body(client, body, content_type="application/x-www-form-urlencoded").status_code == 400
    )
    assert_nothing_recorded(tracking_events)


def test_malformed_events_are_skipped_and_the_rest_recorded(
    client, webhooks, tracking_events, caplog
):
    good = [sendgrid_event("delivered"), sendgrid_event("open")]
    batch = [good[0], {"email": "no-event@example.org"}, "garbage", good[1]]

    with caplog.at_level(logging.WARNING, logger="transactional.webhooks"):
        response = post_body(client, json.dumps(batch))

    assert response.status_code == 200
    assert [event.event_id for _, event in tracking_events] == [e["sg_event_id"] for e in good]
    assert (
        "Skipped 2 malformed event(s) of 4 in a SendGrid batch (#1: TypeError, #2: TypeError)"
        in caplog.text
    )


def test_events_the_database_could_not_store_are_skipped_not_the_batch(client, webhooks):
    """One bad event must not fail the post: SendGrid would retry the whole batch for a day."""
    events = [
        sendgrid_event("open", extra={"useragent": "Mozilla SURROGATE"}),
        sendgrid_event("delivered", recipient="İ" * 300 + "@example.org"),  # 600 once lower-cased
        sendgrid_event("delivered", extra={"unique_arg": "NESTED"}),
        sendgrid_event("hard_bounce", recipient="ann@example.org"),
    ]
    body = (
        json.dumps(events)
        .replace("SURROGATE", "\\ud800")  # a lone UTF-16 surrogate, as JSON escapes it
        .replace('"NESTED"', "[" * 200 + "]" * 200)
    )

    assert post_body(client, body).status_code == 200

    assert list(Event.objects.values_list("address", flat=True)) == ["ann@example.org"]


@pytest.mark.parametrize(
    "spelling",
    ["NaN", "Infinity", "-Infinity", "1e999", '"ann\\u0000"', '"ann\\udc00"'],
    ids=["NaN", "Infinity", "-Infinity", "a float too big", "a NUL", "a lone low surrogate"],
)
def test_what_json_reads_and_the_database_refuses_is_skipped_in_a_clean_batch(client, webhooks, spelling):
    """The body's text is scanned once for these; when it has one, every event is checked in full."""
    events = [
        sendgrid_event("open", extra={"unique_arg": "ODD"}),
        sendgrid_event("hard_bounce", recipient="ann@example.org"),
    ]
    body = json.dumps(events).replace('"ODD"', spelling)

    assert post_body(client, body).status_code == 200

    assert list(Event.objects.values_list("address", flat=True)) == ["ann@example.org"]


def test_a_surrogate_pair_is_recorded(client, webhooks):
    """An escaped emoji sends the batch to the full check, which passes it."""
    events = [sendgrid_event("open", recipient="ann@example.org", extra={"useragent": "EMOJI"})]
    body = json.dumps(events).replace("EMOJI", "Mail \\ud83d\\udce7")

    assert post_body(client, body).status_code == 200

    assert Event.objects.get().raw["useragent"] == "Mail \U0001f4e7"


def test_oversized_body_is_a_413(client, webhooks, settings, tracking_events):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 5000

    assert (
        post_webhook(client, "sendgrid", [sendgrid_event("open") for _ in range(20)]).status_code
        == 413
    )
    assert_nothing_recorded(tracking_events)


# One transaction per post
# ------------------------------------------------------------------------------


@pytest.fixture
def failing_receiver():
    """A receiver that writes a row per event, then fails with a database error on the third."""
    calls = []

    def receiver(sender, event, esp_name, **kwargs):
        calls.append(event)
        Group.objects.create(name=f"written-for-{event.event_id}")
        if len(calls) == 3:
            raise DatabaseError("disk full")

    tracking.connect(receiver, weak=False, dispatch_uid="test-failing-receiver")
    yield calls
    tracking.disconnect(dispatch_uid="test-failing-receiver")


def test_a_database_error_is_a_5xx_and_rolls_back_the_whole_post(
    client, webhooks, failing_receiver
):
    client.raise_request_exception = False

    response = post_webhook(client, "sendgrid", sendgrid_batch())

    assert response.status_code == 500
    assert len(failing_receiver) == 3
    assert not Group.objects.exists()
    assert not Event.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_receivers_run_inside_a_transaction_committed_before_the_response(client, webhooks):
    seen = []

    def receiver(sender, event, esp_name, **kwargs):
        seen.append(connection.in_atomic_block)
        Group.objects.create(name=f"written-for-{event.event_id}")

    tracking.connect(receiver, weak=False, dispatch_uid="test-atomic-receiver")
    try:
        response = post_webhook(client, "sendgrid", sendgrid_batch())
    finally:
        tracking.disconnect(dispatch_uid="test-atomic-receiver")

    assert response.status_code == 200
    assert seen == [True] * 5
    assert not connection.in_atomic_block
    assert Group.objects.count() == 5
    assert Event.objects.filter(esp="sendgrid").count() == 5


@pytest.mark.django_db(transaction=True)
def test_a_message_deleted_while_its_event_is_recorded_is_read_again(client, webhooks):
    """outbox purge may delete a message after the recorder read it, before it wrote."""
    message = make_message(status="sent", to=["ann@example.com"], recipient_status="sent")
    message.recipients.update(esp_message_id="sg-about-to-go")
    calls = []

    def purge_once(sender, event, esp_name, **kwargs):  # runs after the recorder's reads
        calls.append(event)
        if len(calls) == 1:
            Message.objects.filter(pk=message.pk).delete()

    tracking.connect(purge_once, weak=False, dispatch_uid="test-purge-once")
    try:
        response = post_webhook(
            client,
            "sendgrid",
            [sendgrid_event("delivered", message_id="sg-about-to-go", recipient="ann@example.com")],
        )
    finally:
        tracking.disconnect(dispatch_uid="test-purge-once")

    # The first attempt's insert broke the foreign key and was rolled back, purge included.
    assert response.status_code == 200
    assert len(calls) == 2
    event = Event.objects.get()
    assert event.message_id == message.pk and event.recipient.status == "delivered"


@pytest.mark.django_db(transaction=True)
@pytest.mark.skipif(connection.vendor != "sqlite", reason="SQLite's write lock: BEGIN IMMEDIATE")
def test_the_recorder_reads_before_the_post_takes_the_write_lock(client, webhooks):
    message = make_message(status="sent", to=["ann@example.com"], recipient_status="sent")
    message.recipients.update(esp_message_id="sg-1")
    batch = [
        sendgrid_event(kind, message_id="sg-1", recipient="ann@example.com")
        for kind in kinds("sendgrid")
        if kind != "batch"
    ]

    reset_queries()
    with CaptureQueriesContext(connection) as queries:
        assert post_webhook(client, "sendgrid", batch).status_code == 200
    statements = [query["sql"].split()[0] for query in queries]

    begin = statements.index("BEGIN")
    assert statements[:begin].count("SELECT") == 2  # recorded or unlinked events; recipients
    assert "SELECT" not in statements[begin : statements.index("INSERT")]
    assert Event.objects.filter(recipient__message=message).count() == len(batch)


def hold_the_write_lock(seconds: float) -> threading.Thread:
    """Take SQLite's write lock from another connection, as another worker's post does."""
    other = sqlite3.connect(
        connection.settings_dict["NAME"], isolation_level=None, check_same_thread=False
    )
    other.execute("BEGIN IMMEDIATE")

    def release():
        threading.Event().wait(seconds)
        other.rollback()
        other.close()

    holder = threading.Thread(target=release, daemon=True)
    holder.start()
    return holder


def busy_timeout() -> int:
    with connection.cursor() as cursor:
        cursor.execute("PRAGMA busy_timeout")
        return cursor.fetchone()[0]


@pytest.mark.django_db(transaction=True)
@pytest.mark.skipif(connection.vendor != "sqlite", reason="SQLite's write lock: BEGIN IMMEDIATE")
def test_a_post_waits_its_turn_for_the_write_lock(client, webhooks):
    connection.ensure_connection()
    holder = hold_the_write_lock(0.3)

    response = post_webhook(client, "sendgrid", [sendgrid_event("delivered")])
    holder.join()

    assert response.status_code == 200
    assert Event.objects.count() == 1
    assert busy_timeout() == 20_000  # SQLite's own wait, for everything else, as configured


@pytest.mark.django_db(transaction=True)
@pytest.mark.skipif(connection.vendor != "sqlite", reason="SQLite's write lock: BEGIN IMMEDIATE")
def test_a_post_gives_up_on_the_write_lock_after_the_database_timeout(client, webhooks, monkeypatch):
    """A 5xx, so the ESP retries; the wait is the database's timeout option, not SQLite's 20 s."""
    connection.ensure_connection()  # SQLite's handler: the 20 s it was opened with
    monkeypatch.setitem(connection.settings_dict["OPTIONS"], "timeout", 0.2)
    client.raise_request_exception = False
    holder = hold_the_write_lock(1.5)

    response = post_webhook(client, "sendgrid", [sendgrid_event("delivered")])
    locked_until_now = holder.is_alive()
    holder.join()

    assert locked_until_now
    assert response.status_code == 500
    assert Event.objects.count() == 0
    assert busy_timeout() == 200
