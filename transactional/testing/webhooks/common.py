"""What the webhook test kit shares: test credentials, and small helpers."""

from __future__ import annotations

import base64
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from django.conf import settings

PAYLOADS = Path(__file__).resolve().parent.parent / "payloads"
ESPS = ("mailgun", "sendgrid", "amazon_ses")

WEBHOOK_SECRET = "anymail:test-webhook-password"
MAILGUN_SIGNING_KEY = "test-mailgun-webhook-signing-key-0123456789"
SNS_TOPIC_ARN = "arn:aws:sns:us-east-1:123456789012:transactional-ses-events"
SNS_CERT_URL = "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-0123456789abcdef.pem"

Timestamp = datetime | float | int | None


def anymail_setting(name: str, default: Any) -> Any:
    """Return ``settings.ANYMAIL[name]``, or ``default``."""
    return getattr(settings, "ANYMAIL", {}).get(name, default)


def epoch(value: datetime | float | int) -> float:
    """Return a datetime or a number as seconds since the epoch."""
    return value.timestamp() if isinstance(value, datetime) else float(value)


def iso_utc(value: datetime | float | int) -> str:
    """Return a datetime or epoch seconds as ESPs write them: ``2026-03-14T09:30:00.000Z``."""
    moment = value if isinstance(value, datetime) else datetime.fromtimestamp(value, UTC)
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def new_sendgrid_event_id() -> str:
    """Return a fresh ``sg_event_id``."""
    # SendGrid: "a string up to 100 characters that is Base64url encoded".
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode("ascii").rstrip("=")
