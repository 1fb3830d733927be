"""Mailgun tracking webhook (transactional/webhooks/mailgun.py): auth, timestamp window, bad input."""

import json
import logging
import time
from urllib.parse import urlencode

import pytest
from anymail.signals import EventType
from django.urls import resolve

from transactional.models import Event, Suppression
from transactional.testing.webhooks import (  # noqa: F401  (fixtures)
    MAILGUN_SIGNING_KEY,
    basic_auth,
    kinds,
    mailgun_event,
    mailgun_signed,
    post_webhook,
    tracking_events,
    webhook_url,
    webhooks,
)
from transactional.webhooks.mailgun import MailgunTrackingView

pytestmark = pytest.mark.django_db

URL = "/anymail/mailgun/tracking/"
HOUR = 3600


def assert_nothing_recorded(tracking_events):
    assert tracking_events == []
    assert Event.objects.count() == 0


def post_json(client, body, *, auth="anymail:test-webhook-password", content_type="application/json"):
    headers = {"Authorization": basic_auth(auth)} if auth else {}
    return client.post(URL, data=body, content_type=content_type, headers=headers)


def test_our_view_answers_at_anymails_path():
    assert webhook_url("mailgun") == URL
    assert resolve(URL).func.view_class is MailgunTrackingView


@pytest.mark.parametrize(
    ("kind", "event_type"),
    [
        ("delivered", EventType.DELIVERED),
        ("hard_bounce", EventType.BOUNCED),
        ("soft_bounce", EventType.DEFERRED),
        ("complaint", EventType.COMPLAINED),
        ("open", EventType.OPENED),
        ("click", EventType.CLICKED),
        ("unsubscribe", EventType.UNSUBSCRIBED),
    ],
)
def test_each_stored_payload_is_dispatched_once(client, webhooks, tracking_events, kind, event_type):
    response = post_webhook(client, "mailgun", mailgun_event(kind))

    assert response.status_code == 200
    [(esp_name, event)] = tracking_events
    assert esp_name == "Mailgun"
    assert event.event_type == event_type
    assert event.recipient == "ann@example.org"
    assert event.message_id == "<20260314093012.1.5B4D2A7E8C1F3A09@mg.acme-mail.com>"


def test_every_stored_kind_is_covered():
    assert set(kinds("mailgun")) == {
        "delivered", "hard_bounce", "soft_bounce", "complaint", "open", "click", "unsubscribe",
    }


def test_templates_target_a_stored_message(client, webhooks, tracking_events):
    payload = mailgun_event(
        "delivered", message_id="<abc.123@mg.acme-mail.com>", recipient="bob@example.org", timestamp=1773480000
    )

    assert post_webhook(client, "mailgun", payload).status_code == 200
    [(_, event)] = tracking_events
    assert event.message_id == "<abc.123@mg.acme-mail.com>"
    assert event.recipient == "bob@example.org"
    assert event.timestamp.timestamp() == 1773480000


def test_event_is_recorded_and_a_replay_is_not_recorded_twice(client, webhooks, tracking_events):
    body = json.dumps(mailgun_signed(mailgun_event("delivered"), MAILGUN_SIGNING_KEY))

    first, replay = post_json(client, body), post_json(client, body)

    assert (first.status_code, replay.status_code) == (200, 200)
    token = json.loads(body)["signature"]["token"]
    assert Event.objects.filter(esp="mailgun", event_id=token).count() == 1


# Authentication
# ------------------------------------------------------------------------------


@pytest.mark.parametrize("auth", [None, "anymail:wrong-password", "intruder:test-webhook-password"])
def test_missing_or_wrong_basic_auth_is_refused(client, webhooks, tracking_events, auth):
    response = post_webhook(client, "mailgun", mailgun_event("delivered"), auth=auth)

    assert response.status_code == 400
    assert_nothing_recorded(tracking_events)


def test_both_credentials_work_during_a_rotation(client, webhooks, settings, tracking_events):
    settings.ANYMAIL = {**settings.ANYMAIL, "WEBHOOK_SECRET": ["anymail:old-password", "anymail:new-password"]}

    old = post_webhook(client, "mailgun", mailgun_event("delivered"), auth="anymail:old-password")
    new = post_webhook(client, "mailgun", mailgun_event("open"), auth="anymail:new-password")
    retired = post_webhook(client, "mailgun", mailgun_event("click"), auth="anymail:test-webhook-password")

    assert (old.status_code, new.status_code, retired.status_code) == (200, 200, 400)
    assert len(tracking_events) == 2


