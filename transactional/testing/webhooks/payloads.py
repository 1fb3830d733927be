"""ESP payload templates: fresh copies of ``payloads/<esp>/<kind>.json``, aimed where you say."""

from __future__ import annotations

import json
import secrets
import time
import uuid
from collections.abc import Mapping
from functools import cache
from typing import Any

from .common import PAYLOADS, SNS_TOPIC_ARN, Timestamp, epoch, iso_utc, new_sendgrid_event_id


def kinds(esp: str) -> list[str]:
    """Return the payload kinds stored for ``esp``."""
    return sorted(path.stem for path in (PAYLOADS / esp).glob("*.json"))


def payload(esp: str, kind: str) -> Any:
    """Return a fresh copy of the stored ``payloads/<esp>/<kind>.json``."""
    return json.loads(_payload_text(esp, kind))


@cache
def _payload_text(esp: str, kind: str) -> str:
    path = PAYLOADS / esp / f"{kind}.json"
    if not path.is_file():
        raise ValueError(f"No {esp} payload {kind!r}; choose one of: {', '.join(kinds(esp))}")
    return path.read_text()


def mailgun_event(
    kind: str,
    *,
    message_id: str | None = None,
    recipient: str | None = None,
    timestamp: Timestamp = None,
    extra: Mapping[str, Any] | None = None,
) -> dict:
    """Return an (unsigned) Mailgun JSON webhook payload; sign it with ``mailgun_signed``.

    ``message_id`` is the send-time id, with or without its angle brackets
    (Mailgun reports it without them). ``extra`` updates ``event-data``.
    """
    data = payload("mailgun", kind)
    event = data["event-data"]
    if message_id is not None:
        event["message"]["headers"]["message-id"] = message_id.strip("<>")
    if recipient is not None:
        event["recipient"] = recipient
        event["recipient-domain"] = recipient.rpartition("@")[2]
        event["envelope"]["targets"] = recipient
        event["message"]["headers"]["to"] = recipient
    if timestamp is not None:
        event["timestamp"] = epoch(timestamp)
    event.update(extra or {})
    return data


def sendgrid_event(
    kind: str,
    *,
    message_id: str | None = None,
    recipient: str | None = None,
    timestamp: Timestamp = None,
    event_id: str | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict:
    """Return one SendGrid event (post a list of them), with a fresh ``sg_event_id``.

    ``message_id`` is anymail's ``anymail_id`` custom argument, which anymail
    reports as the message id.
    """
    if kind == "batch":
        raise ValueError("use sendgrid_batch() for the stored batch")
    event = payload("sendgrid", kind)
    event["sg_event_id"] = event_id or new_sendgrid_event_id()
    if message_id is not None:
        event["anymail_id"] = message_id
    if recipient is not None:
        event["email"] = recipient
    if timestamp is not None:
        event["timestamp"] = int(epoch(timestamp))
    event.update(extra or {})
    return event


def sendgrid_batch(*events: dict) -> list[dict]:
    """Return ``events`` as a batch, or the stored mixed batch with fresh event ids."""
    if events:
        return list(events)
    batch = payload("sendgrid", "batch")
    for event in batch:
        event["sg_event_id"] = new_sendgrid_event_id()
    return batch


def ses_event(
    kind: str,
    *,
    format: str = "event",
    message_id: str | None = None,
    recipient: str | None = None,
    timestamp: Timestamp = None,
) -> dict:
    """Return an SES event as SNS carries it in ``Message``; wrap it with ``sns_notification``.

    ``format="event"`` is configuration-set event publishing (``eventType``);
    ``format="notification"`` is identity feedback notifications
    (``notificationType``; only delivered, hard/soft bounce and complaint).
    anymail times events by the SNS envelope: pass ``timestamp`` to
    ``sns_notification`` too.
    """
    if format not in ("event", "notification"):
        raise ValueError('format is "event" or "notification"')
    event = payload("amazon_ses", kind if format == "event" else f"notification_{kind}")
    mail = event["mail"]
    if message_id is not None:
        mail["messageId"] = mail["commonHeaders"]["messageId"] = message_id
    type_name = event.get("eventType") or event["notificationType"]
    details = event.get(type_name[0].lower() + type_name[1:], {})
    if recipient is not None:
        mail["destination"] = [recipient]
        mail["commonHeaders"]["to"] = [recipient]
        for key in ("bouncedRecipients", "complainedRecipients", "delayedRecipients"):
            for entry in details.get(key, []):
                entry["emailAddress"] = recipient
        if "recipients" in details:
            details["recipients"] = [recipient]
    if timestamp is not None and "timestamp" in details:
        details["timestamp"] = iso_utc(timestamp)
    return event


def sns_notification(
    message: Mapping[str, Any] | str,
    *,
    topic_arn: str = SNS_TOPIC_ARN,
    message_id: str | None = None,
    timestamp: Timestamp = None,
    subject: str | None = None,
) -> dict:
    """Return an unsigned SNS ``Notification`` envelope carrying ``message``."""
    envelope = payload("amazon_ses", "sns_notification")
    envelope.update(
        MessageId=message_id or str(uuid.uuid4()),
        TopicArn=topic_arn,
        Message=message if isinstance(message, str) else json.dumps(message),
        Timestamp=iso_utc(timestamp if timestamp is not None else time.time()),
        UnsubscribeURL=envelope["UnsubscribeURL"].replace(SNS_TOPIC_ARN, topic_arn),
    )
    if subject is not None:
        envelope["Subject"] = subject
    return envelope


def sns_subscription_confirmation(
    *, topic_arn: str = SNS_TOPIC_ARN, type: str = "SubscriptionConfirmation"
) -> dict:
    """Return an unsigned SNS ``SubscriptionConfirmation`` (or ``UnsubscribeConfirmation``)."""
    envelope = payload("amazon_ses", "sns_subscription_confirmation")
    token = secrets.token_hex(64)
    envelope.update(
        Type=type,
        MessageId=str(uuid.uuid4()),
        TopicArn=topic_arn,
        Token=token,
        Message=envelope["Message"].replace(SNS_TOPIC_ARN, topic_arn),
        SubscribeURL=(
            "https://sns.us-east-1.amazonaws.com/?Action=ConfirmSubscription"
            f"&TopicArn={topic_arn}&Token={token}"
        ),
        Timestamp=iso_utc(time.time()),
    )
    return envelope
