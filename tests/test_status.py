"""A recipient's status from events: by precedence, so arrival order never matters."""

from functools import reduce

import pytest
from hypothesis import given
from hypothesis import strategies as st

from transactional.status import EVENT_STATUS, PRECEDENCE, next_status

EVENT_TYPES = sorted(EVENT_STATUS)


def fold(events: list[str], start: str = "sent") -> str:
    return reduce(next_status, events, start)


@pytest.mark.parametrize(
    ("events", "expected"),
    [
        # the normal life of a mail, in either order
        (["queued", "delivered", "opened", "clicked"], "clicked"),
        (["clicked", "opened", "delivered", "queued"], "clicked"),
        # deferred is only a step towards delivered or bounced
        (["deferred", "delivered"], "delivered"),
        (["delivered", "deferred"], "delivered"),
        (["deferred", "bounced"], "bounced"),
        # a bounce is never undone by sent, deferred or delivered...
        (["bounced", "delivered"], "bounced"),
        (["delivered", "bounced"], "bounced"),
        (["rejected", "sent"], "rejected"),
        (["failed", "deferred"], "failed"),
        # ...but an open proves somebody read it
        (["bounced", "opened"], "opened"),
        (["opened", "bounced"], "opened"),
        # the recipient's own verdict outranks everything
        (["clicked", "unsubscribed"], "unsubscribed"),
        (["unsubscribed", "clicked"], "unsubscribed"),
        (["unsubscribed", "complained"], "complained"),
        (["complained", "unsubscribed"], "complained"),
        (["complained", "bounced", "delivered"], "complained"),
        # implied delivery
        (["autoresponded"], "delivered"),
        # no effect
        (["subscribed", "unknown"], "sent"),
    ],
)
def test_precedence(events, expected):
    assert fold(events) == expected


def test_a_suppressed_recipient_is_never_changed():
    assert all(next_status("suppressed", event) == "suppressed" for event in EVENT_TYPES)


def test_every_recipient_status_has_a_rank():
    from transactional.models import Recipient

    assert set(PRECEDENCE) == set(Recipient.Status.values)


@given(st.lists(st.sampled_from(EVENT_TYPES), max_size=12), st.randoms(use_true_random=False))
def test_any_order_of_the_same_events_ends_in_the_same_status(events, random):
    shuffled = list(events)
    random.shuffle(shuffled)

    assert fold(shuffled) == fold(events)


@given(st.lists(st.sampled_from(EVENT_TYPES), max_size=12))
def test_a_repeated_event_changes_nothing(events):
    assert fold(events + events) == fold(events)