def test_production_without_webhook_secret_refuses_every_post(client, webhooks, settings, tracking_events, caplog):
    settings.ANYMAIL = {**settings.ANYMAIL, "WEBHOOK_SECRET": []}

    with caplog.at_level(logging.ERROR, logger="transactional.webhooks"):
        response = post_webhook(client, "mailgun", mailgun_event("delivered"))

    assert response.status_code == 503
    assert "ANYMAIL_WEBHOOK_SECRET" in caplog.text
    assert_nothing_recorded(tracking_events)


def test_debug_without_webhook_secret_relies_on_the_signature(client, webhooks, settings, tracking_events):
    settings.DEBUG = True
    settings.ANYMAIL = {**settings.ANYMAIL, "WEBHOOK_SECRET": []}

    assert post_webhook(client, "mailgun", mailgun_event("delivered")).status_code == 200
    assert post_webhook(client, "mailgun", mailgun_event("open"), signing_key="not-the-key").status_code == 400
    assert len(tracking_events) == 1


@pytest.mark.parametrize("debug", [False, True])
def test_without_signing_key_refuses_rather_than_fall_back_to_the_api_key(
    client, webhooks, settings, tracking_events, caplog, debug
):
    settings.DEBUG = debug
    anymail = {**settings.ANYMAIL, "MAILGUN_API_KEY": "key-api"}
    del anymail["MAILGUN_WEBHOOK_SIGNING_KEY"]
    settings.ANYMAIL = anymail

    with caplog.at_level(logging.ERROR, logger="transactional.webhooks"):
        response = post_webhook(client, "mailgun", mailgun_event("delivered"), signing_key="key-api")

    assert response.status_code == 503
    assert "MAILGUN_WEBHOOK_SIGNING_KEY" in caplog.text
    assert_nothing_recorded(tracking_events)


def test_wrong_signature_is_refused(client, webhooks, tracking_events):
    response = post_webhook(client, "mailgun", mailgun_event("delivered"), signing_key="someone-elses-key")

    assert response.status_code == 400
    assert_nothing_recorded(tracking_events)


def test_tampered_payload_is_refused(client, webhooks, tracking_events):
    signed = mailgun_signed(mailgun_event("delivered"))
    signed["signature"]["token"] = "f" * 50

    assert post_webhook(client, "mailgun", signed, sign=False).status_code == 400
    assert_nothing_recorded(tracking_events)


# Timestamp window
# ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("offset", "status"),
    [(-13 * HOUR, 400), (-11 * HOUR, 200), (-60, 200), (0, 200), (120, 200), (10 * 60, 400)],
    ids=["13h-old", "11h-old", "1min-old", "now", "2min-ahead", "10min-ahead"],
)
def test_signature_timestamp_window(client, webhooks, tracking_events, offset, status):
    signed = mailgun_signed(mailgun_event("delivered"), timestamp=time.time() + offset)

    assert post_webhook(client, "mailgun", signed, sign=False).status_code == status
    assert len(tracking_events) == (1 if status == 200 else 0)


def test_max_age_is_a_setting(client, webhooks, settings):
    settings.TRANSACTIONAL_MAILGUN_MAX_AGE_SECONDS = 600
    signed = mailgun_signed(mailgun_event("delivered"), timestamp=time.time() - 900)

    assert post_webhook(client, "mailgun", signed, sign=False).status_code == 400


def test_legacy_form_webhook_is_parsed_and_windowed(client, webhooks, tracking_events):
    def legacy_post(timestamp):
        fields = mailgun_signed({}, timestamp=timestamp)["signature"]
        fields.update({"event": "delivered", "recipient": "ann@example.org", "Message-Id": "<a.b@mg.acme-mail.com>"})
        return client.post(URL, data=fields, headers={"Authorization": basic_auth("anymail:test-webhook-password")})

    assert legacy_post(time.time()).status_code == 200
    assert legacy_post(time.time() - 13 * HOUR).status_code == 400
    [(_, event)] = tracking_events
    assert (event.event_type, event.message_id) == (EventType.DELIVERED, "<a.b@mg.acme-mail.com>")


# Malformed input: 4xx, nothing recorded
# ------------------------------------------------------------------------------


def signed_with(event_data):
    return json.dumps(mailgun_signed({"event-data": event_data}))


