"""Amazon SES tracking webhook over SNS (transactional/webhooks/amazon_ses.py, sns.py)."""

import json
import logging
from unittest import mock

import boto3
import pytest
import requests
import responses
from anymail.exceptions import AnymailInsecureWebhookWarning
from anymail.signals import EventType
from moto import mock_aws

from transactional.models import Event, Suppression
from transactional.testing.webhooks import (  # noqa: F401  (fixtures)
    SNS_CERT_URL,
    SNS_TOPIC_ARN,
    SnsSigner,
    basic_auth,
    kinds,
    post_webhook,
    ses_event,
    sns_notification,
    sns_signed,
    sns_subscription_confirmation,
    tracking_events,
    webhooks,
)
from transactional.webhooks import sns
from transactional.webhooks.amazon_ses import AmazonSESTrackingView

pytestmark = pytest.mark.django_db

URL = "/anymail/amazon_ses/tracking/"
MESSAGE_ID = "0102018e3a1f2b4c-5d6e7f80-91a2-4b3c-8d4e-5f6a7b8c9d0e-000000"


def assert_nothing_recorded(tracking_events):
    assert tracking_events == []
    assert Event.objects.count() == 0


def post_envelope(client, envelope, *, body=None, auth="anymail:test-webhook-password"):
    """POST an SNS envelope as given (already signed or not), with matching SNS headers."""
    headers = {
        "x-amz-sns-message-type": str(envelope.get("Type")),
        "x-amz-sns-message-id": str(envelope.get("MessageId")),
    }
    if auth:
        headers["Authorization"] = basic_auth(auth)
    if body is None:
        return client.post(URL, json.dumps(envelope), content_type="text/plain; charset=UTF-8", headers=headers)
    return client.post(URL, body, content_type="text/plain", headers=headers)


def cert_requests(webhooks):
    return [call.request.url for call in webhooks.rsps.calls]


@pytest.mark.parametrize(
    ("kind", "event_type"),
    [
        ("delivered", EventType.DELIVERED),
        ("hard_bounce", EventType.BOUNCED),
        ("soft_bounce", EventType.BOUNCED),  # anymail: a Transient bounce is "bounced" too
        ("complaint", EventType.COMPLAINED),
        ("open", EventType.OPENED),
        ("click", EventType.CLICKED),
        ("unsubscribe", EventType.UNKNOWN),  # SES "Subscription": anymail has no mapping
        ("delivery_delay", EventType.UNKNOWN),
        ("send", EventType.SENT),
    ],
)
def test_each_event_publishing_payload_is_dispatched(client, webhooks, tracking_events, kind, event_type):
    response = post_webhook(client, "amazon_ses", ses_event(kind))

    assert response.status_code == 200
    [(esp_name, event)] = tracking_events
    assert (esp_name, event.event_type, event.recipient) == ("Amazon SES", event_type, "ann@example.org")
    assert event.message_id == MESSAGE_ID
    assert event.tags == ["invoice", "billing"]


@pytest.mark.parametrize(
    ("kind", "event_type"),
    [
        ("delivered", EventType.DELIVERED),
        ("hard_bounce", EventType.BOUNCED),
        ("soft_bounce", EventType.BOUNCED),
        ("complaint", EventType.COMPLAINED),
    ],
)
def test_each_notification_format_payload_is_dispatched(client, webhooks, tracking_events, kind, event_type):
    response = post_webhook(client, "amazon_ses", ses_event(kind, format="notification"))

    assert response.status_code == 200
    [(_, event)] = tracking_events
    assert (event.event_type, event.message_id) == (event_type, MESSAGE_ID)


def test_every_stored_kind_is_covered():
    assert set(kinds("amazon_ses")) >= {
        "delivered", "hard_bounce", "soft_bounce", "complaint", "open", "click", "unsubscribe",
        "notification_delivered", "sns_notification", "sns_subscription_confirmation",
    }


