"""Every metric's value now, read cheaply: what /metrics and OpenTelemetry report.

A handful of queries whatever the size of the outbox, none of which reads
the messages table beyond an index range:

- the counters: the MetricCount table, a few hundred rows (counters.py);
- the messages still to send, by status: the (status, created_at) index,
  for queued, retrying and sending only, so a million sent messages cost
  nothing (a backlog costs its own size, as an index range);
- the oldest due message: one index seek per priority into the due index;
- the circuit breakers: ProviderState, a row per provider.

``SPECS`` says what each metric is before anything is read (OpenTelemetry
registers its instruments from it); ``collect()`` reads the values. Both
prometheus.py and otel.py only translate, so they report the same numbers.
"""

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Literal

from django.db.models import BooleanField, Count
from django.db.models.expressions import RawSQL
from django.utils import timezone

from .. import stats
from ..models import Message, ProviderState
from ..operations import provider_states
from . import config, counters
from .counters import Key

PREFIX = "transactional_"
#: Statuses whose messages are counted as they stand (the others are counters).
UNFINISHED = (Message.Status.QUEUED, Message.Status.RETRYING, Message.Status.SENDING)
#: The due index's condition as the index states it. SQLite uses a partial
#: index only for a query that repeats its condition literally: with the
#: statuses as parameters it reads every waiting message by status instead.
WAITING = RawSQL(
    f"status IN ({', '.join(repr(str(status)) for status in Message.WAITING)})",
    (),
    output_field=BooleanField(),
)
RATE_WINDOW = "over the last TRANSACTIONAL_METRICS_RATE_DAYS UTC days, today included"


@dataclass(frozen=True)
class Sample:
    labels: dict[str, str]
    value: float


@dataclass(frozen=True)
class Histogram:
    labels: dict[str, str]
    #: (upper bound, events at or below it), cumulative, ending with +Inf.
    buckets: list[tuple[str, int]]
    total: float


@dataclass(frozen=True)
class Spec:
    """What a metric is, before any value is read."""

    name: str
    kind: Literal["counter", "gauge", "histogram"]
    help: str
    labels: tuple[str, ...] = ()
    #: UCUM, as OpenTelemetry wants it: "s", "1", "{message}".
    unit: str = ""


@dataclass(frozen=True)
class Family:
    """A metric with its samples."""

    spec: Spec
    samples: list[Sample | Histogram] = field(default_factory=list)


def _spec(name: str, kind: str, help_text: str, labels: tuple[str, ...] = (), unit: str = "") -> Spec:
    return Spec(PREFIX + name, kind, help_text, labels, unit)  # type: ignore[arg-type]


