"""The counters every process adds to: one upsert per call, per day and shard, folded later."""

import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime, timedelta

import pytest
from django.db import connection, transaction
from django.db.models import Sum
from django.utils import timezone

from tests.factories import make_message
from transactional.metrics import count_events, count_messages, count_sent, counters, increment
from transactional.metrics.counters import BEFORE_WINDOW, KEEP_DAYS, Key
from transactional.models import Event, Message, MetricCount, Recipient

pytestmark = pytest.mark.django_db

SENT = Key(counters.MESSAGES, "ses", "transactional", label="sent")


def totals() -> dict[Key, int]:
    """Return each counter's value over every day and shard."""
    return {key: total for key, total, _ in counters.sums(since=counters.utc_today())}


def test_increments_add_up_in_one_row_per_counter_and_day():
    increment({SENT: 3})
    increment([(SENT, 2), (SENT, 1), (Key(counters.MESSAGES, "ses", label="failed"), 1)])

    assert totals() == {SENT: 6, Key(counters.MESSAGES, "ses", label="failed"): 1}
    assert MetricCount.objects.count() == 2
    assert set(MetricCount.objects.values_list("day", flat=True)) == {counters.utc_today()}


def test_one_statement_serves_a_whole_batch(django_assert_num_queries):
    with django_assert_num_queries(1):
        increment({Key(counters.MESSAGES, "ses", f"stream-{n}", label="sent"): n + 1 for n in range(50)})

    assert sum(totals().values()) == sum(range(1, 51))


def test_counts_are_part_of_the_callers_transaction():
    with pytest.raises(RuntimeError), transaction.atomic():
        increment({SENT: 1})
        raise RuntimeError("rolled back")

    assert totals() == {}


def test_counters_only_go_up():
    with pytest.raises(ValueError, match="only go up"):
        increment({SENT: -1})
    increment({SENT: 0})
    assert not MetricCount.objects.exists()


def test_labels_longer_than_their_columns_are_cut_not_refused():
    increment({Key(counters.EVENTS, esp="x" * 40, label="y" * 40): 1})

    [(key, value)] = totals().items()
    assert (len(key.esp), len(key.label), value) == (16, 32, 1)


def test_count_messages_defaults_to_the_transactional_stream():
    count_messages("queued")
    count_messages("retrying", provider="mailgun", stream="newsletter", n=2)

    assert totals() == {
        Key(counters.MESSAGES, "", "transactional", label="queued"): 1,
        Key(counters.MESSAGES, "mailgun", "newsletter", label="retrying"): 2,
    }


def test_count_sent_reads_provider_stream_and_the_mailed_recipients():
    statuses = [Recipient.Status.SENT, Recipient.Status.SUPPRESSED, Recipient.Status.REJECTED]
    first = make_message(status=Message.Status.SENT, provider="ses", to=["a@example.org", "b@example.org", "c@example.org"])
    for recipient, status in zip(first.recipients.order_by("pk"), statuses, strict=True):
        Recipient.objects.filter(pk=recipient.pk).update(status=status)
    second = make_message(status=Message.Status.SENT, provider="mailgun", stream="newsletter", to=["d@example.org"])

    count_sent([first.pk, second.pk])
    count_sent([])

    assert totals() == {
        Key(counters.MESSAGES, "ses", "transactional", label="sent"): 1,
        Key(counters.RECIPIENTS_SENT, "ses", "transactional"): 2,  # less the suppressed one, as stats.py
        Key(counters.MESSAGES, "mailgun", "newsletter", label="sent"): 1,
        Key(counters.RECIPIENTS_SENT, "mailgun", "newsletter"): 1,
    }


def event(esp: str, event_type: str, raw: dict, *, lag: float | None = 3.0) -> Event:
    received = timezone.now()
    return Event(
        esp=esp, event_id=uuid.uuid4().hex, address="ann@example.org", event_type=event_type,
        timestamp=None if lag is None else received - timedelta(seconds=lag), received_at=received, raw=raw,
    )