def test_templates_target_a_stored_message(client, webhooks, tracking_events):
    event = ses_event("hard_bounce", message_id="0102-abc", recipient="bob@example.org")
    envelope = sns_notification(event, message_id="sns-1", timestamp=1773480000)

    post_webhook(client, "amazon_ses", envelope)

    [(_, parsed)] = tracking_events
    assert (parsed.message_id, parsed.recipient, parsed.event_id) == ("0102-abc", "bob@example.org", "sns-1")
    assert parsed.timestamp.timestamp() == 1773480000


def test_one_notification_for_several_recipients_gives_one_event_each(client, webhooks, tracking_events):
    event = ses_event("delivered")
    event["delivery"]["recipients"] = ["ann@example.org", "bob@example.org"]

    assert post_webhook(client, "amazon_ses", event).status_code == 200
    assert [e.recipient for _, e in tracking_events] == ["ann@example.org", "bob@example.org"]
    assert len({e.event_id for _, e in tracking_events}) == 1
    assert Event.objects.filter(esp="amazon_ses").count() == 2


# Basic auth
# ------------------------------------------------------------------------------


def test_missing_auth_gets_the_401_challenge_sns_needs(client, webhooks, tracking_events):
    response = post_webhook(client, "amazon_ses", ses_event("delivered"), auth=None)

    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Basic realm=")
    assert_nothing_recorded(tracking_events)


def test_wrong_auth_is_refused(client, webhooks, tracking_events):
    assert post_webhook(client, "amazon_ses", ses_event("delivered"), auth="anymail:nope").status_code == 400
    assert_nothing_recorded(tracking_events)


def test_both_credentials_work_during_a_rotation(client, webhooks, settings, tracking_events):
    settings.ANYMAIL = {**settings.ANYMAIL, "WEBHOOK_SECRET": ["anymail:old-password", "anymail:new-password"]}

    old = post_webhook(client, "amazon_ses", ses_event("delivered"), auth="anymail:old-password")
    new = post_webhook(client, "amazon_ses", ses_event("open"), auth="anymail:new-password")

    assert (old.status_code, new.status_code) == (200, 200)
    assert len(tracking_events) == 2


def test_production_without_webhook_secret_refuses_every_post(client, webhooks, settings, tracking_events):
    settings.ANYMAIL = {**settings.ANYMAIL, "WEBHOOK_SECRET": []}

    assert post_webhook(client, "amazon_ses", ses_event("delivered"), auth=None).status_code == 503
    assert_nothing_recorded(tracking_events)


# SNS signatures
# ------------------------------------------------------------------------------


@pytest.mark.parametrize("version", ["1", "2"])
def test_both_signature_versions_are_accepted(client, webhooks, tracking_events, version):
    assert post_webhook(client, "amazon_ses", ses_event("delivered"), sns_version=version).status_code == 200
    assert len(tracking_events) == 1


def test_a_subject_is_part_of_the_signed_string(client, webhooks, tracking_events):
    envelope = sns_signed(sns_notification(ses_event("delivered"), subject="Amazon SES Email Event Notification"))
    tampered = {**envelope, "Subject": "Something else"}

    assert post_envelope(client, envelope).status_code == 200
    assert post_envelope(client, tampered).status_code == 400
    assert len(tracking_events) == 1


def test_the_certificate_is_fetched_once_and_cached(client, webhooks):
    for kind in ("delivered", "open", "click"):
        assert post_webhook(client, "amazon_ses", ses_event(kind)).status_code == 200

    assert cert_requests(webhooks) == [SNS_CERT_URL]


