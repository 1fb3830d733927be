"""Reference receivers for scripts/bench_webhooks.py, loaded inside gunicorn.

Not part of the project: a ROOT_URLCONF that scripts/bench_webhooks.py
selects, through a settings module it generates on top of ``settings.prod``
(``from settings.prod import *; ROOT_URLCONF = "bench_webhooks_receivers"``),
for the two reference variants. Everything else (database settings,
middleware, ANYMAIL credentials) is ``settings.prod``'s, from the same
environment as our own variant (with ``--conn-max-age``, the same override
of it for every variant); the script checks that all three read the same
DATABASES before it starts.

At the same paths as the project (``/anymail/<esp>/tracking/``) it mounts
django-anymail's PLAIN tracking views (basic auth + ESP signature + parsing,
then one ``tracking`` signal per event, outside any transaction), disconnects
our recorder (transactional.receivers) and connects, per ``BENCH_RECEIVER``:

- ``noop``: a receiver that does nothing: the cost of HTTP, Django and
  anymail alone;
- ``naive``: one ``Event.objects.get_or_create()`` per event in autocommit
  (no linking, status or suppression): what a first attempt would write.

Django imports a urlconf on the first request of each gunicorn worker, so
the swap happens in every worker before any event is dispatched.
"""

from __future__ import annotations

import os
from typing import Any

from anymail.signals import AnymailTrackingEvent, tracking
from anymail.webhooks.mailgun import MailgunTrackingWebhookView
from anymail.webhooks.sendgrid import SendGridTrackingWebhookView
from django.http import HttpResponse
from django.urls import path

# Connected already by TransactionalConfig.ready(); imported so the disconnect below is certain.
import transactional.receivers  # noqa: F401
from transactional.models import Event
from transactional.views import healthz

VARIANT = os.environ.get("BENCH_RECEIVER", "")
ESP_BY_ANYMAIL_NAME = {"Mailgun": "mailgun", "SendGrid": "sendgrid", "Amazon SES": "amazon_ses"}


def noop_receiver(sender: type, event: AnymailTrackingEvent, esp_name: str, **kwargs: Any) -> None:
    """Receive the event and do nothing with it."""


def naive_receiver(sender: type, event: AnymailTrackingEvent, esp_name: str, **kwargs: Any) -> None:
    """Store the event with one get_or_create, in autocommit (plain views open no transaction)."""
    Event.objects.get_or_create(
        esp=ESP_BY_ANYMAIL_NAME[esp_name],
        event_id=event.event_id or "",
        address=(event.recipient or "").strip().lower(),
        defaults={
            "event_type": event.event_type or "unknown",
            "esp_message_id": event.message_id or "",
            "timestamp": event.timestamp,
            "raw": event.esp_event,
        },
    )


RECEIVERS = {"noop": noop_receiver, "naive": naive_receiver}
if VARIANT not in RECEIVERS:
    raise RuntimeError(f"BENCH_RECEIVER must be one of {', '.join(RECEIVERS)}, not {VARIANT!r}")

if not tracking.disconnect(dispatch_uid="transactional.receivers.record_tracking_event"):
    raise RuntimeError("our tracking receiver was not connected; cannot swap it out")
tracking.connect(RECEIVERS[VARIANT], weak=False, dispatch_uid=f"bench_webhooks.{VARIANT}")


def which(request) -> HttpResponse:
    """Name the tracking receivers this worker runs (the benchmark checks them)."""
    names = sorted(str(uid) for (uid, _sender), *_ in tracking.receivers)
    return HttpResponse(" ".join(names), content_type="text/plain")


urlpatterns = [
    path("anymail/mailgun/tracking/", MailgunTrackingWebhookView.as_view()),
    path("anymail/sendgrid/tracking/", SendGridTrackingWebhookView.as_view()),
    path("bench/receivers", which),
    path("healthz", healthz),
]
