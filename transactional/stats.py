"""Delivery stats: daily counts per recipient, and bounce and complaint rates.

How things are counted (the admin page says the same, in fewer words):

- Days are UTC days, as the ESPs' own dashboards count them. The window is
  the last ``DAYS`` days including today, which is still running.
- Everything is counted per recipient, as ESPs count sends and rates: a
  message to three addresses is three sends.
- Sent: recipients of messages the provider accepted that day
  (``Message.sent_at``), less addresses the outbox skipped as suppressed.
- Delivered, opened, bounced, complained: distinct recipients with such an
  ESP event that day, by the time the ESP gives (``received_at`` when it
  gives none). Only events linked to one of our recipients count: mail sent
  around the outbox is not in "sent" either, and an SES open of a message
  to several addresses cannot be pinned on one of them.
- Bounced means hard bounces, the only kind Amazon SES counts toward the
  bounce rate it enforces ("Your bounce rate includes only hard bounces",
  SES Developer Guide, enforcement FAQ, bounce Q3). Hard is what
  ``esps.suppression_reason()`` calls a bounce, from the ESP's own fields:
  SES ``Permanent``, Mailgun permanent failures for a bad address, SendGrid
  ``Invalid Address`` bounces. Other ``bounced`` events are soft bounces
  (SES ``Transient``/``Undetermined``, SendGrid ``blocked``, Mailgun giving
  up on a temporary failure): counted apart, never in the rate.
  ``deferred`` events (Mailgun temporary failures, SendGrid deferrals) are
  retries still in progress and are not counted at all.
- Complained: complaint events, less SES ``not-spam`` feedback.
- Rates are over the window: hard-bounced (or complained) recipients over
  sent recipients. SES measures over a "representative volume" instead,
  and only mail to domains not verified in SES; ours is an early warning,
  not SES's figure.

A few queries in all, whatever the window: per-day ``TruncDate`` + ``Count``
for sends and for delivered/opened, and one fetch of the window's bounce and
complaint events, which need the ESP's payload to classify.
"""

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

from django.db.models import Count, Q, QuerySet
from django.db.models.functions import Coalesce, TruncDate
from django.utils import timezone

from . import esps
from .conf import get_setting
from .models import Event, Recipient, Suppression

#: Days shown, today included.
DAYS = 30
#: Gmail's spam-rate limit for bulk senders, as Gmail Postmaster Tools
#: measures it (complaints from Gmail users over mail in their inbox). We
#: cannot compute that figure; the page shows it for reference only.
GMAIL_SPAM_RATE_LIMIT = 0.003

#: Rate thresholds (fractions), ``TRANSACTIONAL_<name>`` to override. The
#: defaults are the levels at which Amazon SES reviews an account (bounces
#: 5%, complaints 0.1%) and may pause its sending (10%, 0.5%).
#: Event types whose distinct recipients are counted in the database.
TRACKED = ("delivered", "opened")
#: Event types classified from the ESP's payload (see ``_verdict``).
CLASSIFIED = ("bounced", "complained")


def threshold(name: str) -> float:
    """Return the ``TRANSACTIONAL_<name>`` rate threshold as a fraction."""
    return float(get_setting(name))


@dataclass(frozen=True)
class Counts:
    """Recipients per outcome, for one day (``day``) or the whole window (``day`` None)."""

    day: date | None = None
    sent: int = 0
    delivered: int = 0
    bounced: int = 0
    soft_bounced: int = 0
    complained: int = 0
    opened: int = 0

    @property
    def bounce_rate(self) -> float | None:
        return self.bounced / self.sent if self.sent else None

    @property
    def complaint_rate(self) -> float | None:
        return self.complained / self.sent if self.sent else None


@dataclass(frozen=True)
class Rate:
    """A rate over the window, against the levels that get an account reviewed or paused."""

    value: float | None
    review: float
    pause: float

    @property
    def level(self) -> str:
        """Return the highest threshold reached ("pause", "review"), else "ok" or "none"."""
        if self.value is None:
            return "none"
        if self.value >= self.pause:
            return "pause"
        if self.value >= self.review:
            return "review"
        return "ok"


@dataclass(frozen=True)
class DeliveryStats:
    days: list[Counts]
    total: Counts
    bounce_rate: Rate
    complaint_rate: Rate