def bad_signatures():
    other_signer = SnsSigner.generate()  # same URL, another key
    signed = sns_signed(ses_event("delivered"))
    return {
        "unsigned": sns_notification(ses_event("delivered")) | {"Signature": None},
        "another key": sns_signed(ses_event("delivered"), other_signer),
        "tampered message": signed | {"Message": signed["Message"].replace("ann@", "eve@")},
        "tampered timestamp": signed | {"Timestamp": "2030-01-01T00:00:00.000Z"},
        "version 3": signed | {"SignatureVersion": "3"},
        "version as number": signed | {"SignatureVersion": 2},
        "signature not base64": signed | {"Signature": "%%%"},
        "signature of the wrong version": signed | {"SignatureVersion": "1"},
    }


@pytest.mark.parametrize("name", bad_signatures().keys())
def test_bad_signatures_are_refused(client, webhooks, tracking_events, name):
    assert post_envelope(client, bad_signatures()[name]).status_code == 400
    assert_nothing_recorded(tracking_events)


@pytest.mark.parametrize(
    "cert_url",
    [
        "https://sns.us-east-1.amazonaws.com.evil.com/SimpleNotificationService-0123456789abcdef.pem",
        "http://sns.us-east-1.amazonaws.com/SimpleNotificationService-0123456789abcdef.pem",
        "https://s3.amazonaws.com/my-bucket/SimpleNotificationService-0123456789abcdef.pem",
        "https://evil.com/sns.us-east-1.amazonaws.com/SimpleNotificationService-0123456789abcdef.pem",
        "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-0123456789abcdef.pem?x=.pem",
        "https://sns.us-east-1.amazonaws.com@evil.com/SimpleNotificationService-0123456789abcdef.pem",
        "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-0123456789abcdef.pem\n",
    ],
)
def test_certificates_outside_the_pattern_are_never_fetched(client, webhooks, tracking_events, cert_url):
    signer = SnsSigner.generate(cert_url=cert_url)
    webhooks.rsps.get(cert_url, body=signer.certificate_pem)  # would verify, if fetched

    response = post_webhook(client, "amazon_ses", ses_event("delivered"), sns_signer=signer)

    assert response.status_code == 400
    assert cert_requests(webhooks) == []
    assert_nothing_recorded(tracking_events)


def test_the_certificate_url_pattern_is_a_setting(client, webhooks, settings, tracking_events):
    cert_url = "https://sns.test.internal/cert.pem"
    signer = SnsSigner.generate(cert_url=cert_url)
    signer.serve(webhooks.rsps)
    settings.TRANSACTIONAL_SNS_CERT_URL_PATTERN = r"https://sns\.test\.internal/cert\.pem"

    assert post_webhook(client, "amazon_ses", ses_event("delivered"), sns_signer=signer).status_code == 200
    assert post_webhook(client, "amazon_ses", ses_event("open")).status_code == 400  # AWS's URL now untrusted


def test_a_pattern_cannot_allow_plain_http(client, webhooks, settings, tracking_events):
    cert_url = "http://sns.test.internal/cert.pem"
    signer = SnsSigner.generate(cert_url=cert_url)
    signer.serve(webhooks.rsps)
    settings.TRANSACTIONAL_SNS_CERT_URL_PATTERN = r"https?://sns\.test\.internal/cert\.pem"

    assert post_webhook(client, "amazon_ses", ses_event("delivered"), sns_signer=signer).status_code == 400
    assert cert_requests(webhooks) == []


@pytest.mark.parametrize(
    "failure",
    [{"status": 500}, {"body": requests.ConnectionError("unreachable")}, {"body": b"not a certificate"}],
    ids=["http-500", "unreachable", "not-pem"],
)
def test_an_unavailable_certificate_is_a_503_so_sns_retries(client, webhooks, tracking_events, caplog, failure):
    webhooks.rsps.replace(responses.GET, SNS_CERT_URL, **failure)

    with caplog.at_level(logging.ERROR, logger="transactional.webhooks"):
        response = post_webhook(client, "amazon_ses", ses_event("delivered"))

    assert response.status_code == 503
    assert "SNS signing certificate" in caplog.text
    assert_nothing_recorded(tracking_events)


