"""GET /metrics, and what the outbox counts as mail goes through it.

The first half follows mail through the real paths (the outbox backend, a
delivery run, a signed webhook post) and reads the counters back through
the endpoint. The second half is the endpoint itself: off without a token,
401/403 without the right one, Prometheus or OpenMetrics text.
"""

import secrets
from datetime import timedelta

import pytest
import responses
from django.core.mail import EmailMessage, send_mail
from django.db import connection, transaction
from django.utils import timezone
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families

from transactional.delivery import deliver_due
from transactional.models import Message, MetricCount, Suppression
from transactional.testing.webhooks import mailgun_event, mailgun_signed

pytestmark = pytest.mark.django_db

TOKEN = secrets.token_urlsafe(32)
URL = "/metrics"
API = "https://api.mailgun.net/v3/mg.acme-mail.com/messages"
QUEUED = {"id": "<20261202.1.ABC@mg.acme-mail.com>", "message": "Queued. Thank you."}


@pytest.fixture
def metrics_on(settings):
    settings.TRANSACTIONAL_METRICS_TOKEN = TOKEN
    return settings


def scrape(client) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """GET /metrics with the token; return sample (name, sorted labels) -> value."""
    response = client.get(URL, HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    assert response.status_code == 200, response.content
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.content.decode())
        for sample in family.samples
    }


