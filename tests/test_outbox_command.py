"""`manage.py outbox`: status and --check for alerting, retry, cancel, sweep, purge."""

import json
from argparse import ArgumentTypeError
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from tests.factories import make_attempt, make_message
from transactional.management.commands.outbox import duration
from transactional.models import Attempt, Message
from transactional.retention import DEPRECATED_DAYS

pytestmark = pytest.mark.django_db

S = Message.Status


def outbox(*args: str) -> tuple[str, str]:
    """Run `manage.py outbox ARGS`; return what it printed on stdout and stderr."""
    stdout, stderr = StringIO(), StringIO()
    call_command("outbox", *args, stdout=stdout, stderr=stderr)
    return stdout.getvalue(), stderr.getvalue()


@pytest.fixture
def alerting(settings):
    settings.TRANSACTIONAL_ALERT_OLDEST_DUE_SECONDS = 600
    settings.TRANSACTIONAL_ALERT_FAILED_LAST_HOUR = 2


# status
# ------------------------------------------------------------------------------


def test_status_prints_a_table():
    make_message(status=S.QUEUED, next_attempt_at=timezone.now() - timedelta(seconds=42))
    make_message(status=S.FAILED)

    stdout, _ = outbox("status")

    lines = [line.split() for line in stdout.splitlines()]
    assert ["queued", "1"] in lines
    assert ["cancelled", "0"] in lines
    assert ["oldest", "due", "42s"] in lines
    assert ["failed", "(1h)", "1"] in lines


def test_status_as_json():
    make_message(status=S.SENT)

    status = json.loads(outbox("status", "--json")[0])

    assert status["counts"]["sent"] == 1
    assert status["oldest_due_seconds"] is None
    assert status["problems"] == []


def test_status_check_passes_on_a_healthy_queue(alerting):
    make_message(status=S.QUEUED)
    make_message(status=S.FAILED)

    _, stderr = outbox("status", "--check")  # returns: exit status 0

    assert stderr == ""


def test_status_check_fails_and_names_each_problem(alerting):
    now = timezone.now()
    make_message(status=S.QUEUED, next_attempt_at=now - timedelta(minutes=15))
    for _ in range(3):
        make_message(status=S.FAILED)
    stdout, stderr = StringIO(), StringIO()

    with pytest.raises(SystemExit) as exit:
        call_command(
            "outbox", "status", "--check", "--verbosity", "0", stdout=stdout, stderr=stderr
        )

    assert exit.value.code == 1
    assert stdout.getvalue() == ""  # quiet for cron, except for the problems
    problems = stderr.getvalue().splitlines()
    assert len(problems) == 2
    assert "The oldest due message has waited 900s" in problems[0]
    assert "3 message(s) failed in the last hour" in problems[1]


def test_status_shows_each_providers_breaker_and_check_alerts_on_an_open_one(settings):
    from transactional.models import ProviderState

    settings.TRANSACTIONAL_PROVIDERS = {"ses": "anymail.backends.amazon_ses.EmailBackend",
                                        "mailgun": "anymail.backends.mailgun.EmailBackend"}
    ProviderState.objects.create(provider="ses", state="open", opened_at=timezone.now(),
                                 last_error="AnymailAPIError: Throttling: Maximum sending rate exceeded.")

    stdout, _ = outbox("status")
    status = json.loads(outbox("status", "--json")[0])

    assert ["ses", "open"] in [line.split() for line in stdout.splitlines()]
    assert ["mailgun", "closed"] in [line.split() for line in stdout.splitlines()]
    assert list(status["providers"]) == ["ses", "mailgun"]
    assert status["providers"]["ses"]["breaker"] == "open"
    [problem] = status["problems"]
    assert problem.startswith("The circuit breaker of ses is open")
    assert "Maximum sending rate exceeded" in problem
    with pytest.raises(SystemExit):
        outbox("status", "--check")


# retry, cancel, sweep
# ------------------------------------------------------------------------------


def test_retry_by_id():
    failed, other = make_message(status=S.FAILED), make_message(status=S.FAILED)

    stdout, _ = outbox("retry", "--id", str(failed.pk))

    assert stdout == "Re-queued 1 message(s).\n"
    assert Message.objects.get(pk=failed.pk).status == S.QUEUED
    assert Message.objects.get(pk=other.pk).status == S.FAILED


def test_retry_by_status_since():
    now = timezone.now()
    recent = make_message(status=S.FAILED, updated_at=now - timedelta(hours=1))
    old = make_message(status=S.FAILED, updated_at=now - timedelta(hours=3))

    stdout, _ = outbox("retry", "--status", "failed", "--since", "2h")

    assert stdout == "Re-queued 1 message(s).\n"
    assert Message.objects.get(pk=recent.pk).status == S.QUEUED
    assert Message.objects.get(pk=old.pk).status == S.FAILED


def test_retry_reports_purged_messages():
    make_message(status=S.FAILED, payload=None, purged_at=timezone.now())

    stdout, stderr = outbox("retry", "--status", "failed")

    assert stdout == "Re-queued 0 message(s).\n"
    assert stderr == "Skipped 1 message(s) whose body was purged.\n"


