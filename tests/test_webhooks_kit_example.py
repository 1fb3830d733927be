"""The "In tests" example of docs/webhooks.md, as a user would write it.

No django_db mark and no fixture imports: tests/conftest.py enables the
plugin as the docs say, and the ``webhooks`` fixture brings the database.
"""

from transactional.models import Suppression
from transactional.testing.webhooks import mailgun_event, post_webhook


def test_a_hard_bounce_suppresses(client, webhooks, tracking_events):
    payload = mailgun_event(
        "hard_bounce", message_id="<20260314.1@mg.example.com>", recipient="ann@example.org"
    )
    assert post_webhook(client, "mailgun", payload).status_code == 200
    [(esp_name, event)] = tracking_events
    assert (esp_name, event.event_type) == ("Mailgun", "bounced")
    assert Suppression.objects.filter(address="ann@example.org").exists()
