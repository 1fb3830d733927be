"""Several providers: a transient failure moves the message to the next one; breakers are shared."""

from datetime import timedelta

import pytest
import requests
from django.core.mail import send_mail
from django.utils import timezone

from tests.esp import (
    MAILGUN_DOMAIN,
    MAILGUN_KEY,
    SENDGRID_KEY,
    intercept_requests,
    mailgun_accepts,
    mailgun_refuses,
    posted_json,
    sendgrid_accepts,
    sendgrid_refuses,
)
from transactional import breaker
from transactional.delivery import deliver_due
from transactional.models import Attempt, Event, Message, ProviderState

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.filterwarnings("ignore::anymail.exceptions.AnymailNotSupportedWarning"),
]

MAILGUN_API = f"https://api.mailgun.net/v3/{MAILGUN_DOMAIN}/messages"
SENDGRID_API = "https://api.sendgrid.com/v3/mail/send"
OPEN, CLOSED, HALF_OPEN = ProviderState.State.OPEN, ProviderState.State.CLOSED, ProviderState.State.HALF_OPEN


@pytest.fixture
def rsps():
    with intercept_requests() as mock:
        yield mock


@pytest.fixture
def two_providers(mail_settings, outbox, settings, rsps):
    """Mailgun first, SendGrid second, as EMAIL_PROVIDERS=mailgun,sendgrid configures them."""
    mail_settings(
        ["mailgun", "sendgrid"],
        MAILGUN_API_KEY=MAILGUN_KEY, MAILGUN_SENDER_DOMAIN=MAILGUN_DOMAIN, SENDGRID_API_KEY=SENDGRID_KEY,
    )
    settings.EMAIL_BACKEND = "transactional.backends.EmailBackend"
    settings.TRANSACTIONAL_BREAKER_FAILURES = 3
    return rsps


def send(n: int = 1) -> None:
    for i in range(n):
        send_mail(f"Receipt {i}", "Paid", "shop@acme-mail.com", [f"ann{i}@example.org"])


def calls_to(rsps, url: str) -> int:
    return sum(1 for call in rsps.calls if call.request.url == url)


def test_primary_500_fails_over_to_the_secondary_which_delivers_once(two_providers, deliver):
    mailgun_refuses(two_providers, 500, {"message": "Internal error"})
    sendgrid_accepts(two_providers)
    send()

    assert deliver() == 1

    message = Message.objects.get()
    assert message.status == Message.Status.SENT
    assert message.provider == "sendgrid"
    assert message.attempts == 1  # one attempt, two provider calls
    assert list(message.attempt_log.values_list("number", "provider", "outcome", "status_code")) == [
        (1, "mailgun", "failover", 500), (1, "sendgrid", "sent", None),
    ]
    assert "Internal error" in message.attempt_log.first().error
    assert calls_to(two_providers, MAILGUN_API) == 1
    assert calls_to(two_providers, SENDGRID_API) == 1
    # SendGrid's id for the recipient is anymail's, which SendGrid's webhooks carry back.
    sent = posted_json(two_providers.calls[1].request)
    anymail_id = sent["personalizations"][0]["custom_args"]["anymail_id"]
    assert message.recipients.get().esp_message_id == anymail_id


@pytest.mark.parametrize(
    "failure",
    [
        pytest.param({"status": 503, "json": {"message": "Service unavailable"}}, id="503"),
        pytest.param({"status": 429, "json": {"message": "Too many requests"}}, id="429"),
        pytest.param({"body": requests.ConnectionError("Connection reset by peer")}, id="connection-reset"),
        pytest.param({"body": requests.ReadTimeout("Read timed out. (read timeout=10)")}, id="timeout"),
    ],
)
def test_every_transient_failure_fails_over(two_providers, deliver, failure):
    two_providers.post(MAILGUN_API, **failure)
    sendgrid_accepts(two_providers)
    send()

    deliver()

    message = Message.objects.get()
    assert (message.status, message.provider) == (Message.Status.SENT, "sendgrid")
    assert list(message.attempt_log.values_list("provider", "outcome")) == [
        ("mailgun", "failover"), ("sendgrid", "sent"),
    ]


def test_a_permanent_failure_never_fails_over(two_providers, deliver, mailoutbox):
    mailgun_refuses(two_providers, 400, {"message": "'to' parameter is not a valid address"})
    send()

    assert deliver() == 0

    message = Message.objects.get()
    assert message.status == Message.Status.FAILED
    assert message.provider == "mailgun"
    assert "'to' parameter is not a valid address" in message.last_error
    assert calls_to(two_providers, SENDGRID_API) == 0
    assert list(message.attempt_log.values_list("provider", "outcome")) == [("mailgun", "failed")]
    # A 400 proves Mailgun answers: its breaker counts no failure.
    assert ProviderState.objects.get(provider="mailgun").failures == 0