@pytest.mark.parametrize(
    "args, error",
    [
        ((), "one of the arguments --id --status is required"),
        (("--id", "1", "--status", "failed"), "not allowed with argument"),
        (("--status", "sent"), "invalid choice: 'sent'"),
        (("--id", "x"), "expected a message id (a positive integer), got 'x'"),
        (("--id", "1", "--since", "2h"), "--since works only with --status."),
    ],
)
def test_retry_requires_one_clear_selector(args, error):
    with pytest.raises(CommandError, match=error.replace("(", r"\(").replace(")", r"\)")):
        outbox("retry", *args)


def test_cancel_several_ids():
    first, second, sending = (
        make_message(status=status) for status in (S.QUEUED, S.RETRYING, S.SENDING)
    )

    stdout, _ = outbox("cancel", "--id", str(first.pk), str(second.pk), "--id", str(sending.pk))

    assert stdout == "Cancelled 2 message(s).\n"
    assert Message.objects.get(pk=sending.pk).status == S.SENDING


def test_cancel_requires_ids():
    with pytest.raises(CommandError, match="the following arguments are required: --id"):
        outbox("cancel")


def test_sweep_returns_stuck_messages_and_delivers_them(settings, mailoutbox):
    settings.TRANSACTIONAL_LEASE_SECONDS = 300
    make_message(status=S.SENDING, claimed_at=timezone.now() - timedelta(minutes=10))

    stdout, _ = outbox("sweep")

    assert stdout == "Returned 1 stuck message(s) to the queue; 1 due.\n"
    assert Message.objects.get().status == S.SENT  # the immediate task backend ran at once
    assert len(mailoutbox) == 1


# purge
# ------------------------------------------------------------------------------


@pytest.fixture
def retention(settings):
    """Purge at known ages, whatever the settings module says."""
    settings.TRANSACTIONAL_RETENTION = "messages=365d,bodies=30d,attempts=90d,events=400d"
    for name in DEPRECATED_DAYS:
        if hasattr(settings, name):
            delattr(settings, name)
    return settings


def table(output: str) -> list[str]:
    return [" ".join(line.split()) for line in output.splitlines()]


def test_purge_dry_run_then_for_real(retention):
    ten_days_old = make_message(status=S.SENT, created_at=timezone.now() - timedelta(days=10))
    make_attempt(make_message(status=S.FAILED, created_at=timezone.now() - timedelta(days=100)))

    dry, _ = outbox("purge", "--older-than", "7d", "--dry-run")
    ten_days_old.refresh_from_db()
    assert ten_days_old.payload is not None
    assert Attempt.objects.exists()
    done, _ = outbox("purge", "--older-than", "7d")

    lines = [
        "messages deleted 0 older than 365d",
        "bodies purged 2 older than 7d",
        "attempts deleted 1 older than 90d",
        "events deleted 0 older than 400d",
        "task results deleted 0 older than 7d",
    ]
    assert table(dry) == ["Dry run: nothing was changed; this is what would go.", *lines]
    assert table(done) == lines
    ten_days_old.refresh_from_db()
    assert ten_days_old.payload is None
    assert not Attempt.objects.exists()


def test_purge_applies_the_retention_setting_and_says_what_is_kept_forever(retention):
    retention.TRANSACTIONAL_RETENTION = "bodies=5d,events=off"
    make_message(status=S.SENT, created_at=timezone.now() - timedelta(days=6))

    stdout, _ = outbox("purge", "--dry-run")

    assert "bodies purged 1 older than 5d" in table(stdout)
    assert "events deleted 0 kept forever" in table(stdout)


def test_purge_refuses_a_bad_setting_and_changes_nothing(retention):
    retention.TRANSACTIONAL_RETENTION = "bodies=30d,bodies=1h"
    old = make_message(status=S.SENT, created_at=timezone.now() - timedelta(days=500))

    with pytest.raises(CommandError, match="^TRANSACTIONAL_RETENTION names 'bodies' twice.$"):
        outbox("purge")

    assert Message.objects.filter(pk=old.pk, payload__isnull=False).exists()


def test_purge_is_quiet_at_verbosity_0():
    assert outbox("purge", "--verbosity", "0") == ("", "")


def test_purge_refuses_a_vague_duration():
    with pytest.raises(CommandError) as error:
        outbox("purge", "--older-than", "soon")

    assert str(error.value) == (
        "Error: argument --older-than: expected a duration like 30d, 12h or 90m, got 'soon'"
    )


@pytest.mark.parametrize(
    "text, expected",
    [
        ("30d", timedelta(days=30)),
        ("12h", timedelta(hours=12)),
        ("90m", timedelta(minutes=90)),
        ("45s", timedelta(seconds=45)),
        ("0d", timedelta(0)),
    ],
)
def test_duration_parses_a_number_and_a_unit(text, expected):
    assert duration(text) == expected


@pytest.mark.parametrize("text", ["soon", "30", "d", "1.5h", "-3d", "3 d", "3w", "2h30m"])
def test_duration_refuses_anything_else(text):
    with pytest.raises(ArgumentTypeError, match="expected a duration like 30d, 12h or 90m"):
        duration(text)
