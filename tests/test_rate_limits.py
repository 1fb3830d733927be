"""Shared per-provider rate limits: the schedule of send slots, its stores, and SES's own rate."""

import logging
import time
from datetime import timedelta

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.core.mail import send_mail
from django.utils import timezone

from settings.env import Env
from settings.providers import rate_limits
from tests.conftest import TEST_REDIS_URL
from tests.esp import stand_in_for_ses
from transactional import ratelimit
from transactional.delivery import deliver_due
from transactional.models import Message, ProviderState

pytestmark = pytest.mark.django_db


# -- TRANSACTIONAL_RATE_LIMITS -----------------------------------------------


@pytest.mark.parametrize("text, parsed", [
    ("ses=14/s", {"ses": 14.0}),
    ("ses=14", {"ses": 14.0}),
    ("SES = 14 / sec , mailgun=6000/m", {"ses": 14.0, "mailgun": 100.0}),
    ("mailgun=0.5/s", {"mailgun": 0.5}),
    ("mailgun=36000/h", {"mailgun": 10.0}),
    ("ses=off", {"ses": 0.0}),
    ("", {}),
])
def test_rate_limits_are_read_as_messages_per_second(text, parsed):
    assert rate_limits(Env({"TRANSACTIONAL_RATE_LIMITS": text}), ["ses", "mailgun"]) == parsed


@pytest.mark.parametrize("text, complaint", [
    ("ses", "'ses'; write provider=rate"),
    ("ses=fast", "'ses=fast'; write provider=rate"),
    ("ses=0/s", "'ses=0/s'; write provider=rate"),
    ("ses=-1/s", "'ses=-1/s'; write provider=rate"),
    ("ses=14/day", "'ses=14/day'; write provider=rate"),
    ("sendgrid=10/s", "limits 'sendgrid', which is not among the providers mail goes through (ses, mailgun)"),
    ("ses=1/s,ses=2/s", "limits 'ses' twice"),
])
def test_a_bad_rate_limit_is_refused_naming_the_variable(text, complaint):
    with pytest.raises(ImproperlyConfigured, match="TRANSACTIONAL_RATE_LIMITS") as caught:
        rate_limits(Env({"TRANSACTIONAL_RATE_LIMITS": text}), ["ses", "mailgun"])
    assert complaint in str(caught.value)


@pytest.mark.parametrize("bad", ["ses=14/s", {"ses": -1}, {"ses": "14"}, {"ses": True}, {"ses": float("nan")}])
def test_a_bad_rate_limits_setting_is_refused(settings, bad):
    settings.TRANSACTIONAL_RATE_LIMITS = bad
    with pytest.raises(ImproperlyConfigured, match="TRANSACTIONAL_RATE_LIMITS"):
        ratelimit.configured_rates()


# -- The shared schedule -----------------------------------------------------


def test_two_workers_share_one_schedule_of_evenly_spaced_slots(settings):
    settings.TRANSACTIONAL_RATE_LIMITS = {"mailgun": 50}
    first, second = ratelimit.Limiter(["mailgun"]), ratelimit.Limiter(["mailgun"])
    interval = 1 / (50 * ratelimit.SAFETY)

    a = first.reserve("mailgun", 5).starts
    b = second.reserve("mailgun", 5).starts
    c = first.reserve("mailgun", 1).starts

    slots = a + b + c
    gaps = [later - earlier for earlier, later in zip(slots, slots[1:])]
    # Evenly spaced in one sequence across both workers: no two slots closer
    # than the interval (less the microseconds between the calls).
    assert min(gaps) == pytest.approx(interval, abs=0.002)
    assert max(gaps) == pytest.approx(interval, abs=0.002)


def test_an_idle_clock_does_not_bank_slots_for_a_burst(settings):
    settings.TRANSACTIONAL_RATE_LIMITS = {"mailgun": 50}
    ProviderState.objects.create(provider="mailgun", next_slot=0.0)  # idle for ages
    limiter = ratelimit.Limiter(["mailgun"])

    slots = limiter.reserve("mailgun", 3).starts

    assert slots[1] - slots[0] == pytest.approx(1 / (50 * ratelimit.SAFETY))


