"""Counters shared by every process, kept in the database as MetricCount rows.

Web processes, delivery workers on other machines and webhook requests all
add to the same counters, each inside its own transaction: a rolled-back
send counts nothing, and no count is lost when a process restarts. Process
memory could do neither, and every gunicorn worker would report its own.

``increment()`` adds any number of counts with one statement,
``INSERT … ON CONFLICT DO UPDATE SET value = value + excluded.value``, on
SQLite and PostgreSQL alike. The ``count_*`` helpers build the counts that
each place of the code has at hand: one call per delivery batch, per
finished message, per stored message, per webhook post.

On PostgreSQL an upsert locks its row until the caller commits. Each writer
thread therefore adds to a shard of its own (its thread id modulo
``SHARDS``), so concurrent workers seldom wait for each other, and a
transaction only ever locks rows of one shard, in key order. On SQLite the
write lock is database-wide anyway: one shard.

Rows are per UTC day, for the rates over recent days. ``compact()`` folds
the rows of settled days (two days old) into shard 0, and the days before
``KEEP_DAYS`` into one row per counter, so the table stays a few hundred
rows however much mail goes out. The metrics endpoint runs it as it reads.
"""

import threading
from collections import Counter
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, timedelta

from django.db import connection, transaction
from django.db.models import Count, Q, Sum
from django.utils import timezone

from .. import stats
from ..models import DEFAULT_STREAM, Event, MetricCount, Recipient

#: Rows a writer thread may add to, on PostgreSQL.
SHARDS = 8
#: Days (today included) whose daily rows are kept: the longest rate window.
KEEP_DAYS = 31
#: The ``day`` of the rows that sum up every day before ``KEEP_DAYS``.
BEFORE_WINDOW = date(1970, 1, 1)
#: ``pg_try_advisory_xact_lock`` key: one compaction at a time.
COMPACT_LOCK = 0x7472_6D63  # "trmc"
#: Rows per upsert statement: 8 parameters each, under SQLite's 32,766.
UPSERT_CHUNK = 1000

# Counter names (MetricCount.name) and what their labels hold.
#: Messages that entered a status (label): queued (stored), sent, retrying, failed, ...
MESSAGES = "messages"
#: Recipients of sent messages, less those the outbox skipped (suppressed, staging).
RECIPIENTS_SENT = "recipients_sent"
#: ESP events recorded (duplicates not), by ESP and event type (label).
EVENTS = "events"
#: Hard bounces and complaints, as the delivery stats page counts them (stats.py).
HARD_BOUNCES = "hard_bounces"
COMPLAINTS = "complaints"
#: Events by how long after the ESP's timestamp we received them (label: bucket).
WEBHOOK_LAG = "webhook_lag"
#: The sum of those lags, in milliseconds.
WEBHOOK_LAG_MS = "webhook_lag_ms"

#: Upper bounds (seconds) of the webhook lag buckets; above the last: "+Inf".
LAG_BUCKETS = (1, 5, 15, 60, 300, 900, 3600, 14400, 86400)
INFINITY = "+Inf"

#: Recipient statuses that were never mailed: the same exclusions as stats.py.
NOT_MAILED = (Recipient.Status.SUPPRESSED, Recipient.Status.REDIRECTED, Recipient.Status.BLOCKED)
#: stats.py's verdicts -> the counters they go to.
VERDICT_COUNTERS = {"bounced": HARD_BOUNCES, "complained": COMPLAINTS}


@dataclass(frozen=True, order=True)
class Key:
    """A counter: its name and labels (empty when they do not apply)."""

    name: str
    provider: str = ""
    stream: str = ""
    esp: str = ""
    label: str = ""


LABELS = ("name", "provider", "stream", "esp", "label")
#: Column -> max_length: a label longer than its column would fail the caller's write.
LENGTHS = {name: MetricCount._meta.get_field(name).max_length for name in LABELS}


def utc_today() -> date:
    return timezone.now().astimezone(UTC).date()


def increment(counts: Mapping[Key, int] | Iterable[tuple[Key, int]]) -> None:
    """Add each count to its counter for today, in one statement of the caller's transaction."""
    totals: Counter[Key] = Counter()
    for key, n in counts.items() if isinstance(counts, Mapping) else counts:
        if n < 0:
            raise ValueError(f"Counters only go up; {key} got {n}.")
        if n:
            totals[_clip(key)] += n
    if totals:
        day, shard = utc_today(), _shard()
        _upsert([(key, day, shard, n) for key, n in sorted(totals.items())])


def count_messages(status: str, *, provider: str = "", stream: str = DEFAULT_STREAM, n: int = 1) -> None:
    """Count ``n`` messages that entered ``status`` (queued when stored, retrying, failed, ...)."""
    increment({Key(MESSAGES, provider, stream, label=status): n})