# Topic allow-list and subscription confirmation
# ------------------------------------------------------------------------------

OTHER_TOPIC = "arn:aws:sns:us-east-1:999999999999:someone-elses-topic"


def test_an_unknown_topic_is_refused(client, webhooks, tracking_events):
    envelope = sns_notification(ses_event("delivered"), topic_arn=OTHER_TOPIC)

    assert post_webhook(client, "amazon_ses", envelope).status_code == 400
    assert cert_requests(webhooks) == []  # refused before any certificate is fetched
    assert_nothing_recorded(tracking_events)


@pytest.fixture
def auto_confirm(settings, webhooks):
    settings.ANYMAIL = {**settings.ANYMAIL, "AMAZON_SES_AUTO_CONFIRM_SNS_SUBSCRIPTIONS": True}


@pytest.mark.parametrize("signed", [True, False])
def test_an_unknown_topic_is_never_confirmed(client, auto_confirm, tracking_events, signed):
    confirmation = sns_subscription_confirmation(topic_arn=OTHER_TOPIC)
    with (
        mock.patch.object(AmazonSESTrackingView, "auto_confirm_sns_subscription") as confirm,
        mock.patch("boto3.session.Session", side_effect=AssertionError("no AWS call expected")),
    ):
        response = post_webhook(client, "amazon_ses", confirmation, sign=signed)

    assert response.status_code == 400
    confirm.assert_not_called()
    assert_nothing_recorded(tracking_events)


def test_an_unsigned_confirmation_for_our_topic_is_never_confirmed(client, auto_confirm):
    with mock.patch.object(AmazonSESTrackingView, "auto_confirm_sns_subscription") as confirm:
        response = post_webhook(client, "amazon_ses", sns_subscription_confirmation(), sign=False)

    assert response.status_code == 400
    confirm.assert_not_called()


