"""The admin shows ESP events read-only: a timeline on each message, and their own list."""

import pytest
from django.urls import reverse

from tests.factories import make_message
from transactional.models import Event

pytestmark = pytest.mark.django_db


def record(message, event_type: str, when: str, **fields) -> Event:
    return Event.objects.create(
        esp="mailgun",
        event_id=f"{event_type}-1",
        address="ann@example.com",
        event_type=event_type,
        timestamp=when,
        message=message,
        recipient=message.recipients.first() if message else None,
        raw={"event": event_type, "note": "<script>alert(1)</script>"},
        **fields,
    )


def test_a_message_page_shows_its_events_oldest_first(admin_client):
    message = make_message(status="sent")
    record(message, "opened", "2026-03-14T10:00:00Z")
    record(message, "delivered", "2026-03-14T09:30:00Z", mta_response="250 OK")

    page = admin_client.get(
        reverse("admin:transactional_message_change", args=[message.pk])
    ).content.decode()

    assert "ESP events (timeline)" in page
    assert page.index("delivered") < page.index("opened")
    assert "250 OK" in page


def test_the_event_list_and_page_are_read_only_and_escape_the_payload(admin_client):
    event = record(None, "bounced", "2026-03-14T09:30:00Z")

    listing = admin_client.get(reverse("admin:transactional_event_changelist")).content.decode()
    page = admin_client.get(
        reverse("admin:transactional_event_change", args=[event.pk])
    ).content.decode()

    assert "not linked yet" in listing
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "<script>alert(1)" not in page
    assert 'name="_save"' not in page
    assert admin_client.get(reverse("admin:transactional_event_add")).status_code == 403
    assert (
        admin_client.post(reverse("admin:transactional_event_delete", args=[event.pk])).status_code
        == 403
    )