def count_sent(message_ids: Collection[int]) -> None:
    """Count these messages as sent, with their recipients, by provider and stream.

    Call it after storing the results, in the same transaction: it reads the
    provider that sent each message from its row.
    """
    if not message_ids:
        return
    rows = (
        Recipient.objects.filter(message_id__in=message_ids)
        .values_list("message__provider", "message__stream")
        .annotate(
            messages=Count("message_id", distinct=True),
            recipients=Count("pk", filter=~Q(status__in=NOT_MAILED)),
        )
        .order_by()
    )
    counts: Counter[Key] = Counter()
    for provider, stream, messages, recipients in rows:
        counts[Key(MESSAGES, provider, stream, label="sent")] += messages
        counts[Key(RECIPIENTS_SENT, provider, stream)] += recipients
    increment(counts)


def count_events(rows: Iterable[Event]) -> None:
    """Count newly recorded ESP events: by type, by lag, and the hard bounces and complaints."""
    increment(event_counts(rows))


def event_counts(rows: Iterable[Event]) -> Counter[Key]:
    """Return what ``count_events()`` adds for ``rows``, without writing it.

    The webhook recorder works it out before its transaction opens (on
    SQLite, before it takes the database's write lock).
    """
    counts: Counter[Key] = Counter()
    for row in rows:
        counts[Key(EVENTS, esp=row.esp, label=row.event_type)] += 1
        if row.timestamp is not None:
            lag = max(0.0, (row.received_at - row.timestamp).total_seconds())
            counts[Key(WEBHOOK_LAG, esp=row.esp, label=lag_bucket(lag))] += 1
            counts[Key(WEBHOOK_LAG_MS, esp=row.esp)] += round(lag * 1000)
        if row.event_type in stats.CLASSIFIED:
            # The stats page's definition of a hard bounce and a complaint, so both agree.
            counter = VERDICT_COUNTERS.get(stats._verdict(row.esp, row.event_type, row.raw))
            if counter:
                counts[Key(counter, esp=row.esp)] += 1
    return counts


def lag_bucket(seconds: float) -> str:
    """Return the label of the smallest lag bucket that holds ``seconds``."""
    return next((str(bound) for bound in LAG_BUCKETS if seconds <= bound), INFINITY)


# Reading and compacting
# ------------------------------------------------------------------------------


def sums(*, since: date) -> list[tuple[Key, int, int]]:
    """Return every counter's total, and its sum over the days from ``since`` on."""
    rows = (
        MetricCount.objects.values_list(*LABELS)
        .annotate(total=Sum("value"), recent=Sum("value", filter=Q(day__gte=since)))
        .order_by()
    )
    return [(Key(*row[:5]), row[5], row[6] or 0) for row in rows]


def compact(*, today: date | None = None) -> int:
    """Fold the rows of settled days into fewer; return how many rows went.

    A day is settled two days on: no transaction that read the clock on it
    is still adding to it, so folding never waits for, or races, a writer.
    """
    today = today or utc_today()
    oldest_kept = today - timedelta(days=KEEP_DAYS - 1)  # the longest rate window's first day
    foldable = MetricCount.objects.filter(day__lte=today - timedelta(days=2)).filter(
        Q(shard__gt=0) | Q(day__lt=oldest_kept, day__gt=BEFORE_WINDOW)
    )
    if not foldable.exists():
        return 0
    with transaction.atomic():
        if connection.vendor == "postgresql" and not _lock_compaction():
            return 0  # another process is folding the same rows
        folded: Counter[tuple[Key, date]] = Counter()
        for *labels, day, value in foldable.values_list(*LABELS, "day", "value"):
            folded[Key(*labels), BEFORE_WINDOW if day < oldest_kept else day] += value
        removed, _ = foldable.delete()
        _upsert([(key, day, 0, value) for (key, day), value in sorted(folded.items())])
    return removed


# SQL
# ------------------------------------------------------------------------------


def _upsert(rows: list[tuple[Key, date, int, int]]) -> None:
    """Add each row's value to its (key, day, shard) row, creating the rows that are missing."""
    for start in range(0, len(rows), UPSERT_CHUNK):
        chunk = rows[start : start + UPSERT_CHUNK]
        params = []
        for key, day, shard, value in chunk:
            params += [key.name, key.provider, key.stream, key.esp, key.label]
            params += [connection.ops.adapt_datefield_value(day), shard, value]
        with connection.cursor() as cursor:
            cursor.execute(_upsert_sql(len(chunk)), params)


def _upsert_sql(rows: int) -> str:
    quote = connection.ops.quote_name
    table, value = quote(MetricCount._meta.db_table), quote("value")
    columns = [*LABELS, "day", "shard", "value"]
    one = f"({', '.join(['%s'] * len(columns))})"
    return (
        f"INSERT INTO {table} ({', '.join(map(quote, columns))}) VALUES {', '.join([one] * rows)} "
        f"ON CONFLICT ({', '.join(map(quote, columns[:-1]))}) "
        f"DO UPDATE SET {value} = {table}.{value} + EXCLUDED.{value}"
    )


def _clip(key: Key) -> Key:
    return Key(*(getattr(key, name)[: LENGTHS[name]] for name in LABELS))


def _shard() -> int:
    # Thread ids are unique across the machine's live threads (a process's
    # main thread id is its pid), so concurrent writers mostly differ.
    return 0 if connection.vendor == "sqlite" else threading.get_native_id() % SHARDS


def _lock_compaction() -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_xact_lock(%s)", [COMPACT_LOCK])
        return bool(cursor.fetchone()[0])