def test_both_failing_transiently_leaves_the_message_retrying_with_the_last_error(two_providers, deliver):
    mailgun_refuses(two_providers, 500, {"message": "Mailgun is down"})
    sendgrid_refuses(two_providers, 503, "SendGrid is down too")
    send()

    deliver()

    message = Message.objects.get()
    assert message.status == Message.Status.RETRYING
    assert message.next_attempt_at > timezone.now()
    assert "SendGrid is down too" in message.last_error
    assert list(message.attempt_log.values_list("provider", "outcome", "status_code")) == [
        ("mailgun", "failover", 500), ("sendgrid", "retry", 503),
    ]


def test_the_breaker_opens_after_n_transient_failures_and_mail_skips_the_primary(
    two_providers, deliver, settings
):
    settings.TRANSACTIONAL_CONCURRENCY = 1  # one call at a time: the count is exact
    for _ in range(3):
        mailgun_refuses(two_providers, 500, {"message": "Internal error"})
    for _ in range(6):
        sendgrid_accepts(two_providers)
    send(6)

    assert deliver() == 6

    assert calls_to(two_providers, MAILGUN_API) == 3  # then the breaker opened
    assert calls_to(two_providers, SENDGRID_API) == 6
    state = ProviderState.objects.get(provider="mailgun")
    assert state.state == OPEN
    assert state.failures == 3
    assert "Internal error" in state.last_error
    assert state.retry_at == state.opened_at + timedelta(seconds=30)  # the default cooldown
    assert set(Message.objects.values_list("provider", flat=True)) == {"sendgrid"}
    later = Message.objects.order_by("pk")[4]
    assert list(later.attempt_log.values_list("provider", "outcome")) == [("sendgrid", "sent")]


def test_failures_outside_the_window_do_not_add_up(two_providers, deliver, settings):
    settings.TRANSACTIONAL_CONCURRENCY = 1
    ProviderState.objects.create(
        provider="mailgun", failures=2, window_started_at=timezone.now() - timedelta(minutes=5)
    )
    mailgun_refuses(two_providers, 500, {"message": "Internal error"})
    sendgrid_accepts(two_providers)
    send()

    deliver()

    state = ProviderState.objects.get(provider="mailgun")
    assert (state.state, state.failures) == (CLOSED, 1)


def test_an_open_breaker_shared_through_the_database_sends_mail_straight_to_the_secondary(
    two_providers, deliver
):
    # Another worker opened it a moment ago.
    now = timezone.now()
    ProviderState.objects.create(provider="mailgun", state=OPEN, opened_at=now, retry_at=now + timedelta(seconds=30))
    sendgrid_accepts(two_providers)
    send()

    deliver()

    assert calls_to(two_providers, MAILGUN_API) == 0
    assert Message.objects.get().provider == "sendgrid"


def test_after_the_cooldown_one_probe_closes_the_breaker(two_providers, deliver, settings):
    settings.TRANSACTIONAL_CONCURRENCY = 1
    past = timezone.now() - timedelta(seconds=1)
    ProviderState.objects.create(provider="mailgun", state=OPEN, opened_at=past, retry_at=past, failures=3)
    for _ in range(3):
        mailgun_accepts(two_providers)
    send(3)

    deliver()

    assert calls_to(two_providers, MAILGUN_API) == 3
    state = ProviderState.objects.get(provider="mailgun")
    assert (state.state, state.failures, state.retry_at) == (CLOSED, 0, None)
    assert set(Message.objects.values_list("provider", flat=True)) == {"mailgun"}


def test_a_failed_probe_opens_the_breaker_for_another_cooldown(two_providers, deliver, settings):
    settings.TRANSACTIONAL_CONCURRENCY = 1
    past = timezone.now() - timedelta(seconds=1)
    ProviderState.objects.create(provider="mailgun", state=OPEN, opened_at=past, retry_at=past, failures=3)
    mailgun_refuses(two_providers, 502, {"message": "Bad gateway"})
    for _ in range(3):
        sendgrid_accepts(two_providers)
    send(3)

    deliver()

    assert calls_to(two_providers, MAILGUN_API) == 1  # the probe, and nothing after it
    state = ProviderState.objects.get(provider="mailgun")
    assert state.state == OPEN
    assert state.retry_at > timezone.now()
    assert set(Message.objects.values_list("provider", flat=True)) == {"sendgrid"}


def test_only_one_worker_wins_the_probe():
    past = timezone.now() - timedelta(seconds=1)
    ProviderState.objects.create(provider="mailgun", state=OPEN, opened_at=past, retry_at=past)
    first, second = breaker.Breakers(["mailgun"]), breaker.Breakers(["mailgun"])

    assert first.choose([]) == "mailgun"
    assert second.choose([]) is None  # the other worker holds the probe
    assert first.choose([]) is None  # and sends only one probe call


def test_when_every_breaker_is_open_nothing_is_claimed(two_providers, deliver):
    later = timezone.now() + timedelta(seconds=30)
    for name in ("mailgun", "sendgrid"):
        ProviderState.objects.create(provider=name, state=OPEN, opened_at=timezone.now(), retry_at=later,
                                     last_error=f"AnymailRequestsAPIError: {name} is down")
    send()

    assert deliver() == 0

    message = Message.objects.get()
    assert (message.status, message.attempts) == (Message.Status.QUEUED, 0)