@pytest.mark.parametrize("store", ["database", "redis"])
def test_no_slot_is_taken_while_the_reservations_reach_past_a_quarter_lease(settings, store, request):
    if store == "redis":
        use_redis(settings, request.getfixturevalue("test_redis"))
    settings.TRANSACTIONAL_RATE_LIMITS = {"mailgun": 0.1}  # one every ~10 s
    settings.TRANSACTIONAL_LEASE_SECONDS = 120  # at most 30 s of reservations
    limiter = ratelimit.Limiter(["mailgun"])

    assert limiter.group_size("mailgun", 16) == 2  # two slots fit in 30 s
    booked = [limiter.reserve("mailgun", 2) for _ in range(3)]

    assert [bool(slots.starts) for slots in booked] == [True, True, False]
    assert booked[2].retry_in > 0
    assert limiter.saturated("mailgun") > 0
    latest = max(booked[1].starts)
    # Three intervals (~31 s), not four: a round trip's jitter, not a slot.
    assert latest - booked[0].starts[0] == pytest.approx(3 / (0.1 * ratelimit.SAFETY), abs=0.25)


def test_a_booked_up_rate_limit_gives_messages_back_without_using_an_attempt(
    outbox, settings, django_capture_on_commit_callbacks
):
    settings.TRANSACTIONAL_RATE_LIMITS = {"locmem": 0.01}
    settings.TRANSACTIONAL_LEASE_SECONDS = 4  # a quarter: 1 s; every slot is 100 s apart
    ProviderState.objects.create(provider="locmem", next_slot=timezone.now().timestamp() + 500)
    send_mail("Receipt", "Paid", "shop@acme.test", ["ann@example.org"])

    with django_capture_on_commit_callbacks(execute=True):
        assert deliver_due() == 0

    message = Message.objects.get()
    assert (message.status, message.attempts) == (Message.Status.QUEUED, 0)
    assert not message.attempt_log.exists()
    assert message.next_attempt_at > timezone.now()


def use_redis(settings, connection) -> None:
    settings.TRANSACTIONAL_RATE_LIMIT_STORE = "redis"
    settings.RQ_QUEUES = {"default": {"URL": TEST_REDIS_URL}}


def test_unlimited_providers_need_no_slot_and_no_database_row(settings):
    settings.TRANSACTIONAL_RATE_LIMITS = {"mailgun": 0}
    limiter = ratelimit.Limiter(["mailgun", "smtp"])

    slots = limiter.reserve("smtp", 3).starts

    assert len(set(slots)) == 1
    assert not limiter.limited("mailgun")
    assert not ProviderState.objects.exists()


def test_a_claim_holds_about_ten_seconds_of_sending_at_the_limit(settings):
    settings.TRANSACTIONAL_RATE_LIMITS = {"mailgun": 2}
    limiter = ratelimit.Limiter(["mailgun", "smtp"])

    assert limiter.claim_size(100, "mailgun") == 20
    assert limiter.claim_size(100, "smtp") == 100


def test_delivery_takes_a_slot_for_every_call(outbox, settings, django_capture_on_commit_callbacks):
    settings.TRANSACTIONAL_RATE_LIMITS = {"locmem": 1000}
    for i in range(5):
        send_mail(f"Receipt {i}", "Paid", "shop@acme.test", [f"ann{i}@example.org"])
    before = timezone.now().timestamp()

    with django_capture_on_commit_callbacks(execute=True):
        assert deliver_due() == 5

    clock = ProviderState.objects.get(provider="locmem").next_slot
    # Five slots were handed out, the last ending five intervals after the first.
    assert clock >= before + 5 / (1000 * ratelimit.SAFETY)


def test_the_redis_clock_spaces_slots_like_the_database_one(settings, test_redis):
    settings.TRANSACTIONAL_RATE_LIMITS = {"mailgun": 20}
    use_redis(settings, test_redis)
    first, second = ratelimit.Limiter(["mailgun"]), ratelimit.Limiter(["mailgun"])

    slots = first.reserve("mailgun", 3).starts + second.reserve("mailgun", 3).starts

    gaps = [later - earlier for earlier, later in zip(slots, slots[1:])]
    assert min(gaps) == pytest.approx(1 / (20 * ratelimit.SAFETY), abs=0.003)
    assert 0 < test_redis.pttl("transactional:rate:mailgun") <= 140_000
    assert not ProviderState.objects.exists()  # nothing in the database


def test_the_redis_store_is_the_default_under_rq(settings):
    settings.TASKS = {"default": {"BACKEND": "django_tasks_rq.RQBackend"}}
    settings.RQ_QUEUES = {"default": {"URL": TEST_REDIS_URL}}

    assert isinstance(ratelimit.clock(), ratelimit.RedisClock)


def test_the_redis_store_without_a_redis_url_is_refused(settings):
    settings.TRANSACTIONAL_RATE_LIMIT_STORE = "redis"
    settings.RQ_QUEUES = {}

    with pytest.raises(ImproperlyConfigured, match="RQ_QUEUES"):
        ratelimit.clock()


# -- Amazon SES: the account's own rate --------------------------------------


