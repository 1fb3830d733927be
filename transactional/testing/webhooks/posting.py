"""Posting a payload through the real authentication path: basic auth plus the ESP's signature."""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec
from django.http import HttpResponse
from django.test import Client
from django.urls import reverse

from .common import ESPS, anymail_setting
from .payloads import sns_notification
from .signing import SnsSigner, mailgun_signed, sendgrid_signed, sns_signed

_FROM_SETTINGS = object()


def webhook_url(esp: str) -> str:
    """Return the tracking-webhook path for ``esp`` (anymail's URL name)."""
    if esp not in ESPS:
        raise ValueError(f"esp is one of: {', '.join(ESPS)}")
    return reverse(f"anymail:{esp}_tracking_webhook")


def basic_auth(credentials: str) -> str:
    """Return an ``Authorization`` header value for ``user:password``."""
    return "Basic " + base64.b64encode(credentials.encode()).decode("ascii")


def post_webhook(
    client: Client,
    esp: str,
    payload: Any,
    *,
    auth: str | None | object = _FROM_SETTINGS,
    sign: bool = True,
    signing_key: str | None = None,
    sendgrid_key: ec.EllipticCurvePrivateKey | None = None,
    sns_signer: SnsSigner | None = None,
    sns_version: str = "2",
    headers: Mapping[str, str] | None = None,
) -> HttpResponse:
    """POST ``payload`` to ``esp``'s tracking webhook the way the ESP does; return the response.

    ``auth``: basic-auth ``user:password`` (default: the first of
    ``ANYMAIL["WEBHOOK_SECRET"]``; None sends none). ``sign=False`` skips the
    ESP signature, so a Mailgun payload keeps whatever ``signature`` it has.
    Mailgun payloads are signed with ``signing_key`` (default: the configured
    key), SendGrid with ``sendgrid_key`` (default: ``sendgrid_test_keys()``),
    SNS with ``sns_signer`` (default: ``sns_test_signer()``). A SendGrid event
    dict is posted as a batch of one; an SES event is wrapped in a Notification.
    """
    send_headers: dict[str, str] = {}
    if esp == "mailgun":
        body = json.dumps(mailgun_signed(payload, signing_key) if sign else payload)
        content_type = "application/json"
    elif esp == "sendgrid":
        body = json.dumps([payload] if isinstance(payload, Mapping) else payload)
        content_type = "application/json"
        if sign:
            send_headers.update(sendgrid_signed(body, sendgrid_key))
    elif esp == "amazon_ses":
        envelope = payload if "Type" in payload else sns_notification(payload)
        if sign:
            envelope = sns_signed(envelope, sns_signer, version=sns_version)
        body = json.dumps(envelope)
        content_type = "text/plain; charset=UTF-8"
        send_headers.update(
            {
                "x-amz-sns-message-type": str(envelope.get("Type")),
                "x-amz-sns-message-id": str(envelope.get("MessageId")),
                "x-amz-sns-topic-arn": str(envelope.get("TopicArn")),
            }
        )
    else:
        raise ValueError(f"esp is one of: {', '.join(ESPS)}")
    if auth is _FROM_SETTINGS:
        configured = anymail_setting("WEBHOOK_SECRET", [])
        configured = [configured] if isinstance(configured, str) else configured
        auth = configured[0] if configured else None
    if auth is not None:
        send_headers["Authorization"] = basic_auth(auth)
    send_headers.update(headers or {})
    return client.post(webhook_url(esp), data=body, content_type=content_type, headers=send_headers)