def delivery_stats(*, days: int = DAYS, today: date | None = None, stream: str | None = None) -> DeliveryStats:
    """Return the daily counts and the rates for the ``days`` UTC days up to ``today``.

    ``stream``: only mail on that stream (None: every stream).
    """
    today = today or timezone.now().astimezone(UTC).date()
    first = today - timedelta(days=days - 1)
    start, end = _midnight(first), _midnight(today + timedelta(days=1))
    events = _events_between(start, end)
    recipients = Recipient.objects.all()
    if stream is not None:
        events = events.filter(recipient__message__stream=stream)
        recipients = recipients.filter(message__stream=stream)

    sent = _sent_per_day(recipients, start, end)
    tracked, tracked_total = _tracked(events)
    verdicts = _verdicts(events)

    daily = []
    for offset in range(days):
        day = first + timedelta(days=offset)
        daily.append(
            Counts(
                day=day,
                sent=sent.get(day, 0),
                **tracked.get(day, {}),
                **{kind: len(per_day.get(day, ())) for kind, per_day in verdicts.items()},
            )
        )
    total = Counts(
        sent=sum(sent.values()),
        **tracked_total,
        # Distinct over the window: a recipient who bounced twice counts once.
        **{kind: len(set().union(*per_day.values())) for kind, per_day in verdicts.items()},
    )
    return DeliveryStats(
        days=daily,
        total=total,
        bounce_rate=Rate(
            total.bounce_rate, threshold("BOUNCE_RATE_REVIEW"), threshold("BOUNCE_RATE_PAUSE")
        ),
        complaint_rate=Rate(
            total.complaint_rate,
            threshold("COMPLAINT_RATE_REVIEW"),
            threshold("COMPLAINT_RATE_PAUSE"),
        ),
    )


def _midnight(day: date) -> datetime:
    return datetime.combine(day, time.min, tzinfo=UTC)


def _sent_per_day(recipients: QuerySet[Recipient], start: datetime, end: datetime) -> dict[date, int]:
    """Return the recipients sent per UTC day."""
    rows = (
        recipients.filter(message__sent_at__gte=start, message__sent_at__lt=end)
        # Never mailed: suppressed, or sent elsewhere by staging safety.
        .exclude(status__in=[Recipient.Status.SUPPRESSED, Recipient.Status.REDIRECTED, Recipient.Status.BLOCKED])
        .annotate(day=TruncDate("message__sent_at", tzinfo=UTC))
        .values("day")
        .annotate(recipients=Count("pk"))
        .order_by()
    )
    return {row["day"]: row["recipients"] for row in rows}


def _events_between(start: datetime, end: datetime) -> QuerySet[Event]:
    """Return the window's events linked to a recipient, each with its UTC ``day``."""
    # Two indexed ranges rather than one over Coalesce(), which no index covers.
    when = Q(timestamp__gte=start, timestamp__lt=end) | Q(
        timestamp__isnull=True, received_at__gte=start, received_at__lt=end
    )
    return (
        Event.objects.filter(when, recipient__isnull=False)
        .annotate(day=TruncDate(Coalesce("timestamp", "received_at"), tzinfo=UTC))
        .order_by()
    )


def _tracked(events: QuerySet[Event]) -> tuple[dict[date, dict[str, int]], dict[str, int]]:
    """Return distinct recipients per tracked event type, per day and over the window."""
    counts = {
        kind: Count("recipient", distinct=True, filter=Q(event_type=kind)) for kind in TRACKED
    }
    events = events.filter(event_type__in=TRACKED)
    daily = {row.pop("day"): row for row in events.values("day").annotate(**counts)}
    return daily, events.aggregate(**counts)


def _verdicts(events: QuerySet[Event]) -> dict[str, dict[date, set[int]]]:
    """Return the recipient ids per day for each kind: bounced (hard), soft_bounced, complained."""
    verdicts: dict[str, dict[date, set[int]]] = {
        "bounced": {},
        "soft_bounced": {},
        "complained": {},
    }
    rows = events.filter(event_type__in=CLASSIFIED).values_list(
        "day", "recipient_id", "esp", "event_type", "raw"
    )
    for day, recipient_id, esp, event_type, raw in rows:
        kind = _verdict(esp, event_type, raw)
        if kind:
            verdicts[kind].setdefault(day, set()).add(recipient_id)
    return verdicts


def _verdict(esp: str, event_type: str, raw: object) -> str | None:
    """Return how a bounce or complaint event counts: bounced, soft_bounced, complained or None."""
    # The suppression rules already tell a hard bounce from a soft one, and a
    # complaint from SES "not-spam" feedback, per ESP; one definition for both.
    if esp in esps.SUPPRESSION_RULES:
        reason = esps.suppression_reason(esp, event_type, raw)
    else:  # an ESP we cannot classify: count it as it says (the cautious way)
        reason = {
            "bounced": Suppression.Reason.BOUNCED,
            "complained": Suppression.Reason.COMPLAINED,
        }[event_type]
    if event_type == "bounced":
        return "bounced" if reason == Suppression.Reason.BOUNCED else "soft_bounced"
    return "complained" if reason == Suppression.Reason.COMPLAINED else None
