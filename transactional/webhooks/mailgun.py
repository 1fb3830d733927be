"""Mailgun tracking webhook: anymail's view plus a signing key and a timestamp window.

anymail falls back to ``MAILGUN_API_KEY`` when ``MAILGUN_WEBHOOK_SIGNING_KEY``
is unset, but Mailgun signs webhooks with a different key, so every post
would fail its signature check; we refuse with 503 and say which key is
missing instead. anymail accepts a signature of any age; we accept
``TRANSACTIONAL_MAILGUN_MAX_AGE_SECONDS`` (12 h by default: Mailgun retries
for 8 h) into the past and a little clock skew into the future. Replays
inside the window record nothing new: the signature token is anymail's
event_id, and Event is unique per ESP, event id and address.
"""

from __future__ import annotations

import math
import time
from typing import Any

from anymail.signals import AnymailTrackingEvent
from anymail.utils import get_anymail_setting
from anymail.webhooks.mailgun import MailgunTrackingWebhookView
from django.http import HttpRequest

from ..conf import get_setting
from .base import HardenedTrackingMixin, Malformed, read_json

#: How far ahead of our clock a signature timestamp may be.
MAX_FUTURE_SECONDS = 5 * 60


class MailgunTrackingView(HardenedTrackingMixin, MailgunTrackingWebhookView):
    key_settings = "MAILGUN_WEBHOOK_SIGNING_KEY"

    #: A JSON post's body, as check_request() read it (None: a legacy form post).
    payload: Any = None

    def misconfiguration(self) -> str | None:
        if problem := super().misconfiguration():
            return problem
        if not get_anymail_setting("webhook_signing_key", esp_name=self.esp_name, default=None):
            return (
                "MAILGUN_WEBHOOK_SIGNING_KEY is not set. Mailgun signs webhooks with its "
                '"HTTP webhook signing key", not the API key anymail would fall back to.'
            )
        return None

    def check_request(self, request: HttpRequest) -> None:
        try:
            timestamp = float(self._signature_timestamp(request))
        except (KeyError, TypeError, ValueError, OverflowError) as err:
            raise Malformed("signature timestamp is not a number") from err
        if not math.isfinite(timestamp):
            raise Malformed("signature timestamp is not a number")
        age = time.time() - timestamp
        max_age = get_setting("MAILGUN_MAX_AGE_SECONDS")
        if age > max_age:
            raise Malformed(f"signature is {age:.0f} s old, more than {max_age} s: stale or replayed")
        if age < -MAX_FUTURE_SECONDS:
            raise Malformed(f"signature timestamp is {-age:.0f} s in the future")

    def anymail_events(self, request: HttpRequest) -> list[AnymailTrackingEvent]:
        if self.payload is None:
            return super().anymail_events(request)
        # What anymail's parse_events() does with a JSON post, without
        # reading the body a third time.
        return [self.esp_to_anymail_event(self.payload)]

    def _signature_timestamp(self, request: HttpRequest) -> object:
        # anymail's signature check has already read these same fields.
        if request.content_type == "application/json":
            self.payload, self.plain_body = read_json(request.body)
            return self.payload["signature"]["timestamp"]
        return request.POST["timestamp"]