@pytest.fixture
def aws(monkeypatch, webhooks):
    """Mocked AWS (moto); yields an SNS client in the test topic's region."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    # moto answers every *.amazonaws.com request, the certificate download
    # included: fetch (and cache) it from the kit first.
    sns.certificate_key(SNS_CERT_URL)
    with mock_aws():
        yield boto3.client("sns", region_name="us-east-1")


def test_our_topic_is_confirmed_through_sns_not_the_ses_endpoint(client, auto_confirm, settings, aws):
    aws.create_topic(Name="transactional-ses-events")
    # A local SES emulator's endpoint: confirming there would fail.
    settings.ANYMAIL = {
        **settings.ANYMAIL,
        "AMAZON_SES_CLIENT_PARAMS": {"region_name": "eu-west-1", "endpoint_url": "http://127.0.0.1:9"},
    }
    confirm = mock.patch.object(
        AmazonSESTrackingView, "auto_confirm_sns_subscription", autospec=True,
        side_effect=AmazonSESTrackingView.auto_confirm_sns_subscription,
    )

    with confirm as confirmed:
        response = post_webhook(client, "amazon_ses", sns_subscription_confirmation(), sns_version="1")

    assert response.status_code == 200
    confirmed.assert_called_once()


def test_a_failing_confirmation_is_a_503_so_sns_retries(client, auto_confirm, aws, caplog):
    # The topic does not exist in (mocked) SNS: ConfirmSubscription fails.
    with caplog.at_level(logging.ERROR, logger="transactional.webhooks"):
        response = post_webhook(client, "amazon_ses", sns_subscription_confirmation())

    assert response.status_code == 503
    assert "could not confirm the subscription" in caplog.text


def test_the_sns_client_ignores_the_ses_endpoint(settings):
    settings.ANYMAIL = {
        "AMAZON_SES_CLIENT_PARAMS": {"region_name": "eu-west-1", "endpoint_url": "http://127.0.0.1:9"},
        "WEBHOOK_SECRET": ["anymail:test-webhook-password"],
    }
    settings.TRANSACTIONAL_SNS_TOPIC_ARNS = [SNS_TOPIC_ARN]
    view = AmazonSESTrackingView()

    sns_client = view.get_boto_client("sns", region_name="us-west-2")
    s3_client = view.get_boto_client("s3")

    assert sns_client.meta.endpoint_url == "https://sns.us-west-2.amazonaws.com"
    assert s3_client.meta.endpoint_url == "http://127.0.0.1:9"


def test_production_without_topic_allow_list_refuses_every_post(client, webhooks, settings, tracking_events, caplog):
    settings.TRANSACTIONAL_SNS_TOPIC_ARNS = []

    with caplog.at_level(logging.ERROR, logger="transactional.webhooks"):
        response = post_webhook(client, "amazon_ses", ses_event("delivered"))

    assert response.status_code == 503
    assert "AMAZON_SES_SNS_TOPIC_ARNS" in caplog.text
    assert_nothing_recorded(tracking_events)


def test_debug_without_topic_allow_list_accepts_any_topic(client, webhooks, settings, tracking_events):
    settings.DEBUG = True
    settings.TRANSACTIONAL_SNS_TOPIC_ARNS = []
    envelope = sns_notification(ses_event("delivered"), topic_arn=OTHER_TOPIC)

    assert post_webhook(client, "amazon_ses", envelope).status_code == 200
    assert len(tracking_events) == 1


def test_ignored_sns_messages_are_acknowledged(client, webhooks, tracking_events):
    unsubscribed = sns_subscription_confirmation(type="UnsubscribeConfirmation")
    setup = sns_notification("Successfully validated SNS topic for Amazon SES event publishing.")
    confirmation = sns_subscription_confirmation()  # auto-confirm is off in the kit

    for envelope in (unsubscribed, setup, confirmation):
        assert post_webhook(client, "amazon_ses", envelope).status_code == 200
    assert tracking_events == []


# Malformed input: 4xx, nothing recorded
# ------------------------------------------------------------------------------


def bounce_without_recipients():
    event = ses_event("hard_bounce")
    del event["bounce"]["bouncedRecipients"]
    return event


MALFORMED_MESSAGES = {
    "message not json": "{not json",
    "message a json array": "[1, 2]",
    "message a json string": '"Delivery"',
    "bounce without bouncedRecipients": json.dumps(bounce_without_recipients()),
    "bounce recipient without address": json.dumps(
        ses_event("hard_bounce") | {"bounce": {"bounceType": "Permanent", "bounceSubType": "General",
                                               "bouncedRecipients": [{"status": "5.1.1"}]}}
    ),
    "bounce not an object": json.dumps(ses_event("hard_bounce") | {"bounce": ["Permanent"]}),
    "inbound Received event": json.dumps({"notificationType": "Received", "mail": {}, "receipt": {}}),
    "destination not addresses": json.dumps(ses_event("open") | {"mail": {"destination": [{"a": 1}]}}),
    "mail not an object": json.dumps({"eventType": "Open", "mail": "x"}),
    "headers malformed": json.dumps({"eventType": "Send", "mail": {"headers": [{"value": "x"}]}}),
    "destination a string": json.dumps(ses_event("open") | {"mail": {"destination": "ann@example.org"}}),
    "nested too deep": json.dumps(ses_event("delivered") | {"extra": "[" * 100 + "]" * 100}).replace(
        '"' + "[" * 100 + "]" * 100 + '"', "[" * 100 + "]" * 100
    ),
    "lone surrogate": json.dumps(ses_event("hard_bounce")).replace("ann@example.org", "ann\\ud800@example.org"),
}


@pytest.mark.parametrize("message", MALFORMED_MESSAGES.values(), ids=MALFORMED_MESSAGES.keys())
def test_malformed_ses_messages_are_a_400_and_record_nothing(client, webhooks, tracking_events, message):
    assert post_webhook(client, "amazon_ses", sns_notification(message)).status_code == 400
    assert_nothing_recorded(tracking_events)


MALFORMED_ENVELOPES = {
    "not json": b"{Type: Notification",
    "not utf-8": b"\xff\xfe",
    "json array": b"[]",
    "json string": b'"Notification"',
}


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("text/plain; charset=UTF-8", b"[" * 100_000 + b"]" * 100_000),  # json: RecursionError
        ("text/plain; charset=rot13", b"{}"),  # a codec, but no text encoding: LookupError
    ],
    ids=["nested too deep", "charset not a text encoding"],
)
def test_unreadable_bodies_are_a_400_even_before_authentication(client, webhooks, content_type, body):
    """anymail reads an SES body before it checks basic auth: nothing may escape as a 500."""
    headers = {
        "x-amz-sns-message-type": "Notification",
        "x-amz-sns-message-id": "m-1",
        "Authorization": basic_auth("x:y"),
    }

    response = client.generic("POST", URL, body, content_type=content_type, headers=headers)

    assert response.status_code == 400
    assert not Event.objects.exists()


def test_metadata_that_is_json_but_no_object_does_not_lose_a_bounce(client, webhooks):
    """X-Metadata is the sender's header: another system may set anything."""
    event = ses_event("hard_bounce", recipient="ann@example.org")
    event["mail"]["headers"].append({"name": "X-Metadata", "value": "[1, 2]"})

    assert post_webhook(client, "amazon_ses", event).status_code == 200

    assert Event.objects.get().metadata == {}
    assert Suppression.objects.filter(address="ann@example.org", reason="bounced").exists()


