"""How the tracking webhooks are mounted and checked (urls.py, checks.py)."""

import pytest
from anymail.webhooks.mailgun import MailgunInboundWebhookView
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.urls import resolve, reverse

from transactional.testing.webhooks import SNS_TOPIC_ARN, sendgrid_keypair
from transactional.webhooks import checks
from transactional.webhooks.amazon_ses import AmazonSESTrackingView
from transactional.webhooks.mailgun import MailgunTrackingView
from transactional.webhooks.sendgrid import SendGridTrackingView


@pytest.mark.parametrize(
    ("esp", "view"),
    [("mailgun", MailgunTrackingView), ("sendgrid", SendGridTrackingView), ("amazon_ses", AmazonSESTrackingView)],
)
def test_our_views_answer_at_anymails_paths_under_both_names(esp, view):
    path = f"/anymail/{esp}/tracking/"

    assert reverse(f"anymail:{esp}_tracking_webhook") == path
    assert reverse(f"transactional_webhooks:{esp}_tracking") == path
    assert resolve(path).func.view_class is view


def test_anymails_inbound_webhooks_stay_mounted():
    assert resolve("/anymail/mailgun/inbound/").func.view_class is MailgunInboundWebhookView


def messages(settings, provider, **anymail):
    settings.EMAIL_PROVIDER = provider
    settings.ANYMAIL = anymail
    return checks.check_webhook_credentials(None) + checks.check_sendgrid_verification_key(None)


def ids(found):
    return [message.id for message in found]


def test_no_webhook_secret_is_a_deploy_warning(settings):
    assert ids(messages(settings, "smtp")) == ["transactional.W201"]
    assert ids(messages(settings, "smtp", WEBHOOK_SECRET=["anymail:pass"])) == []


@pytest.mark.parametrize(
    ("provider", "warning"),
    [("mailgun", "transactional.W202"), ("sendgrid", "transactional.W203"), ("ses", "transactional.W204")],
)
def test_each_providers_webhook_key_is_checked(settings, provider, warning):
    settings.TRANSACTIONAL_SNS_TOPIC_ARNS = []

    assert ids(messages(settings, provider, WEBHOOK_SECRET="anymail:pass")) == [warning]


def test_configured_keys_pass(settings):
    settings.TRANSACTIONAL_SNS_TOPIC_ARNS = [SNS_TOPIC_ARN]
    keys = {
        "WEBHOOK_SECRET": "anymail:pass",
        "MAILGUN_WEBHOOK_SIGNING_KEY": "signing-key",
        "SENDGRID_TRACKING_WEBHOOK_VERIFICATION_KEY": sendgrid_keypair().verification_key,
    }

    for provider in ("mailgun", "sendgrid", "ses"):
        assert messages(settings, provider, **keys) == []


def test_mailgun_checks_only_the_signing_key_not_the_api_key(settings):
    found = messages(settings, "mailgun", WEBHOOK_SECRET="anymail:pass", MAILGUN_API_KEY="key-api")

    assert ids(found) == ["transactional.W202"]
    assert "not the API key" in found[0].hint


def test_an_unreadable_sendgrid_key_is_an_error(settings):
    found = messages(
        settings, "smtp", WEBHOOK_SECRET="anymail:pass",
        SENDGRID_TRACKING_WEBHOOK_VERIFICATION_KEY="MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE",
    )

    assert ids(found) == ["transactional.E201"]


def test_checks_run_with_manage_py_check_deploy(settings):
    settings.ANYMAIL = {"WEBHOOK_SECRET": []}

    with pytest.raises(SystemCheckError, match="transactional.W201"):
        call_command("check", "--deploy", "--fail-level", "WARNING", "--tag", "security")