MESSAGES = _spec(
    "messages", "counter",
    "Messages that entered a status: queued (stored by the outbox), sent, retrying (a retry "
    "was scheduled), failed, suppressed, blocked.",
    ("status", "provider", "stream"), "{message}",
)
RECIPIENTS_SENT = _spec(
    "recipients_sent", "counter",
    "Recipients of sent messages, less those the outbox skipped (suppressed, staging safety).",
    ("provider", "stream"), "{recipient}",
)
WEBHOOK_EVENTS = _spec(
    "webhook_events", "counter", "ESP tracking events recorded (a duplicate delivery counts once).",
    ("esp", "event_type"), "{event}",
)
HARD_BOUNCES = _spec(
    "hard_bounces", "counter", "Hard-bounce events: what ESPs count in the bounce rate.",
    ("esp",), "{event}",
)
COMPLAINTS = _spec(
    "complaints", "counter", "Spam-complaint events (SES not-spam feedback excluded).",
    ("esp",), "{event}",
)
WEBHOOK_LAG = _spec(
    "webhook_lag_seconds", "histogram",
    "How long after the ESP's event timestamp its webhook was received.", ("esp",), "s",
)
RATE_WINDOW_RECIPIENTS = _spec(
    "rate_window_recipients_sent", "gauge",
    f"Recipients sent {RATE_WINDOW}: the rates' denominator.", ("provider",), "{recipient}",
)
BOUNCE_RATE = _spec(
    "bounce_rate", "gauge", f"Hard bounces per recipient sent, {RATE_WINDOW}.", ("provider",), "1"
)
COMPLAINT_RATE = _spec(
    "complaint_rate", "gauge", f"Complaints per recipient sent, {RATE_WINDOW}.", ("provider",), "1"
)
BOUNCE_RATE_THRESHOLD = _spec(
    "bounce_rate_threshold", "gauge",
    "Bounce rate at which an ESP reviews the account (level=review; Amazon SES: 5%) or may "
    "pause its sending (level=pause; 10%): TRANSACTIONAL_BOUNCE_RATE_REVIEW and _PAUSE.",
    ("level",), "1",
)
COMPLAINT_RATE_THRESHOLD = _spec(
    "complaint_rate_threshold", "gauge",
    "Complaint rate at which an ESP reviews the account (level=review; Amazon SES: 0.1%) or "
    "may pause its sending (level=pause; 0.5%): TRANSACTIONAL_COMPLAINT_RATE_REVIEW and _PAUSE.",
    ("level",), "1",
)
RATE_WINDOW_DAYS = _spec(
    "rate_window_days", "gauge", "UTC days the rates are taken over (TRANSACTIONAL_METRICS_RATE_DAYS).",
    unit="d",
)
OUTBOX_MESSAGES = _spec(
    "outbox_messages", "gauge", "Messages not finished yet, by status (queued, retrying, sending).",
    ("status",), "{message}",
)
OLDEST_DUE = _spec(
    "oldest_due_seconds", "gauge",
    "How long the longest-waiting due message has been due (0: none is due).", unit="s",
)
BREAKER_STATE = _spec(
    "circuit_breaker_state", "gauge",
    "1 for the state each provider's circuit breaker is in (closed, open, half_open), else 0.",
    ("provider", "state"),
)
#: Counter name (MetricCount.name) -> its metric, and label -> the Key field it is in.
COUNTERS: dict[str, tuple[Spec, dict[str, str]]] = {
    counters.MESSAGES: (MESSAGES, {"status": "label", "provider": "provider", "stream": "stream"}),
    counters.RECIPIENTS_SENT: (RECIPIENTS_SENT, {"provider": "provider", "stream": "stream"}),
    counters.EVENTS: (WEBHOOK_EVENTS, {"esp": "esp", "event_type": "label"}),
    counters.HARD_BOUNCES: (HARD_BOUNCES, {"esp": "esp"}),
    counters.COMPLAINTS: (COMPLAINTS, {"esp": "esp"}),
}
#: Every metric, in the order they are reported.
SPECS = (
    *(spec for spec, _ in COUNTERS.values()), WEBHOOK_LAG, RATE_WINDOW_RECIPIENTS, BOUNCE_RATE,
    COMPLAINT_RATE, BOUNCE_RATE_THRESHOLD, COMPLAINT_RATE_THRESHOLD, RATE_WINDOW_DAYS,
    OUTBOX_MESSAGES, OLDEST_DUE, BREAKER_STATE,
)


def collect(*, now: datetime | None = None) -> list[Family]:
    """Read every metric now, in ``SPECS`` order; fold settled counter rows first."""
    now = now or timezone.now()
    today = counters.utc_today()
    counters.compact(today=today)
    days = config.rate_days()
    totals, window = _counter_sums(today - timedelta(days=days - 1))
    return [
        *_counter_families(totals),
        _lag_histogram(totals),
        *_rate_families(window, days),
        *_outbox_gauges(now),
        _breaker_gauge(),
    ]


# Counters
# ------------------------------------------------------------------------------


def _counter_sums(window_start: date) -> tuple[dict[Key, int], dict[Key, int]]:
    """Return each counter's total, and its sum over the rate window."""
    rows = counters.sums(since=window_start)
    return {key: total for key, total, _ in rows}, {key: recent for key, _, recent in rows}


def _counter_families(totals: dict[Key, int]) -> list[Family]:
    families = {name: Family(spec) for name, (spec, _) in COUNTERS.items()}
    for key, value in sorted(totals.items()):
        if key.name in COUNTERS:
            _, labels = COUNTERS[key.name]
            sample = Sample({label: getattr(key, part) for label, part in labels.items()}, value)
            families[key.name].samples.append(sample)
    return list(families.values())