def test_count_events_by_type_lag_and_verdict():
    count_events([
        event("amazon_ses", "bounced", {"eventType": "Bounce", "bounce": {"bounceType": "Permanent"}}, lag=0.5),
        event("amazon_ses", "bounced", {"eventType": "Bounce", "bounce": {"bounceType": "Transient"}}, lag=90),
        event("amazon_ses", "complained", {"eventType": "Complaint", "complaint": {"complaintFeedbackType": "abuse"}}),
        event("amazon_ses", "complained", {"eventType": "Complaint", "complaint": {"complaintFeedbackType": "not-spam"}}),
        event("mailgun", "delivered", {"event": "delivered"}, lag=None),
        event("mailgun", "opened", {"event": "opened"}, lag=-20),  # the ESP's clock is ahead
    ])

    counted = totals()
    assert counted[Key(counters.EVENTS, esp="amazon_ses", label="bounced")] == 2
    assert counted[Key(counters.EVENTS, esp="amazon_ses", label="complained")] == 2
    assert counted[Key(counters.HARD_BOUNCES, esp="amazon_ses")] == 1  # the Transient one is soft
    assert counted[Key(counters.COMPLAINTS, esp="amazon_ses")] == 1  # not-spam is no complaint
    assert counted[Key(counters.WEBHOOK_LAG, esp="amazon_ses", label="1")] == 1
    assert counted[Key(counters.WEBHOOK_LAG, esp="amazon_ses", label="300")] == 1
    assert counted[Key(counters.WEBHOOK_LAG, esp="amazon_ses", label="5")] == 2
    assert counted[Key(counters.WEBHOOK_LAG_MS, esp="amazon_ses")] == 500 + 90_000 + 3000 + 3000
    # No timestamp: no lag. A negative lag counts as none.
    assert counted[Key(counters.WEBHOOK_LAG, esp="mailgun", label="1")] == 1
    assert Key(counters.WEBHOOK_LAG_MS, esp="mailgun") not in counted


@pytest.mark.parametrize(
    ("seconds", "bucket"), [(0, "1"), (1, "1"), (1.01, "5"), (86400, "86400"), (86401, "+Inf")]
)
def test_lag_buckets_hold_their_upper_bound(seconds, bucket):
    assert counters.lag_bucket(seconds) == bucket


@pytest.mark.django_db(transaction=True)
def test_concurrent_writers_lose_nothing():
    # Real threads, real connections, each increment in its own transaction.
    def work() -> None:
        try:
            for _ in range(25):
                with transaction.atomic():
                    increment({SENT: 1, Key(counters.RECIPIENTS_SENT, "ses", "transactional"): 2})
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=4) as pool:
        for future in [pool.submit(work) for _ in range(4)]:
            future.result()  # raises what the thread raised

    assert totals() == {SENT: 100, Key(counters.RECIPIENTS_SENT, "ses", "transactional"): 200}
    shards = set(MetricCount.objects.values_list("shard", flat=True))
    assert shards == {0} if connection.vendor == "sqlite" else len(shards) > 1


# Compaction
# ------------------------------------------------------------------------------

TODAY = date(2026, 3, 31)


def rows(*specs: tuple[int, int, int]) -> None:
    """Store SENT rows as (days ago, shard, value)."""
    MetricCount.objects.bulk_create(
        MetricCount(name=SENT.name, provider=SENT.provider, stream=SENT.stream, label=SENT.label,
                    day=TODAY - timedelta(days=ago), shard=shard, value=value)
        for ago, shard, value in specs
    )


def by_day() -> dict[date, int]:
    return dict(MetricCount.objects.values_list("day").annotate(Sum("value")).order_by())


def test_compaction_folds_settled_shards_and_old_days_keeping_every_sum():
    rows((0, 3, 1), (0, 5, 1), (1, 2, 1), (2, 0, 10), (2, 4, 5), (10, 1, 7), (KEEP_DAYS, 0, 100), (KEEP_DAYS + 9, 6, 1))
    rows((400, 0, 0))
    before = by_day()

    removed = counters.compact(today=TODAY)

    after = by_day()
    assert sum(after.values()) == sum(before.values())
    assert after == {
        TODAY: 2, TODAY - timedelta(days=1): 1, TODAY - timedelta(days=2): 15,
        TODAY - timedelta(days=10): 7, BEFORE_WINDOW: 101,
    }
    # Today's and yesterday's rows are left alone: a transaction may still add to them.
    assert set(MetricCount.objects.filter(day__gte=TODAY - timedelta(days=1)).values_list("shard", flat=True)) == {2, 3, 5}
    assert set(MetricCount.objects.filter(day__lt=TODAY - timedelta(days=1)).values_list("shard", flat=True)) == {0}
    assert removed == 5
    assert counters.compact(today=TODAY) == 0


def test_sums_give_the_total_and_the_recent_days():
    rows((0, 3, 1), (6, 0, 2), (7, 0, 4), (KEEP_DAYS + 3, 0, 8))

    assert counters.sums(since=TODAY - timedelta(days=6)) == [(SENT, 15, 3)]
    assert counters.sums(since=TODAY + timedelta(days=1)) == [(SENT, 15, 0)]


def test_compaction_keeps_the_window_and_the_grand_total_apart():
    rows((KEEP_DAYS - 1, 3, 4), (KEEP_DAYS, 3, 2))
    counters.compact(today=TODAY)
    rows((KEEP_DAYS + 1, 0, 1))  # a writer that was late by a month: folded next time
    counters.compact(today=TODAY)

    assert by_day() == {TODAY - timedelta(days=KEEP_DAYS - 1): 4, BEFORE_WINDOW: 3}


def test_utc_today_is_the_utc_date(settings):
    settings.TIME_ZONE = "Pacific/Kiritimati"  # UTC+14: already tomorrow there
    assert counters.utc_today() == datetime.now(UTC).date()