def value(samples: dict, name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


@pytest.fixture
def deliver():
    """Run a delivery run as the worker does (the counts commit with its transactions)."""
    return deliver_due


@pytest.fixture
def mailgun_settings(mail_settings, outbox):
    """Deliver through anymail's Mailgun backend (before ``webhooks`` adds its credentials)."""
    mail_settings("mailgun", MAILGUN_API_KEY="key-test", MAILGUN_SENDER_DOMAIN="mg.acme-mail.com")
    outbox.EMAIL_BACKEND = "transactional.backends.EmailBackend"


@pytest.fixture
def mailgun(mailgun_settings, settings):
    """Deliver through Mailgun, its HTTP API mocked by `responses`."""
    settings.TRANSACTIONAL_RETRY_BASE_SECONDS = 0  # due again at once, within one run
    # One call in flight: the run claims again only once the call is judged,
    # so a retry due at once is in that claim. With more, a claim made while
    # the call is still out (a slow machine) finds nothing and ends the run.
    settings.TRANSACTIONAL_CONCURRENCY = 1
    with responses.RequestsMock() as rsps:
        yield rsps


MESSAGES = "transactional_messages_total"


# Counted as mail goes through (needs the hooks in outbox.py, delivery.py, events.py)
# ------------------------------------------------------------------------------


def test_a_delivered_message_counts_as_queued_then_sent(client, metrics_on, outbox, deliver):
    send_mail("Receipt", "Thanks!", "shop@acme.test", ["ann@example.org"])
    EmailMessage("Two", "Hi", "shop@acme.test", ["bob@example.org"], cc=["cy@example.org"]).send()
    deliver()

    samples = scrape(client)
    assert value(samples, MESSAGES, status="queued", provider="", stream="transactional") == 2
    assert value(samples, MESSAGES, status="sent", provider="locmem", stream="transactional") == 2
    assert value(samples, "transactional_recipients_sent_total", provider="locmem", stream="transactional") == 3


def test_a_rolled_back_send_counts_nothing(metrics_on, outbox):
    with pytest.raises(RuntimeError), transaction.atomic():
        send_mail("Never", "Rolled back", "shop@acme.test", ["ann@example.org"])
        raise RuntimeError("the view failed after sending")

    assert not MetricCount.objects.exists()


def test_a_retry_then_a_permanent_failure_count_by_provider(client, metrics_on, mailgun, deliver):
    mailgun.post(API, status=500, json={"message": "Internal error"})
    mailgun.post(API, status=400, json={"message": "'to' parameter is not a valid address"})
    send_mail("Receipt", "Paid", "shop@acme.test", ["ann@example.org"])
    deliver()

    assert Message.objects.get().status == Message.Status.FAILED
    samples = scrape(client)
    assert value(samples, MESSAGES, status="retrying", provider="mailgun", stream="transactional") == 1
    assert value(samples, MESSAGES, status="failed", provider="mailgun", stream="transactional") == 1
    assert value(samples, MESSAGES, status="sent", provider="mailgun", stream="transactional") is None


def test_a_message_suppressed_at_send_counts_without_a_provider(client, metrics_on, outbox):
    Suppression.objects.create(address="ann@example.org", reason=Suppression.Reason.BOUNCED)

    assert send_mail("Receipt", "Paid", "shop@acme.test", ["ann@example.org"]) == 0

    samples = scrape(client)
    assert value(samples, MESSAGES, status="suppressed", provider="", stream="transactional") == 1
    assert value(samples, MESSAGES, status="queued", provider="", stream="transactional") is None


def test_a_message_suppressed_before_delivery_counts_with_its_provider(client, metrics_on, outbox, deliver):
    send_mail("Receipt", "Paid", "shop@acme.test", ["ann@example.org"])
    Suppression.objects.create(address="ann@example.org", reason=Suppression.Reason.COMPLAINED)
    deliver()

    samples = scrape(client)
    assert value(samples, MESSAGES, status="suppressed", provider="locmem", stream="transactional") == 1


def test_webhook_events_count_once_with_their_lag(client, metrics_on, webhooks):
    sent_at = timezone.now() - timedelta(seconds=42)
    payload = mailgun_signed(
        mailgun_event("hard_bounce", message_id="<1@mg.acme-mail.com>", recipient="ann@example.org", timestamp=sent_at)
    )
    for _ in range(2):  # Mailgun retries; the second post is a duplicate
        assert webhooks.post(client, "mailgun", payload, sign=False).status_code == 200

    samples = scrape(client)
    assert value(samples, "transactional_webhook_events_total", esp="mailgun", event_type="bounced") == 1
    assert value(samples, "transactional_hard_bounces_total", esp="mailgun") == 1
    assert value(samples, "transactional_webhook_lag_seconds_count", esp="mailgun") == 1
    assert value(samples, "transactional_webhook_lag_seconds_bucket", esp="mailgun", le="15.0") == 0
    assert value(samples, "transactional_webhook_lag_seconds_bucket", esp="mailgun", le="60.0") == 1
    assert 42 <= value(samples, "transactional_webhook_lag_seconds_sum", esp="mailgun") < 60


def test_the_bounce_rate_follows_sends_and_hard_bounces(client, metrics_on, mailgun_settings, webhooks, deliver):
    for number in range(4):  # the kit's mock is the one in force: Mailgun's API goes on it too
        webhooks.rsps.post(API, json={**QUEUED, "id": f"<{number}@mg.acme-mail.com>"})
        send_mail("Receipt", "Paid", "shop@acme.test", [f"r{number}@example.org"])
    deliver()
    bounce = mailgun_event("hard_bounce", message_id="<0@mg.acme-mail.com>", recipient="r0@example.org")
    assert webhooks.post(client, "mailgun", bounce).status_code == 200

    samples = scrape(client)
    assert value(samples, "transactional_rate_window_recipients_sent", provider="mailgun") == 4
    assert value(samples, "transactional_bounce_rate", provider="mailgun") == 0.25
    assert value(samples, "transactional_complaint_rate", provider="mailgun") == 0


# The endpoint
# ------------------------------------------------------------------------------


def test_off_without_a_token(client, settings):
    if hasattr(settings, "TRANSACTIONAL_METRICS_TOKEN"):
        del settings.TRANSACTIONAL_METRICS_TOKEN

    assert client.get(URL, HTTP_AUTHORIZATION=f"Bearer {TOKEN}").status_code == 404
    settings.TRANSACTIONAL_METRICS_TOKEN = ""
    assert client.get(URL, HTTP_AUTHORIZATION="Bearer ").status_code == 404


def test_without_credentials_it_asks_for_a_bearer_token(client, metrics_on):
    for headers in ({}, {"HTTP_AUTHORIZATION": f"Basic {TOKEN}"}, {"HTTP_AUTHORIZATION": "Bearer"}):
        response = client.get(URL, **headers)
        assert response.status_code == 401
        assert response["WWW-Authenticate"] == 'Bearer realm="transactional metrics"'


def test_a_wrong_token_is_refused(client, metrics_on):
    for wrong in (TOKEN[:-1], TOKEN + "x", secrets.token_urlsafe(32)):
        assert client.get(URL, HTTP_AUTHORIZATION=f"Bearer {wrong}").status_code == 403


def test_the_right_token_gets_the_prometheus_text_format(client, metrics_on):
    response = client.get(URL, HTTP_AUTHORIZATION=f"bearer  {TOKEN} ")

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain; version=0.0.4")
    assert "no-store" in response["Cache-Control"]
    names = {family.name for family in text_string_to_metric_families(response.content.decode())}
    assert {
        "transactional_messages", "transactional_recipients_sent", "transactional_webhook_events",
        "transactional_hard_bounces", "transactional_complaints", "transactional_webhook_lag_seconds",
        "transactional_bounce_rate", "transactional_complaint_rate", "transactional_bounce_rate_threshold",
        "transactional_complaint_rate_threshold", "transactional_rate_window_recipients_sent",
        "transactional_rate_window_days", "transactional_outbox_messages",
        "transactional_oldest_due_seconds", "transactional_circuit_breaker_state",
    } <= names


def test_two_tokens_during_a_rotation(client, settings):
    new = secrets.token_urlsafe(32)
    settings.TRANSACTIONAL_METRICS_TOKEN = f"{TOKEN} {new}"

    for token in (TOKEN, new):
        assert client.get(URL, HTTP_AUTHORIZATION=f"Bearer {token}").status_code == 200


def test_openmetrics_when_asked_for(client, metrics_on):
    response = client.get(
        URL, HTTP_AUTHORIZATION=f"Bearer {TOKEN}", HTTP_ACCEPT="application/openmetrics-text; version=1.0.0"
    )

    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/openmetrics-text")
    families = {family.name: family for family in parse_openmetrics(response.content.decode())}
    assert families["transactional_messages"].type == "counter"
    assert families["transactional_webhook_lag_seconds"].type == "histogram"


def test_answers_head_and_refuses_post(client, metrics_on):
    assert client.head(URL, HTTP_AUTHORIZATION=f"Bearer {TOKEN}").status_code == 200
    assert client.post(URL, HTTP_AUTHORIZATION=f"Bearer {TOKEN}").status_code == 405


def test_a_database_that_does_not_answer_is_a_503(client, metrics_on):
    # A real failure, as before `migrate`; the test transaction rolls the rename back.
    with connection.cursor() as cursor:
        cursor.execute("ALTER TABLE transactional_metriccount RENAME TO transactional_metriccount_away")

    response = client.get(URL, HTTP_AUTHORIZATION=f"Bearer {TOKEN}")

    assert response.status_code == 503
    assert response.content.decode().strip() in ("OperationalError", "ProgrammingError")
