"""Realistic, signed ESP tracking-webhook posts for tests (ours and yours).

The payloads in ``payloads/<esp>/<kind>.json`` are sanitised copies of each
ESP's documented samples. Each template returns a fresh copy that you can aim
at a stored message::

    payload = mailgun_event("hard_bounce", message_id=recipient.esp_message_id,
                            recipient="ann@example.org")
    response = post_webhook(client, "mailgun", payload)

``post_webhook`` goes through the real authentication path: basic auth from
``ANYMAIL["WEBHOOK_SECRET"]`` plus the ESP's own signature (Mailgun HMAC,
SendGrid ECDSA, SNS RSA). Two fixtures, enabled with
``pytest_plugins = ["transactional.testing.webhooks"]``: ``webhooks`` sets up
every credential with test keys and serves the SNS signing certificate
through ``responses`` (no network); ``tracking_events`` collects every
``tracking`` signal anymail's views send.

Kinds, per ESP (``kinds(esp)`` lists them): ``delivered``, ``hard_bounce``,
``soft_bounce``, ``complaint``, ``open``, ``click``, ``unsubscribe``; SendGrid
also ``processed``, ``blocked``, ``dropped``, ``group_unsubscribe`` and a
``batch``; Amazon SES also ``send``, ``delivery_delay`` and the
``notificationType`` format of the first four (``ses_event(...,
format="notification")``).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import responses
from anymail.signals import AnymailTrackingEvent, tracking
from django.http import HttpResponse
from django.test import Client

from transactional.webhooks.sns import clear_certificate_cache

from .common import ESPS, MAILGUN_SIGNING_KEY, SNS_CERT_URL, SNS_TOPIC_ARN, WEBHOOK_SECRET
from .payloads import (
    kinds,
    mailgun_event,
    payload,
    sendgrid_batch,
    sendgrid_event,
    ses_event,
    sns_notification,
    sns_subscription_confirmation,
)
from .posting import basic_auth, post_webhook, webhook_url
from .signing import (
    SendGridKeys,
    SnsSigner,
    mailgun_signed,
    sendgrid_keypair,
    sendgrid_signed,
    sendgrid_test_keys,
    sns_signed,
    sns_test_signer,
)

__all__ = [
    "ESPS",
    "MAILGUN_SIGNING_KEY",
    "SNS_CERT_URL",
    "SNS_TOPIC_ARN",
    "WEBHOOK_SECRET",
    "SendGridKeys",
    "SnsSigner",
    "WebhookKit",
    "basic_auth",
    "kinds",
    "mailgun_event",
    "mailgun_signed",
    "payload",
    "post_webhook",
    "sendgrid_batch",
    "sendgrid_event",
    "sendgrid_keypair",
    "sendgrid_signed",
    "ses_event",
    "sns_notification",
    "sns_signed",
    "sns_subscription_confirmation",
    "tracking_events",
    "webhook_url",
    "webhooks",
]


@dataclass
class WebhookKit:
    """The credentials the ``webhooks`` fixture configured, and a poster that uses them."""

    rsps: responses.RequestsMock
    secret: str = WEBHOOK_SECRET
    mailgun_signing_key: str = MAILGUN_SIGNING_KEY
    sendgrid: SendGridKeys = field(default_factory=sendgrid_test_keys)
    sns: SnsSigner = field(default_factory=sns_test_signer)
    topic_arn: str = SNS_TOPIC_ARN

    def post(self, client: Client, esp: str, payload: Any, **kwargs: Any) -> HttpResponse:
        """``post_webhook`` with this kit's keys."""
        kwargs.setdefault("sendgrid_key", self.sendgrid.private_key)
        kwargs.setdefault("sns_signer", self.sns)
        return post_webhook(client, esp, payload, **kwargs)


@pytest.fixture
def webhooks(settings, db) -> Iterator[WebhookKit]:
    """Configure every ESP's webhook credentials with test keys; serve the SNS certificate.

    It needs the database (posts record events), as ``db`` does; mark the
    test ``django_db(transaction=True)`` for committed transactions.

    SNS subscriptions are not auto-confirmed (that would call AWS); set
    ``ANYMAIL["AMAZON_SES_AUTO_CONFIRM_SNS_SUBSCRIPTIONS"] = True`` and mock
    AWS (moto) to test it.
    """
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        kit = WebhookKit(rsps)
        settings.ANYMAIL = {
            **getattr(settings, "ANYMAIL", {}),
            "WEBHOOK_SECRET": [kit.secret],
            "MAILGUN_WEBHOOK_SIGNING_KEY": kit.mailgun_signing_key,
            "SENDGRID_TRACKING_WEBHOOK_VERIFICATION_KEY": kit.sendgrid.verification_key,
            "AMAZON_SES_AUTO_CONFIRM_SNS_SUBSCRIPTIONS": False,
        }
        settings.TRANSACTIONAL_SNS_TOPIC_ARNS = [kit.topic_arn]
        kit.sns.serve(rsps)
        clear_certificate_cache()
        yield kit
    clear_certificate_cache()


@pytest.fixture
def tracking_events() -> Iterator[list[tuple[str, AnymailTrackingEvent]]]:
    """Collect ``(esp_name, event)`` for every anymail ``tracking`` signal sent during the test."""
    sent: list[tuple[str, AnymailTrackingEvent]] = []

    def collect(sender: type, event: AnymailTrackingEvent, esp_name: str, **kwargs: Any) -> None:
        sent.append((esp_name, event))

    uid = f"transactional.testing.webhooks.tracking_events.{id(sent)}"
    tracking.connect(collect, weak=False, dispatch_uid=uid)
    yield sent
    tracking.disconnect(dispatch_uid=uid)
