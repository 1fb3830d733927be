"""Transient failures are retried with backoff; permanent ones fail at once, loudly."""

import smtplib
from datetime import timedelta

import pytest
import requests
import responses
from anymail.exceptions import AnymailAPIError
from botocore.exceptions import ClientError, EndpointConnectionError
from django.core import mail
from django.core.mail import send_mail
from django.utils import timezone

from tests.esp import posted_form
from transactional import retries
from transactional.models import Attempt, Message

pytestmark = pytest.mark.django_db

API = "https://api.mailgun.net/v3/mg.acme-mail.com/messages"
QUEUED = {"id": "<20261126.1.ABC@mg.acme-mail.com>", "message": "Queued. Thank you."}
INVALID_TO = {"message": "'to' parameter is not a valid address. please check documentation"}


@pytest.fixture
def mailgun(mail_settings, outbox, settings):
    """Deliver through anymail's Mailgun backend, its HTTP API mocked by `responses`."""
    mail_settings("mailgun", MAILGUN_API_KEY="key-test", MAILGUN_SENDER_DOMAIN="mg.acme-mail.com")
    settings.EMAIL_BACKEND = "transactional.backends.EmailBackend"
    settings.TRANSACTIONAL_RETRY_BASE_SECONDS = 0  # retry as soon as due, within one run
    # One call in flight: the run claims again only once the call is judged,
    # so a retry due at once is in that claim. With more, a claim made while
    # the call is still out (a slow machine) finds nothing and ends the run.
    settings.TRANSACTIONAL_CONCURRENCY = 1
    with responses.RequestsMock() as rsps:
        yield rsps


def test_500_three_times_then_200_is_sent_on_the_fourth_attempt(mailgun, deliver):
    for _ in range(3):
        mailgun.post(API, status=500, json={"message": "Internal error"})
    mailgun.post(API, json=QUEUED)

    send_mail("Receipt", "Paid", "shop@acme.test", ["ann@example.org"])
    deliver()

    message = Message.objects.get()
    assert message.status == Message.Status.SENT
    assert message.attempts == 4
    assert message.last_error == ""
    assert list(message.attempt_log.values_list("outcome", "status_code")) == [
        ("retry", 500), ("retry", 500), ("retry", 500), ("sent", None)
    ]
    assert message.recipients.get().esp_message_id == QUEUED["id"]
    # One Message-ID, fixed at enqueue, on every attempt.
    sent_ids = {_field(call.request, "h:Message-Id") for call in mailgun.calls}
    assert sent_ids == {message.message_id}


def _field(request, name: str) -> str:
    fields, _ = posted_form(request)
    return fields[name]


def test_400_fails_at_once_with_the_providers_words_and_tells_admins(mailgun, deliver):
    mailgun.post(API, status=400, json=INVALID_TO)
    mailgun.post(API, json=QUEUED)  # the notice to ADMINS, through the provider directly

    send_mail("Receipt", "Paid", "shop@acme.test", ["ann@example.org"])
    deliver()

    message = Message.objects.get()
    assert message.status == Message.Status.FAILED
    assert message.attempts == 1
    assert "'to' parameter is not a valid address. please check documentation" in message.last_error
    assert message.recipients.get().status == "failed"
    notice = mailgun.calls[1].request
    assert _field(notice, "subject") == f"[transactional] Mail delivery failed: message {message.pk} (permanent error)"
    assert _field(notice, "to") == "admin@acme.test"


def test_429_honours_retry_after(mailgun, deliver, settings):
    settings.TRANSACTIONAL_RETRY_BASE_SECONDS = 1
    mailgun.post(API, status=429, json={"message": "Too many requests"}, headers={"Retry-After": "120"})

    send_mail("Receipt", "Paid", "shop@acme.test", ["ann@example.org"])
    before = timezone.now()
    deliver()

    message = Message.objects.get()
    assert message.status == Message.Status.RETRYING
    assert message.next_attempt_at >= before + timedelta(seconds=120)
    assert "Too many requests" in message.last_error


def test_gives_up_after_max_attempts(mailgun, deliver, settings):
    settings.TRANSACTIONAL_MAX_ATTEMPTS = 3
    for _ in range(3):
        mailgun.post(API, status=503, body="Service Unavailable")
    mailgun.post(API, json=QUEUED)  # the notice

    send_mail("Receipt", "Paid", "shop@acme.test", ["ann@example.org"])
    deliver()

    message = Message.objects.get()
    assert message.status == Message.Status.FAILED
    assert message.attempts == 3
    assert "gave up after 3 attempt(s)" in _field(mailgun.calls[3].request, "subject")


def test_a_message_past_the_maximum_age_is_not_retried(mailgun, deliver, settings):
    mailgun.post(API, status=500, json={"message": "Internal error"})
    mailgun.post(API, json=QUEUED)

    send_mail("Receipt", "Paid", "shop@acme.test", ["ann@example.org"])
    Message.objects.update(created_at=timezone.now() - timedelta(days=4))
    deliver()

    assert Message.objects.get().status == Message.Status.FAILED
    assert "too old to retry" in _field(mailgun.calls[1].request, "subject")


