"""SendGrid tracking webhook: anymail's view, judging a batch event by event.

SendGrid posts a JSON array of events. anymail parses the whole array in one
go, so one odd event fails the batch with a 500 and SendGrid retries all of
it for 24 hours. Here each event is parsed on its own: well-formed events are
recorded, malformed ones are skipped and counted in a warning, and a batch
with nothing but malformed events gets a 400.
"""

from __future__ import annotations

from typing import Any

from anymail.signals import AnymailTrackingEvent
from anymail.webhooks.sendgrid import SendGridTrackingWebhookView
from cryptography.hazmat.primitives.asymmetric import ec
from django.http import HttpRequest

from .base import (
    PARSE_ERRORS,
    HardenedTrackingMixin,
    Malformed,
    check_event,
    logger,
    read_json,
)


class SendGridTrackingView(HardenedTrackingMixin, SendGridTrackingWebhookView):
    key_settings = "SENDGRID_TRACKING_WEBHOOK_VERIFICATION_KEY"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        # anymail loads any PEM public key, then fails on every post to verify
        # an ECDSA signature with an RSA or Ed25519 one (check E201 says so too).
        key = getattr(self, "webhook_verification_key", None)
        if not self.refusal and key and not isinstance(key, ec.EllipticCurvePublicKey):
            self.refusal = (
                "SENDGRID_TRACKING_WEBHOOK_VERIFICATION_KEY is not an elliptic-curve public key: "
                "copy the Signed Event Webhook's verification key from SendGrid."
            )

    def parse_tracking_events(self, request: HttpRequest) -> list[AnymailTrackingEvent]:
        try:
            batch, self.plain_body = read_json(request.body)
        except (ValueError, RecursionError) as err:  # ValueError includes UnicodeDecodeError
            raise Malformed("body is not JSON") from err
        if not isinstance(batch, list):
            raise Malformed("body is not a JSON array of events")
        events, errors = [], []
        for position, esp_event in enumerate(batch):
            try:
                events.append(self._parse_one(esp_event))
            except PARSE_ERRORS as err:
                errors.append(f"#{position}: {type(err).__name__}")
        if errors and not events:
            raise Malformed(f"none of the {len(errors)} events is well-formed")
        if errors:
            logger.warning(
                "Skipped %d malformed event(s) of %d in a SendGrid batch (%s)",
                len(errors),
                len(batch),
                ", ".join(errors[:10]),
            )
        return events

    def _parse_one(self, esp_event: object) -> AnymailTrackingEvent:
        if not isinstance(esp_event, dict) or not isinstance(esp_event.get("event"), str):
            raise TypeError("not an event object")
        event = self.esp_to_anymail_event(esp_event)
        check_event(event, plain=self.plain_body)
        return event