MALFORMED_JSON_BODIES = {
    "top-level array": json.dumps([mailgun_event("delivered")]),
    "not json": "event=delivered&token=x",
    "not utf-8": b"\xff\xfe{}",
    "no signature": json.dumps(mailgun_event("delivered") | {"signature": None}),
    "signature not an object": json.dumps({"signature": "abc", "event-data": {}}),
    "non-ascii token": json.dumps({"signature": {"timestamp": "1", "token": "é", "signature": "x"}}),
    "no event-data": json.dumps(mailgun_signed({})),
    "event-data not an object": json.dumps(mailgun_signed({"event-data": ["delivered"]})),
    "no event": signed_with({"recipient": "ann@example.org"}),
    "event not a string": signed_with({"event": ["delivered"]}),
    "timestamp not a number": signed_with({"event": "delivered", "timestamp": "yesterday"}),
    "timestamp out of range": signed_with({"event": "delivered", "timestamp": 1e20}),
    "recipient not a string": signed_with({"event": "delivered", "recipient": {"email": "ann@example.org"}}),
    "message-id not a string": signed_with({"event": "delivered", "message": {"headers": {"message-id": 42}}}),
    "message not an object": signed_with({"event": "delivered", "message": "hello"}),
}


@pytest.mark.parametrize("body", MALFORMED_JSON_BODIES.values(), ids=MALFORMED_JSON_BODIES.keys())
def test_malformed_json_is_a_400_and_records_nothing(client, webhooks, tracking_events, body):
    response = post_json(client, body)

    assert response.status_code == 400
    assert_nothing_recorded(tracking_events)


@pytest.mark.parametrize(
    "odd",
    [{"tags": True}, {"tags": [{"a": 1}]}, {"user-variables": ["x"]}, {"user-variables": None}],
    ids=["tags not a list", "tags not strings", "user-variables a list", "user-variables null"],
)
def test_odd_tags_or_user_variables_do_not_lose_the_event(client, webhooks, odd):
    """Fields the recorder does not key on are stored as well as they can be."""
    event = mailgun_event("hard_bounce", recipient="ann@example.org")
    event["event-data"].update(odd)

    assert post_json(client, json.dumps(mailgun_signed(event))).status_code == 200

    recorded = Event.objects.get()
    assert recorded.event_type == "bounced"
    assert "tags" not in odd or recorded.tags == []
    assert "user-variables" not in odd or recorded.metadata == {}
    assert Suppression.objects.filter(address="ann@example.org").exists()


def test_json_sent_as_form_is_a_400(client, webhooks, tracking_events):
    body = json.dumps(mailgun_signed(mailgun_event("delivered")))

    assert post_json(client, body, content_type="application/x-www-form-urlencoded").status_code == 400
    assert_nothing_recorded(tracking_events)


@pytest.mark.parametrize(
    "fields",
    [
        {"event": "delivered"},  # no signature fields
        {"timestamp": "not-a-number", "token": "t", "signature": "s"},
        # an inbound route pointed at the tracking URL: signed, but no event
        {"sender": "ann@example.org", "recipient": "support@mg.acme-mail.com", "subject": "Hi"},
    ],
    ids=["unsigned", "bad-timestamp", "inbound"],
)
def test_form_body_missing_fields_is_a_400(client, webhooks, tracking_events, fields):
    if "sender" in fields:
        fields = {**fields, **mailgun_signed({})["signature"]}
    response = client.post(URL, data=fields, headers={"Authorization": basic_auth("anymail:test-webhook-password")})

    assert response.status_code == 400
    assert_nothing_recorded(tracking_events)


def test_oversized_body_is_a_413(client, webhooks, settings, tracking_events):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 2000
    payload = mailgun_event("delivered", extra={"padding": "x" * 3000})

    assert post_webhook(client, "mailgun", payload).status_code == 413
    assert_nothing_recorded(tracking_events)


def test_rejections_are_logged_without_secrets(client, webhooks, caplog):
    signed = mailgun_signed(mailgun_event("delivered"), "someone-elses-key")

    with caplog.at_level(logging.DEBUG):
        post_webhook(client, "mailgun", signed, sign=False)

    assert "Rejected a Mailgun webhook (400)" in caplog.text
    for secret in ("test-webhook-password", basic_auth(webhooks.secret), signed["signature"]["signature"]):
        assert secret not in caplog.text


def test_get_is_not_allowed_and_head_answers(client, webhooks):
    assert client.get(URL).status_code == 405
    assert client.head(URL).status_code == 200


def test_non_json_numbers_are_a_400(client, webhooks, tracking_events):
    # Python's json.loads reads NaN and Infinity; no database JSON column stores them.
    body = json.dumps(mailgun_signed(mailgun_event("delivered", extra={"event": float("inf")})))

    assert "Infinity" in body
    assert post_json(client, body).status_code == 400
    assert_nothing_recorded(tracking_events)