def test_connection_errors_and_timeouts_are_retried(mailgun, deliver, settings):
    settings.TRANSACTIONAL_RETRY_BASE_SECONDS = 60
    mailgun.post(API, body=requests.ConnectionError("Connection refused"))

    send_mail("Receipt", "Paid", "shop@acme.test", ["ann@example.org"])
    deliver()

    message = Message.objects.get()
    assert message.status == Message.Status.RETRYING
    assert message.attempt_log.get().outcome == Attempt.Outcome.RETRY
    assert "Connection refused" in message.last_error


def test_admin_notices_are_rate_limited(mailgun, deliver, settings, mailoutbox):
    settings.TRANSACTIONAL_FAILURE_NOTICE_INTERVAL_SECONDS = 3600
    for _ in range(3):
        mailgun.post(API, status=400, json=INVALID_TO)
    mailgun.post(API, json=QUEUED)  # only one notice

    for n in range(3):
        send_mail(f"Receipt {n}", "Paid", "shop@acme.test", ["ann@example.org"])
    deliver()

    assert Message.objects.filter(status="failed").count() == 3
    assert len(mailgun.calls) == 4


# The classification table, one row per kind of provider error.

def _anymail_http_error(status: int, headers: dict | None = None):
    with responses.RequestsMock() as rsps:
        rsps.post(API, status=status, json={"message": "nope"}, headers=headers or {})
        from anymail.backends.mailgun import EmailBackend

        backend = EmailBackend(api_key="k", sender_domain="mg.acme-mail.com")
        try:
            backend.send_messages([mail.EmailMessage("s", "b", "a@acme.test", ["b@example.org"])])
        except AnymailAPIError as error:
            return error
    raise AssertionError("no error raised")


def _ses_error(code: str, status: int):
    try:
        try:
            raise ClientError({"Error": {"Code": code, "Message": code}, "ResponseMetadata": {"HTTPStatusCode": status}}, "SendEmail")
        except ClientError as err:
            # As anymail's SES backend wraps boto errors (backends/amazon_ses.py).
            raise AnymailAPIError(str(err)) from err
    except AnymailAPIError as error:
        return error


def _ses_unreachable():
    try:
        try:
            raise EndpointConnectionError(endpoint_url="https://email.eu-west-1.amazonaws.com")
        except EndpointConnectionError as err:
            raise AnymailAPIError(str(err)) from err
    except AnymailAPIError as error:
        return error


@pytest.mark.parametrize(
    ("make_error", "transient"),
    [
        (lambda: _anymail_http_error(400), False),
        (lambda: _anymail_http_error(401), False),
        (lambda: _anymail_http_error(404), False),
        (lambda: _anymail_http_error(408), True),
        (lambda: _anymail_http_error(429), True),
        (lambda: _anymail_http_error(500), True),
        (lambda: _anymail_http_error(503), True),
        (lambda: _ses_error("MessageRejected", 400), False),
        (lambda: _ses_error("MailFromDomainNotVerifiedException", 400), False),
        (lambda: _ses_error("Throttling", 400), True),
        (lambda: _ses_error("TooManyRequestsException", 429), True),
        (lambda: _ses_error("ServiceUnavailable", 503), True),
        (_ses_unreachable, True),
        (lambda: smtplib.SMTPResponseException(451, b"4.7.1 Try again later"), True),
        (lambda: smtplib.SMTPResponseException(550, b"5.1.1 No such user"), False),
        (lambda: smtplib.SMTPSenderRefused(553, b"5.7.1 Sender rejected", "a@acme.test"), False),
        (lambda: smtplib.SMTPRecipientsRefused({"b@example.org": (550, b"No such user")}), False),
        (lambda: smtplib.SMTPRecipientsRefused({"b@example.org": (452, b"Mailbox full")}), True),
        (lambda: smtplib.SMTPServerDisconnected("Connection unexpectedly closed"), True),
        (lambda: ConnectionRefusedError(111, "Connection refused"), True),
        (lambda: TimeoutError("timed out"), True),
    ],
)
def test_classify(make_error, transient):
    assert retries.classify(make_error()).transient is transient


def test_classify_reads_retry_after_and_status():
    verdict = retries.classify(_anymail_http_error(429, {"Retry-After": "30"}))

    assert (verdict.status_code, verdict.retry_after) == (429, 30.0)


def test_a_custom_classifier_replaces_the_default(settings):
    settings.TRANSACTIONAL_CLASSIFIER = "tests.test_retries.never_retry"

    assert retries.classify(TimeoutError()).transient is False


def never_retry(error):
    return retries.Verdict(transient=False)


def test_backoff_is_exponential_with_jitter_and_a_cap(settings):
    settings.TRANSACTIONAL_RETRY_BASE_SECONDS = 10
    settings.TRANSACTIONAL_RETRY_FACTOR = 2
    settings.TRANSACTIONAL_RETRY_CAP_SECONDS = 100

    for attempt, step in [(1, 10), (2, 20), (3, 40), (4, 80), (5, 100), (9, 100)]:
        delays = {retries.backoff_seconds(attempt) for _ in range(50)}
        assert all(step / 2 <= d <= step for d in delays), (attempt, delays)
        assert len(delays) > 1  # jittered
    assert retries.backoff_seconds(1, retry_after=500) == 500
