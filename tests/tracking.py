"""ESP tracking webhooks as the ESPs post them, for the event-recording tests.

Payload builders in each ESP's documented shape (values from their docs'
examples), and ``Webhooks``, which posts them through anymail's own views
(``tests/anymail_urls.py``) with the authentication each ESP uses.
"""

import base64
import hashlib
import hmac
import json
import time
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from django.http import HttpResponse
from django.test import Client

WEBHOOK_USER, WEBHOOK_PASSWORD = "anymail", "hook-secret-for-tests"
MAILGUN_SIGNING_KEY = "mailgun-webhook-signing-key-for-tests"
WHEN = 1773480612  # 2026-03-14 09:30:12 UTC


def anymail_settings(existing: dict | None = None) -> dict:
    """Return ANYMAIL settings that authenticate the test posts."""
    return {
        **(existing or {}),
        "WEBHOOK_SECRET": f"{WEBHOOK_USER}:{WEBHOOK_PASSWORD}",
        "MAILGUN_WEBHOOK_SIGNING_KEY": MAILGUN_SIGNING_KEY,
    }


# Mailgun (JSON webhooks)
# ------------------------------------------------------------------------------


def mailgun_event(event: str, *, recipient: str, message_id: str, **fields: Any) -> dict:
    """Build Mailgun ``event-data``; ``message_id`` as in the header, brackets or not."""
    return {
        "event": event,
        "id": uuid.uuid4().hex[:22],
        "timestamp": WHEN + 0.5,
        "log-level": "info",
        "recipient": recipient,
        "recipient-domain": recipient.rpartition("@")[2],
        "tags": ["receipt"],
        "user-variables": {"order_id": "1042"},
        "envelope": {
            "transport": "smtp",
            "sender": "bounce@mg.acme-mail.com",
            "targets": recipient,
        },
        "message": {
            "headers": {
                "to": recipient,
                "message-id": message_id.strip("<>"),
                "from": "Acme <billing@acme-mail.com>",
                "subject": "Your receipt",
            },
            "attachments": [],
            "size": 1342,
        },
        "flags": {"is-routed": False, "is-authenticated": True, "is-test-mode": False},
        **fields,
    }


def mailgun_delivered(**kwargs: Any) -> dict:
    return mailgun_event(
        "delivered",
        **{
            "delivery-status": {
                "tls": True,
                "mx-host": "mx.example.com",
                "code": 250,
                "description": "",
                "attempt-no": 1,
                "message": "OK",
                "session-seconds": 0.4,
            },
            **kwargs,
        },
    )


def mailgun_failed(*, severity: str = "permanent", reason: str = "bounce", **kwargs: Any) -> dict:
    code, message = (550, "5.1.1 The email account that you tried to reach does not exist.")
    if severity == "temporary":
        code, message = (452, "4.2.2 The email account that you tried to reach is over quota.")
    return mailgun_event(
        "failed",
        severity=severity,
        reason=reason,
        **{
            "delivery-status": {
                "code": code,
                "message": message,
                "description": "",
                "attempt-no": 1,
                "mx-host": "mx.example.com",
                "tls": True,
            },
            **kwargs,
        },
    )


# SendGrid (a JSON array of events)
# ------------------------------------------------------------------------------


def sendgrid_event(event: str, *, email: str, anymail_id: str, **fields: Any) -> dict:
    """Build one SendGrid event for a message anymail sent (``anymail_id`` custom arg)."""
    return {
        "email": email,
        "timestamp": WHEN,
        "smtp-id": "<14c5d75ce93.dfd.64b469@ismtpd-555>",
        "event": event,
        "category": ["receipt"],
        "sg_event_id": base64.b64encode(uuid.uuid4().bytes).decode(),
        "sg_message_id": "14c5d75ce93.dfd.64b469.filter0001.16648.5515E0B88.0",
        "anymail_id": anymail_id,
        "order_id": "1042",
        **fields,
    }


# Amazon SES (SNS notifications, event-publishing format)
# ------------------------------------------------------------------------------


def ses_event(event_type: str, *, message_id: str, destination: list[str], **objects: Any) -> dict:
    """Build an SES event (the SNS ``Message``) about the mail sent as ``message_id``."""
    return {
        "eventType": event_type,
        "mail": {
            "timestamp": "2026-03-14T09:30:10.000Z",
            "source": "billing@acme-mail.com",
            "sendingAccountId": "123456789012",
            "messageId": message_id,
            "destination": destination,
            "headersTruncated": False,
            "headers": [
                {"name": "From", "value": "billing@acme-mail.com"},
                {"name": "Subject", "value": "Your receipt"},
                {"name": "X-Tag", "value": "receipt"},
                {"name": "X-Metadata", "value": '{"order_id": "1042"}'},
            ],
        },
        **objects,
    }