@pytest.mark.parametrize("body", MALFORMED_ENVELOPES.values(), ids=MALFORMED_ENVELOPES.keys())
def test_malformed_envelopes_are_a_400(client, webhooks, tracking_events, body):
    response = post_envelope(client, {"Type": "Notification", "MessageId": "m-1"}, body=body)

    assert response.status_code == 400
    assert_nothing_recorded(tracking_events)


def test_unknown_sns_type_is_a_400(client, webhooks, tracking_events):
    envelope = sns_signed(ses_event("delivered")) | {"Type": "Surprise"}

    assert post_envelope(client, envelope).status_code == 400
    assert_nothing_recorded(tracking_events)


def test_headers_not_matching_the_body_are_a_400(client, webhooks, tracking_events):
    envelope = sns_signed(ses_event("delivered"))

    response = post_webhook(client, "amazon_ses", envelope, headers={"x-amz-sns-message-id": "another"})

    assert response.status_code == 400
    assert_nothing_recorded(tracking_events)


def test_signature_helpers_build_the_canonical_string():
    envelope = {"Type": "Notification", "Message": "hi", "MessageId": "1", "Timestamp": "t", "TopicArn": "a"}

    assert sns.string_to_sign(envelope) == b"Message\nhi\nMessageId\n1\nTimestamp\nt\nTopicArn\na\nType\nNotification\n"
    confirmation = {**envelope, "Type": "SubscriptionConfirmation", "SubscribeURL": "u", "Token": "k"}
    assert sns.string_to_sign(confirmation) == (
        b"Message\nhi\nMessageId\n1\nSubscribeURL\nu\nTimestamp\nt\nToken\nk\nTopicArn\na\nType\nSubscriptionConfirmation\n"
    )


def test_debug_without_secret_explains_why_a_confirmation_is_refused(client, auto_confirm, settings, caplog):
    settings.DEBUG = True
    settings.ANYMAIL = {**settings.ANYMAIL, "WEBHOOK_SECRET": []}

    with caplog.at_level(logging.WARNING, logger="transactional.webhooks"), pytest.warns(AnymailInsecureWebhookWarning):
        response = post_webhook(client, "amazon_ses", sns_subscription_confirmation(), auth=None)

    assert response.status_code == 400
    assert "unexpected SubscriptionConfirmation" in caplog.text