def _lag_histogram(totals: dict[Key, int]) -> Family:
    per_esp: dict[str, dict[str, int]] = defaultdict(dict)
    for key, value in totals.items():
        if key.name == counters.WEBHOOK_LAG:
            per_esp[key.esp][key.label] = value
    family = Family(WEBHOOK_LAG)
    for esp, counts in sorted(per_esp.items()):
        running, buckets = 0, []
        for bound in [*map(str, counters.LAG_BUCKETS), counters.INFINITY]:
            running += counts.get(bound, 0)
            buckets.append((bound, running))
        total_ms = totals.get(Key(counters.WEBHOOK_LAG_MS, esp=esp), 0)
        family.samples.append(Histogram({"esp": esp}, buckets, total_ms / 1000))
    return family


# Rates
# ------------------------------------------------------------------------------


def _rate_families(window: dict[Key, int], days: int) -> list[Family]:
    """Bounce and complaint rates over the window per provider, and the levels ESPs act at."""
    from ..simulation import ESP_OF_PROVIDER  # imports anymail's webhook views: only here

    sent: dict[str, int] = defaultdict(int)
    for key, value in window.items():
        if key.name == counters.RECIPIENTS_SENT and key.provider in ESP_OF_PROVIDER:
            sent[key.provider] += value
    volume, bounce, complaint = Family(RATE_WINDOW_RECIPIENTS), Family(BOUNCE_RATE), Family(COMPLAINT_RATE)
    for provider, recipients in sorted(sent.items()):
        esp, labels = ESP_OF_PROVIDER[provider], {"provider": provider}
        volume.samples.append(Sample(labels, recipients))
        if recipients:  # no rate without mail: better no sample than a 0 that looks healthy
            hard = window.get(Key(counters.HARD_BOUNCES, esp=esp), 0)
            complaints = window.get(Key(counters.COMPLAINTS, esp=esp), 0)
            bounce.samples.append(Sample(labels, hard / recipients))
            complaint.samples.append(Sample(labels, complaints / recipients))
    return [
        volume,
        bounce,
        complaint,
        _thresholds(BOUNCE_RATE_THRESHOLD, "BOUNCE_RATE"),
        _thresholds(COMPLAINT_RATE_THRESHOLD, "COMPLAINT_RATE"),
        Family(RATE_WINDOW_DAYS, [Sample({}, days)]),
    ]


def _thresholds(spec: Spec, setting: str) -> Family:
    return Family(
        spec,
        [
            Sample({"level": "review"}, stats.threshold(f"{setting}_REVIEW")),
            Sample({"level": "pause"}, stats.threshold(f"{setting}_PAUSE")),
        ],
    )


# Gauges read from the outbox
# ------------------------------------------------------------------------------


def _outbox_gauges(now: datetime) -> list[Family]:
    counts = dict(
        Message.objects.filter(status__in=UNFINISHED)
        .values_list("status")
        .annotate(n=Count("*"))  # COUNT(*): the (status, created_at) index alone answers it
        .order_by()
    )
    return [
        Family(
            OUTBOX_MESSAGES,
            [Sample({"status": str(status)}, counts.get(status, 0)) for status in UNFINISHED],
        ),
        Family(OLDEST_DUE, [Sample({}, oldest_due_seconds(now) or 0.0)]),
    ]


def oldest_due_seconds(now: datetime) -> float | None:
    """Return how long the longest-waiting due message has been due, or None.

    One seek per priority into the due index (priority, next_attempt_at):
    ordering every due message by next_attempt_at alone would read them
    all, which during a backlog is the whole queue.
    """
    due = Message.objects.filter(WAITING, next_attempt_at__lte=now)
    heads = [
        due.filter(priority=priority)
        .order_by("next_attempt_at")
        .values_list("next_attempt_at", flat=True)
        .first()
        for priority in Message.Priority.values
    ]
    oldest = min((head for head in heads if head is not None), default=None)
    return None if oldest is None else max(0.0, (now - oldest).total_seconds())


def _breaker_gauge() -> Family:
    family = Family(BREAKER_STATE)
    for provider, state in provider_states().items():
        for name in ProviderState.State.values:
            on = float(state["breaker"] == name)
            family.samples.append(Sample({"provider": provider, "state": name}, on))
    return family
