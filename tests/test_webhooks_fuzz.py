"""Fuzzing the three tracking webhooks: whatever is posted, never a 5xx.

Two kinds of input per endpoint: random requests (bodies, content types,
headers, with and without valid basic auth), and real payloads with random
parts replaced or removed, correctly signed, so the parsers behind the
signature checks see them. A refused post must not dispatch anything.
"""

import copy
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from transactional.testing.webhooks import (  # noqa: F401  (fixtures)
    basic_auth,
    mailgun_event,
    post_webhook,
    sendgrid_event,
    sendgrid_signed,
    ses_event,
    sns_notification,
    sns_signed,
    sns_subscription_confirmation,
    tracking_events,
    webhooks,
)

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.filterwarnings("ignore::anymail.exceptions.AnymailNotSupportedWarning"),
]

fuzz = settings(
    max_examples=70,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

URLS = {
    "mailgun": "/anymail/mailgun/tracking/",
    "sendgrid": "/anymail/sendgrid/tracking/",
    "amazon_ses": "/anymail/amazon_ses/tracking/",
}
# Keys the parsers look up, so random objects sometimes have them.
KEYS = [
    "event", "event-data", "signature", "timestamp", "token", "recipient", "message", "headers",
    "message-id", "delivery-status", "severity", "reason", "tags", "user-variables", "url",
    "client-info", "email", "sg_event_id", "anymail_id", "smtp-id", "type", "category",
    "Type", "MessageId", "Message", "TopicArn", "eventType", "notificationType", "mail",
    "destination", "messageId", "bounce", "bouncedRecipients", "emailAddress", "bounceType",
    "bounceSubType", "complaint", "complainedRecipients", "delivery", "recipients", "name", "value",
]
CONTENT_TYPES = [
    "application/json", "application/json; charset=utf-8", "text/plain; charset=UTF-8",
    "application/x-www-form-urlencoded", "multipart/form-data; boundary=xyz", "text/html", "",
]
AUTHS = [None, "anymail:test-webhook-password", "anymail:wrong", "not-basic-auth"]

scalars = (
    st.none() | st.booleans() | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=20)
    | st.sampled_from(["delivered", "failed", "Bounce", "Notification", "ann@example.org", "2026-03-14T09:30:12Z"])
)
json_values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=8), children, max_size=5),
    max_leaves=12,
)


@st.composite
def mutated(draw, documents):
    """Draw one of ``documents`` with a few of its parts replaced or removed."""
    document = copy.deepcopy(draw(documents))
    paths = list(_paths(document))
    for _ in range(draw(st.integers(1, 4))):
        path = draw(st.sampled_from(paths))
        _mutate(document, path, draw(st.booleans()), draw(json_values))
    return document


def _paths(node, prefix=()):
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, child in items:
        yield (*prefix, key)
        yield from _paths(child, (*prefix, key))


def _mutate(document, path, delete, value):
    try:
        parent = document
        for key in path[:-1]:
            parent = parent[key]
        if delete:
            del parent[path[-1]]
        else:
            parent[path[-1]] = value
    except (KeyError, IndexError, TypeError):
        pass  # an earlier mutation removed this path


def assert_never_a_5xx(response, tracking_events, dispatched_before):
    assert response.status_code < 500, response.content
    if response.status_code >= 400:
        assert len(tracking_events) == dispatched_before, "a refused post dispatched events"


# Random requests
# ------------------------------------------------------------------------------

bodies = (
    st.binary(max_size=300)
    | json_values.map(lambda v: json.dumps(v).encode())
    | st.sampled_from([b"", b"[]", b"{}", b"null", b"event=delivered&token=x&timestamp=1&signature=y"])
)


@pytest.mark.parametrize("esp", URLS)
@fuzz
@given(
    body=bodies,
    content_type=st.sampled_from(CONTENT_TYPES),
    auth=st.sampled_from(AUTHS),
    sns_type=st.sampled_from([None, "Notification", "SubscriptionConfirmation", "Junk"]),
    sendgrid_signature=st.booleans(),
)
def test_random_requests(client, webhooks, tracking_events, esp, body, content_type, auth, sns_type, sendgrid_signature):
    headers = {}
    if auth == "not-basic-auth":
        headers["Authorization"] = "Bearer abc"
    elif auth:
        headers["Authorization"] = basic_auth(auth)
    if sns_type:
        headers["x-amz-sns-message-type"] = sns_type
        headers["x-amz-sns-message-id"] = "m-1"
    if sendgrid_signature:
        headers.update(sendgrid_signed(body))
    before = len(tracking_events)

    response = client.generic("POST", URLS[esp], body, content_type=content_type, headers=headers)

    assert_never_a_5xx(response, tracking_events, before)


# Real payloads, mutated, correctly signed
# ------------------------------------------------------------------------------

KINDS = ["delivered", "hard_bounce", "soft_bounce", "complaint", "open", "click", "unsubscribe"]


@fuzz
@given(payload=mutated(st.sampled_from(KINDS).map(mailgun_event)))
def test_mutated_mailgun_payloads(client, webhooks, tracking_events, payload):
    before = len(tracking_events)

    response = post_webhook(client, "mailgun", payload)

    assert_never_a_5xx(response, tracking_events, before)


@fuzz
@given(batch=st.lists(mutated(st.sampled_from([*KINDS, "processed", "dropped", "blocked"]).map(sendgrid_event)), max_size=4))
def test_mutated_sendgrid_batches(client, webhooks, tracking_events, batch):
    before = len(tracking_events)

    response = post_webhook(client, "sendgrid", batch)

    assert_never_a_5xx(response, tracking_events, before)


ses_messages = st.sampled_from(KINDS).map(ses_event) | st.sampled_from(KINDS[:4]).map(
    lambda kind: ses_event(kind, format="notification")
)


@fuzz
@given(message=mutated(ses_messages))
def test_mutated_ses_messages(client, webhooks, tracking_events, message):
    before = len(tracking_events)

    response = post_webhook(client, "amazon_ses", sns_notification(message))

    assert_never_a_5xx(response, tracking_events, before)


envelopes = st.sampled_from(KINDS).map(lambda kind: sns_notification(ses_event(kind))) | st.just(None).map(
    lambda _: sns_subscription_confirmation()
)


@fuzz
@given(envelope=mutated(envelopes), sign=st.booleans())
def test_mutated_sns_envelopes(client, webhooks, tracking_events, envelope, sign):
    if sign:
        try:
            envelope = sns_signed(envelope if "Type" in envelope else {**envelope, "Type": "Notification"})
        except (ValueError, TypeError):
            pass  # not signable (a signed field is gone or not a string): post as is
    before = len(tracking_events)

    response = post_webhook(client, "amazon_ses", envelope, sign=False)

    assert_never_a_5xx(response, tracking_events, before)