@pytest.fixture
def ses(mail_settings, monkeypatch):
    api = stand_in_for_ses(monkeypatch)
    mail_settings("ses", AWS_ACCESS_KEY_ID="AKIAEXAMPLE", AWS_SECRET_ACCESS_KEY="secret", AWS_REGION="eu-west-1")
    return api


def test_ses_is_held_to_the_accounts_max_send_rate(ses):
    assert ratelimit.rate_for("ses") == 14.0

    [request] = ses.account_requests
    assert request.url == "https://email.eu-west-1.amazonaws.com/v2/email/account"
    assert ProviderState.objects.get(provider="ses").account_rate == 14.0


def test_the_account_rate_is_read_once_an_hour(ses):
    ratelimit.rate_for("ses")
    ratelimit.rate_for("ses")
    assert len(ses.account_requests) == 1

    ProviderState.objects.update(account_rate_checked_at=timezone.now() - timedelta(hours=2))
    ses.account = (200, {"SendQuota": {"MaxSendRate": 200.0, "Max24HourSend": 1e6, "SentLast24Hours": 0}}, {})
    assert ratelimit.rate_for("ses") == 200.0


def test_a_configured_ses_limit_wins_over_the_account(ses, settings):
    settings.TRANSACTIONAL_RATE_LIMITS = {"ses": 5}

    assert ratelimit.rate_for("ses") == 5
    assert ses.account_requests == []


def test_ses_off_reads_nothing_and_limits_nothing(ses, settings):
    settings.TRANSACTIONAL_RATE_LIMITS = {"ses": 0}

    assert ratelimit.rate_for("ses") is None
    assert ses.account_requests == []


def test_without_permission_to_read_the_account_ses_is_not_limited_and_it_says_so(ses, caplog):
    ses.account = (403, {"message": "User is not authorized to perform: ses:GetAccount"},
                   {"x-amzn-ErrorType": "AccessDeniedException:"})

    with caplog.at_level(logging.WARNING, logger="transactional.ratelimit"):
        assert ratelimit.rate_for("ses") is None

    assert "not authorized to perform: ses:GetAccount" in caplog.text
    assert "TRANSACTIONAL_RATE_LIMITS=ses=" in caplog.text
    ratelimit.rate_for("ses")
    assert len(ses.account_requests) == 1  # not asked again for five minutes


def test_a_failed_refresh_keeps_the_last_known_rate(ses):
    ratelimit.rate_for("ses")
    ProviderState.objects.update(account_rate_checked_at=timezone.now() - timedelta(hours=2))
    ses.account = (500, {"message": "Internal failure"}, {"x-amzn-ErrorType": "InternalFailure:"})

    assert ratelimit.rate_for("ses") == 14.0


def test_ses_sends_within_its_account_rate(ses, outbox, settings, django_capture_on_commit_callbacks):
    settings.EMAIL_BACKEND = "transactional.backends.EmailBackend"
    ses.accepts("0102-1")
    ses.accepts("0102-2")
    send_mail("Receipt", "Paid", "shop@acme.test", ["ann@example.org"])
    send_mail("Receipt", "Paid", "shop@acme.test", ["bob@example.org"])

    with django_capture_on_commit_callbacks(execute=True):
        assert deliver_due() == 2

    assert set(Message.objects.values_list("status", flat=True)) == {"sent"}
    assert ProviderState.objects.get(provider="ses").next_slot > 0


def test_a_call_that_wakes_too_late_for_its_slot_is_not_sent_but_goes_again(outbox, mailoutbox):
    from collections import deque

    from transactional.delivery import Breakers, Claimed, _judge, _Senders, claim

    send_mail("Receipt", "Paid", "shop@acme.test", ["ann@example.org"])
    [message] = claim(1, provider="locmem")
    item = Claimed(message, set(), tried=["locmem"])
    senders = _Senders({"locmem": "django.core.mail.backends.locmem.EmailBackend"})

    result, _ = senders.send(item, "locmem", time.monotonic() - 2 * ratelimit.LATE_SECONDS)

    assert result.missed_slot and not result.called
    assert mailoutbox == []  # a late call would bunch with the next slots' calls
    ready = deque()
    assert _judge([(result, item)], Breakers(["locmem"]), ready) == []
    assert list(ready) == [item] and item.tried == []


def test_a_call_on_time_for_its_slot_is_sent(outbox, mailoutbox):
    from transactional.delivery import Claimed, _Senders, claim

    send_mail("Receipt", "Paid", "shop@acme.test", ["ann@example.org"])
    [message] = claim(1, provider="locmem")
    senders = _Senders({"locmem": "django.core.mail.backends.locmem.EmailBackend"})

    result, _ = senders.send(Claimed(message, set()), "locmem", time.monotonic() + 0.01)

    assert result.called and not result.missed_slot
    assert len(mailoutbox) == 1