def test_closing_a_breaker_by_hand(two_providers):
    ProviderState.objects.create(provider="mailgun", state=OPEN, failures=9, retry_at=timezone.now())

    breaker.reset("mailgun")

    state = ProviderState.objects.get(provider="mailgun")
    assert (state.state, state.failures, state.retry_at) == (CLOSED, 0, None)


def test_webhooks_of_the_secondary_link_to_the_message_it_sent(two_providers, deliver, webhooks, client):
    # The kit's interceptor started last, so it is the one that answers.
    mailgun_refuses(webhooks.rsps, 500, {"message": "Internal error"})
    sendgrid_accepts(webhooks.rsps)
    send()
    deliver()
    recipient = Message.objects.get().recipients.get()

    from transactional.testing.webhooks import sendgrid_event

    event = sendgrid_event("delivered", recipient=recipient.address, message_id=recipient.esp_message_id)
    assert webhooks.post(client, "sendgrid", [event]).status_code == 200

    event = Event.objects.get()
    assert (event.esp, event.message_id, event.recipient) == ("sendgrid", recipient.message_id, recipient)
    recipient.refresh_from_db()
    assert recipient.status == "delivered"


def test_ses_throttling_fails_over_to_mailgun(mail_settings, outbox, settings, rsps, monkeypatch, deliver):
    from tests.esp import stand_in_for_ses

    ses = stand_in_for_ses(monkeypatch)
    mail_settings(
        ["ses", "mailgun"], AWS_ACCESS_KEY_ID="AKIAEXAMPLE", AWS_SECRET_ACCESS_KEY="secret",
        AWS_REGION="eu-west-1", MAILGUN_API_KEY=MAILGUN_KEY, MAILGUN_SENDER_DOMAIN=MAILGUN_DOMAIN,
    )
    settings.EMAIL_BACKEND = "transactional.backends.EmailBackend"
    ses.refuses(400, "TooManyRequestsException", "Maximum sending rate exceeded.")
    mailgun_accepts(rsps)
    send()

    deliver()

    message = Message.objects.get()
    assert (message.status, message.provider) == (Message.Status.SENT, "mailgun")
    failover = message.attempt_log.get(outcome="failover")
    assert (failover.provider, failover.status_code) == ("ses", 400)
    assert "Maximum sending rate exceeded" in failover.error
    ses.assert_all_replies_used()


# -- Review fixes: probes, our own errors, booked wake-ups --------------------


def test_a_probe_claims_one_message_not_a_batch_that_would_wait_for_it(two_providers, deliver):
    past = timezone.now() - timedelta(seconds=1)
    for name in ("mailgun", "sendgrid"):
        ProviderState.objects.create(provider=name, state=OPEN, opened_at=past, retry_at=past)
    for _ in range(5):
        mailgun_accepts(two_providers)
    send(5)

    deliver()

    # The probe went alone; once it closed the breaker the run went on claiming.
    assert set(Message.objects.values_list("status", "attempts", "provider")) == {("sent", 1, "mailgun")}
    assert ProviderState.objects.get(provider="mailgun").state == CLOSED
    assert calls_to(two_providers, SENDGRID_API) == 0


def test_an_error_of_ours_before_the_call_neither_fails_over_nor_counts_on_a_breaker(two_providers, deliver):
    send()
    Message.objects.update(payload={"not": "a stored message"})

    deliver()

    message = Message.objects.get()
    assert message.status == Message.Status.RETRYING
    assert list(message.attempt_log.values_list("provider", "outcome")) == [("mailgun", "retry")]
    assert len(two_providers.calls) == 0
    assert ProviderState.objects.get(provider="mailgun").failures == 0


def test_runs_that_find_every_breaker_open_book_one_wake_up_between_them(two_providers, settings):
    from django_tasks_db.models import DBTaskResult

    from transactional.models import OutboxState

    settings.TASKS = {"default": {"BACKEND": "django_tasks_db.DatabaseBackend"}}
    later = timezone.now() + timedelta(seconds=30)
    for name in ("mailgun", "sendgrid"):
        ProviderState.objects.create(provider=name, state=OPEN, opened_at=timezone.now(), retry_at=later)

    for _ in range(3):
        deliver_due()

    assert OutboxState.objects.get().wake_at == later
    booked = DBTaskResult.objects.filter(task_path="transactional.tasks.deliver", run_after=later)
    assert booked.count() == 1


def test_a_probe_that_missed_its_rate_limit_slot_is_still_sent(two_providers, settings):
    from collections import deque

    from transactional.delivery import Claimed, Result, _judge

    past = timezone.now() - timedelta(seconds=1)
    ProviderState.objects.create(provider="mailgun", state=OPEN, opened_at=past, retry_at=past)
    breakers = breaker.Breakers(["mailgun", "sendgrid"])
    assert breakers.choose([]) == "mailgun"  # the probe call is chosen...
    item = Claimed(Message(pk=1), set(), tried=["mailgun"])
    missed = Result(1, timezone.now(), "mailgun", missed_slot=True)  # ...but woke too late

    _judge([(missed, item)], breakers, deque())

    assert breakers.choose([]) == "mailgun"  # still this run's to send
    assert breakers.choose([]) == "sendgrid"  # and only once
