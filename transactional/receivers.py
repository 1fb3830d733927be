"""anymail signal receivers; connected by TransactionalConfig.ready()."""

from typing import Any

from anymail.signals import AnymailTrackingEvent, tracking
from django.dispatch import receiver

from . import events


@receiver(tracking, dispatch_uid="transactional.receivers.record_tracking_event")
def record_tracking_event(
    sender: type, event: AnymailTrackingEvent, esp_name: str, **kwargs: Any
) -> None:
    """Record an ESP tracking event (in bulk at the end of an ``events.batch()``)."""
    events.receive(event, esp_name)