@pytest.mark.parametrize(
    "spelling",
    ["NaN", "1e999", '"ann\\u0000"', '"ann\\ud800"'],
    ids=["NaN", "a float too big", "a NUL", "a lone surrogate"],
)
def test_what_json_reads_and_the_database_refuses_is_a_400(client, webhooks, tracking_events, spelling):
    signed = mailgun_signed(mailgun_event("delivered", extra={"user-variables": {"order": "ODD"}}))
    body = json.dumps(signed).replace('"ODD"', spelling)

    assert post_json(client, body).status_code == 400
    assert_nothing_recorded(tracking_events)


def test_a_surrogate_pair_is_recorded(client, webhooks):
    signed = mailgun_signed(mailgun_event("delivered", extra={"user-variables": {"note": "EMOJI"}}))
    body = json.dumps(signed).replace("EMOJI", "\\ud83d\\udce7")

    assert post_json(client, body).status_code == 200
    assert Event.objects.get().metadata == {"note": "\U0001f4e7"}


# Legacy (form) webhooks: a user variable may repeat one of Mailgun's fields
# ------------------------------------------------------------------------------


def post_legacy(client, *fields: tuple[str, str]):
    """POST a signed legacy form; ``fields`` in order, repeated names allowed."""
    signature = mailgun_signed({})["signature"]
    body = urlencode([*signature.items(), *fields])
    headers = {"Authorization": basic_auth("anymail:test-webhook-password")}
    return client.post(URL, body, content_type="application/x-www-form-urlencoded", headers=headers)


LEGACY_BOUNCE = (("recipient", "ann@example.org"), ("code", "550"), ("error", "5.1.1 no such user"))


def test_a_user_variable_named_event_does_not_hide_a_legacy_bounce(client, webhooks):
    """Mailgun's value comes first (anymail reads it so); the user's follows."""
    response = post_legacy(client, ("event", "bounced"), *LEGACY_BOUNCE, ("event", "signup"))

    assert response.status_code == 200
    assert Event.objects.get().event_type == "bounced"
    assert Suppression.objects.get().address == "ann@example.org"


@pytest.mark.parametrize(("code", "reason"), [("605", "bounced"), ("607", "complained"), ("499", None)])
def test_a_legacy_drop_for_an_address_on_mailguns_list_suppresses(client, webhooks, code, reason):
    fields = (("event", "dropped"), ("recipient", "ann@example.org"), ("reason", "hardfail"))

    assert post_legacy(client, *fields, ("code", code)).status_code == 200

    assert Event.objects.get().event_type == "rejected"
    assert list(Suppression.objects.values_list("reason", flat=True)) == ([reason] if reason else [])


def test_nul_in_any_value_of_a_repeated_legacy_field_is_a_400(client, webhooks, tracking_events):
    response = post_legacy(
        client, ("event", "bounced"), *LEGACY_BOUNCE, ("description", "bad\x00"), ("description", "ok")
    )

    assert response.status_code == 400
    assert_nothing_recorded(tracking_events)


# Hostile bodies behind valid credentials: 400, nothing recorded
# ------------------------------------------------------------------------------


def test_json_nested_too_deep_for_python_is_a_400(client, webhooks, tracking_events):
    assert post_json(client, "[" * 100_000 + "]" * 100_000).status_code == 400
    assert_nothing_recorded(tracking_events)


@pytest.mark.parametrize(
    "recipient",
    ["ann\ud800@example.org", "İ" * 300 + "@example.org", "ann"],
    ids=["lone surrogate", "longer than 320 once lower-cased", "no address"],
)
def test_a_recipient_that_cannot_be_stored_is_a_400(client, webhooks, tracking_events, recipient):
    body = json.dumps(mailgun_signed(mailgun_event("hard_bounce", recipient=recipient)))

    assert post_json(client, body).status_code == 400
    assert_nothing_recorded(tracking_events)


def test_a_captured_signature_replayed_for_another_address_records_nothing(client, webhooks):
    """Mailgun signs the token and timestamp only; the token is the event's id."""
    signed = mailgun_signed(mailgun_event("delivered", recipient="ann@example.org"))
    forged = json.loads(json.dumps(signed))
    forged["event-data"].update(event="complained", recipient="bob@example.org")

    assert post_json(client, json.dumps(signed)).status_code == 200
    assert post_json(client, json.dumps(forged)).status_code == 200

    assert list(Event.objects.values_list("address", flat=True)) == ["ann@example.org"]
    assert not Suppression.objects.exists()


def test_a_signature_token_holding_nul_is_a_400(client, webhooks, tracking_events):
    """The token is anymail's event id; it is signed, not checked."""
    body = json.dumps(mailgun_signed(mailgun_event("delivered"), token="a\x00b" * 10))

    assert post_json(client, body).status_code == 400
    assert_nothing_recorded(tracking_events)
