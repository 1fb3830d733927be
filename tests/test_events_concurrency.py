"""Concurrent webhook posts about the same recipients, on PostgreSQL's row locks.

SendGrid posts several batches at once, and their events overlap: the same
recipients, in any order. Each post is one transaction that inserts events
and raises recipient statuses; taken in different orders, those row locks
would deadlock (PostgreSQL then aborts one post with a 500). events.py takes
them in one order. SQLite locks the whole database per write instead.
"""

import random
import threading
from functools import reduce

import pytest
from anymail.signals import AnymailTrackingEvent
from django.db import connection, transaction

from tests.factories import make_message
from transactional import events
from transactional.models import Event, Recipient
from transactional.status import next_status

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(
        connection.vendor != "postgresql", reason="row locks: SQLite locks the whole database"
    ),
]

RECIPIENTS, ROUNDS, POSTS = 30, 20, 4
KINDS = ("delivered", "opened", "clicked", "bounced", "deferred", "complained")


def post(batch: list[AnymailTrackingEvent], errors: list[Exception]) -> None:
    try:
        with transaction.atomic():
            events.record_many(batch, "SendGrid")
    except Exception as error:  # noqa: BLE001  (collected for the assertion)
        errors.append(error)
    finally:
        connection.close()


@pytest.mark.parametrize(
    "shared",
    [
        pytest.param(True, id="the same events in several posts"),
        pytest.param(False, id="different events about the same recipients"),
    ],
)
def test_overlapping_posts_at_once_neither_deadlock_nor_record_twice(shared):
    for n in range(RECIPIENTS):
        message = make_message(status="sent", to=[f"user{n}@example.com"], recipient_status="sent")
        message.recipients.update(esp_message_id=f"sg-{n}")
    rng = random.Random(20261126)
    errors: list[Exception] = []
    posted: dict[str, AnymailTrackingEvent] = {}

    def event(n: int, event_id: str) -> AnymailTrackingEvent:
        return AnymailTrackingEvent(
            event_type=rng.choice(KINDS),
            event_id=event_id,
            recipient=f"user{n}@example.com",
            message_id=f"sg-{n}",
            esp_event={"event": "bounce", "type": "bounce"},
        )

    for r in range(ROUNDS):
        Recipient.objects.update(status="sent")  # so that every round raises statuses again
        if shared:
            # Each post: half the round's events, overlapping the others', in its own order.
            round_events = [event(n, f"r{r}-{n}-{k}") for n in range(RECIPIENTS) for k in range(2)]
            batches = [rng.sample(round_events, len(round_events) // 2) for _ in range(POSTS)]
        else:
            # Each post: its own events about every recipient, in its own order.
            batches = [
                [event(n, f"r{r}-p{p}-{n}") for n in rng.sample(range(RECIPIENTS), RECIPIENTS)]
                for p in range(POSTS)
            ]
        last_round = {event.event_id: event for batch in batches for event in batch}
        posted.update(last_round)
        threads = [threading.Thread(target=post, args=(batch, errors)) for batch in batches]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    assert errors == []
    assert sorted(Event.objects.values_list("event_id", flat=True)) == sorted(posted)
    for recipient in Recipient.objects.all():
        kinds = [e.event_type for e in last_round.values() if e.recipient == recipient.address]
        assert recipient.status == reduce(next_status, kinds, "sent"), recipient.address
