"""A recipient's status from ESP events: by precedence, never by arrival order.

ESPs post events late, twice and out of order (a ``delivered`` can arrive
after the ``opened`` it enabled). So an event never sets a status; it
proposes one, and the recipient keeps whichever ranks higher. Taking the
maximum makes the result independent of arrival order and of duplicates.
docs/webhooks-status.md explains the ranking.
"""

from .models import Recipient

Status = Recipient.Status

#: anymail event type -> the recipient status it proposes (None: no change).
EVENT_STATUS: dict[str, str | None] = {
    "queued": Status.SENT,
    "sent": Status.SENT,
    "deferred": Status.DEFERRED,
    "delivered": Status.DELIVERED,
    "autoresponded": Status.DELIVERED,  # a bot replied, so the mail arrived
    "opened": Status.OPENED,
    "clicked": Status.CLICKED,
    "failed": Status.FAILED,
    "rejected": Status.REJECTED,
    "bounced": Status.BOUNCED,
    "unsubscribed": Status.UNSUBSCRIBED,
    "complained": Status.COMPLAINED,
    "subscribed": None,  # a re-subscribe says nothing about this mail
    "unknown": None,
}

#: Every recipient status, lowest first: a status only ever moves right.
PRECEDENCE: tuple[str, ...] = (
    Status.QUEUED,
    Status.SENT,
    Status.DEFERRED,
    Status.DELIVERED,
    # Non-delivery outranks "delivered": an asynchronous bounce after the
    # receiving MTA accepted the mail is the later truth.
    Status.FAILED,
    Status.REJECTED,
    Status.BOUNCED,
    # An open or click proves somebody read it, whatever bounced.
    Status.OPENED,
    Status.CLICKED,
    # The recipient's own verdict outranks every delivery fact.
    Status.UNSUBSCRIBED,
    Status.COMPLAINED,
    # Never sent (the outbox skipped the address, or staging safety sent it
    # elsewhere): no event applies.
    Status.REDIRECTED,
    Status.BLOCKED,
    Status.SUPPRESSED,
)

RANK: dict[str, int] = {status: rank for rank, status in enumerate(PRECEDENCE)}


def statuses_below(status: str) -> tuple[str, ...]:
    """Return the statuses a recipient may move up from into ``status``."""
    return PRECEDENCE[: RANK[status]]


def next_status(current: str, event_type: str) -> str:
    """Return the status a recipient in ``current`` has after an ``event_type`` event."""
    proposed = EVENT_STATUS.get(event_type)
    if proposed is None or RANK[proposed] <= RANK[current]:
        return current
    return proposed