def ses_bounce(bounce_type: str, sub_type: str, recipients: list[str], **kwargs: Any) -> dict:
    return ses_event(
        "Bounce",
        **kwargs,
        bounce={
            "bounceType": bounce_type,
            "bounceSubType": sub_type,
            "bouncedRecipients": [
                {
                    "emailAddress": address,
                    "action": "failed",
                    "status": "5.1.1",
                    "diagnosticCode": "smtp; 550 5.1.1 user unknown",
                }
                for address in recipients
            ],
            "timestamp": "2026-03-14T09:30:12.000Z",
            "feedbackId": "0100018e3a1f2b4c-feedback-000000",
            "reportingMTA": "dsn; a8-50.smtp-out.amazonses.com",
        },
    )


def ses_open(**kwargs: Any) -> dict:
    return ses_event(
        "Open",
        **kwargs,
        open={
            "ipAddress": "192.0.2.1",
            "timestamp": "2026-03-14T09:40:00.000Z",
            "userAgent": "Mozilla/5.0 (iPhone)",
        },
    )


def ses_delivery(recipients: list[str], **kwargs: Any) -> dict:
    return ses_event(
        "Delivery",
        **kwargs,
        delivery={
            "timestamp": "2026-03-14T09:30:12.000Z",
            "processingTimeMillis": 546,
            "recipients": recipients,
            "smtpResponse": "250 2.6.0 Message received",
            "reportingMTA": "a8-70.smtp-out.amazonses.com",
        },
    )


# Posting
# ------------------------------------------------------------------------------


@dataclass
class Webhooks:
    """Post ESP tracking payloads through anymail's real views, authenticated."""

    client: Client
    prefix: str = "/anymail"

    def mailgun(self, event_data: dict, *, token: str | None = None) -> HttpResponse:
        """Post one Mailgun JSON event, signed with MAILGUN_SIGNING_KEY."""
        token = token or uuid.uuid4().hex + uuid.uuid4().hex[:18]
        timestamp = str(int(time.time()))
        signature = hmac.new(
            MAILGUN_SIGNING_KEY.encode(), f"{timestamp}{token}".encode(), hashlib.sha256
        ).hexdigest()
        body = {
            "signature": {"timestamp": timestamp, "token": token, "signature": signature},
            "event-data": event_data,
        }
        return self._post("mailgun", json.dumps(body), "application/json")

    def mailgun_legacy(self, fields: dict[str, str], *, token: str | None = None) -> HttpResponse:
        """Post one legacy (form-encoded) Mailgun event, signed with MAILGUN_SIGNING_KEY."""
        token = token or uuid.uuid4().hex + uuid.uuid4().hex[:18]
        timestamp = str(int(time.time()))
        signature = hmac.new(
            MAILGUN_SIGNING_KEY.encode(), f"{timestamp}{token}".encode(), hashlib.sha256
        ).hexdigest()
        body = urlencode({**fields, "timestamp": timestamp, "token": token, "signature": signature})
        return self._post("mailgun", body, "application/x-www-form-urlencoded")

    def sendgrid(self, events: list[dict], *, path: str | None = None) -> HttpResponse:
        """Post a batch of SendGrid events."""
        return self._post("sendgrid", json.dumps(events), "application/json", path=path)

    def ses(self, message: dict, *, sns_message_id: str | None = None) -> HttpResponse:
        """Post an SES event wrapped in an SNS notification."""
        sns_message_id = sns_message_id or str(uuid.uuid4())
        envelope = {
            "Type": "Notification",
            "MessageId": sns_message_id,
            "TopicArn": "arn:aws:sns:eu-west-1:123456789012:ses-events",
            "Subject": "Amazon SES Email Event Notification",
            "Message": json.dumps(message),
            "Timestamp": "2026-03-14T09:30:13.000Z",
            "SignatureVersion": "1",
            "Signature": "EXAMPLEpH+..",
            "SigningCertURL": "https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-0000.pem",
            "UnsubscribeURL": "https://sns.eu-west-1.amazonaws.com/?Action=Unsubscribe",
        }
        return self._post(
            "amazon_ses",
            json.dumps(envelope),
            "text/plain; charset=UTF-8",
            HTTP_X_AMZ_SNS_MESSAGE_TYPE="Notification",
            HTTP_X_AMZ_SNS_MESSAGE_ID=sns_message_id,
        )

    def _post(
        self, esp: str, body: str, content_type: str, *, path: str | None = None, **headers: str
    ) -> HttpResponse:
        credentials = base64.b64encode(f"{WEBHOOK_USER}:{WEBHOOK_PASSWORD}".encode()).decode()
        response = self.client.post(
            path or f"{self.prefix}/{esp}/tracking/",
            data=body,
            content_type=content_type,
            HTTP_AUTHORIZATION=f"Basic {credentials}",
            **headers,
        )
        assert response.status_code == 200, (response.status_code, response.content[:500])
        return response
