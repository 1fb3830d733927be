#!/usr/bin/env python
"""Metrics benchmark: one GET /metrics on a million messages, against the naive count.

Run from the project root::

    .venv/bin/python scripts/bench_metrics.py                    # SQLite, and PostgreSQL if it answers
    .venv/bin/python scripts/bench_metrics.py --n 100000 --backends sqlite

For each database it starts a subprocess (``--role run``) on a fresh
database of its own (a SQLite file in a temporary folder; on PostgreSQL a
database ``bench_metrics_<pid>`` on ``--postgres``, dropped at the end),
migrates it and fills it with executemany in chunks:

- N messages (default 1,000,000) over a year: 96.5% sent, 1% failed, 0.5%
  suppressed, 1.2% queued (half of them due), 0.5% retrying, the rest
  sending, cancelled, blocked; providers ses/mailgun/sendgrid 60/30/10;
  streams transactional/notifications/newsletter 80/15/5; priorities
  high/normal/low; bodies (1 KB) only for the last 30 days, as retention
  leaves them;
- recipients for one message in five and events for one in ten (the
  scrape reads neither; they make the tables and the file realistic);
- the counter rows 31 days of such traffic leave (MetricCount), shards of
  today and yesterday included.

Then, in that process, it times (median of ``--repeat`` runs, after a
warm-up):

(a) the baseline, the naive way: ``SELECT status, provider, stream,
    COUNT(*) FROM transactional_message GROUP BY ...``, through the ORM;
(b) the scrape: GET /metrics through Django's test client (the real view,
    token check, every query, prometheus-client's exposition);

and prints both, their ratio, and the query plan (EXPLAIN QUERY PLAN on
SQLite, EXPLAIN on PostgreSQL) of every query the scrape ran and of the
baseline. A scrape query that reads the whole messages table (SQLite
``SCAN transactional_message``, PostgreSQL ``Seq Scan on
transactional_message``) makes the benchmark exit with status 1. It also
times, for comparison, ``operations.oldest_due_seconds()`` (what /healthz
runs: the due messages ordered by due time alone) against the scrape's one
seek per priority. No timing is a pass/fail target: it is a measurement.

Flags:
  --n N               messages (default 1000000)
  --backends LIST     sqlite,postgres (default both; postgres is skipped if it does not answer)
  --postgres URL      server for the PostgreSQL run (default postgres://postgres@127.0.0.1:5432/postgres)
  --repeat R          timed runs of each (default 20)
  --keep              keep the SQLite file and the PostgreSQL database
"""

from __future__ import annotations

import argparse
import json
import os
import random
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TOKEN = secrets.token_urlsafe(32)
CHUNK = 20_000
SEED = 20261202

STATUSES = [
    ("sent", 96.5), ("failed", 1.0), ("suppressed", 0.5), ("queued", 1.2), ("retrying", 0.5),
    ("sending", 0.1), ("cancelled", 0.1), ("blocked", 0.1),
]
PROVIDERS = [("ses", 60), ("mailgun", 30), ("sendgrid", 10)]
STREAMS = [("transactional", 80), ("notifications", 15), ("newsletter", 5)]
ESP_OF = {"ses": "amazon_ses", "mailgun": "mailgun", "sendgrid": "sendgrid"}
EVENT_TYPES = ["delivered", "opened", "clicked", "bounced", "complained", "deferred", "unsubscribed"]


def weighted(choices: list[tuple[str, float]], rng: random.Random, n: int) -> list[str]:
    names, weights = zip(*choices, strict=True)
    return rng.choices(names, weights=weights, k=n)


# ---------------------------------------------------------------------------
# The measuring process (--role run)
# ---------------------------------------------------------------------------


def run(n: int, repeat: int) -> dict:
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection

    started = time.perf_counter()
    call_command("migrate", verbosity=0)
    fill(n)
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("VACUUM ANALYZE")
    else:
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE")
    filled = time.perf_counter() - started
    return {"vendor": connection.vendor, "n": n, "fill_seconds": filled, **measure(repeat)}


def fill(n: int) -> None:
    from django.db import connection, transaction

    from transactional.models import Event, Message, Recipient

    rng = random.Random(SEED)
    now = datetime.now(UTC)
    payload = Message._meta.get_field("payload").get_db_prep_save(
        {"subject": "Your receipt", "body": "x" * 1000, "to": ["customer@example.org"]}, connection
    )

    def when(value: datetime) -> object:
        # SQLite stores naive UTC text; psycopg takes the aware datetime.
        return str(value.replace(tzinfo=None)) if connection.vendor == "sqlite" else value

    def messages(start: int, count: int):
        statuses = weighted(STATUSES, rng, count)
        providers = weighted(PROVIDERS, rng, count)
        streams = weighted(STREAMS, rng, count)
        for offset in range(count):
            pk, status = start + offset, statuses[offset]
            created = now - timedelta(seconds=rng.uniform(0, 365 * 86400))
            waiting = status in ("queued", "retrying")
            if waiting:  # a backlog: half due already, half later (retries, send_at)
                created = now - timedelta(seconds=rng.uniform(0, 3600))
                due = now + timedelta(seconds=rng.uniform(-1800, 1800))
            tried = status not in ("queued", "suppressed", "cancelled")
            yield {
                "id": pk, "status": status, "priority": rng.choice((0, 1, 1, 1, 2)),
                "stream": streams[offset], "provider": providers[offset] if tried else "",
                "message_id": f"<{pk}.bench@acme-corp.com>", "subject": f"Your receipt #{pk}",
                "payload": payload if now - created < timedelta(days=30) else None,
                "attempts": 1 if tried else 0,
                "next_attempt_at": when(due) if waiting else None,
                "claimed_at": when(now) if status == "sending" else None,
                "created_at": when(created), "updated_at": when(created + timedelta(seconds=2)),
                "sent_at": when(created + timedelta(seconds=2)) if status == "sent" else None,
            }

    def recipients(start: int, count: int):
        for pk in range(start, start + count, 5):
            yield {"message_id": pk, "address": f"customer{pk}@example.org", "status": "sent",
                   "esp_message_id": f"<{pk}.bench@acme-corp.com>", "updated_at": when(now)}

    def events(start: int, count: int):
        for pk in range(start, start + count, 10):
            yield {"esp": "amazon_ses", "event_id": f"bench-{pk}", "address": f"customer{pk}@example.org",
                   "event_type": rng.choice(EVENT_TYPES), "esp_message_id": f"<{pk}.bench@acme-corp.com>",
                   "timestamp": when(now), "message_id": pk, "received_at": when(now)}

    inserts = [Inserter(Message, with_id=True), Inserter(Recipient), Inserter(Event)]
    for start in range(1, n + 1, CHUNK):
        count = min(CHUNK, n + 1 - start)
        with transaction.atomic():
            for inserter, rows in zip(inserts, (messages, recipients, events), strict=True):
                inserter.insert(rows(start, count))
        print(f"  filled {start + count - 1:,} / {n:,} messages", end="\r", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    fill_counters(now.date())


class Inserter:
    """executemany INSERTs into a model's table; columns left out get their field's default."""

    def __init__(self, model, *, with_id: bool = False) -> None:
        from django.db import connection

        fields = [f for f in model._meta.concrete_fields if with_id or not f.primary_key]
        self.defaults = {f.column: f.get_db_prep_save(f.get_default(), connection) for f in fields}
        self.columns = [f.column for f in fields]
        quote = connection.ops.quote_name
        self.sql = (
            f"INSERT INTO {quote(model._meta.db_table)} ({', '.join(map(quote, self.columns))}) "
            f"VALUES ({', '.join(['%s'] * len(self.columns))})"
        )

    def insert(self, rows) -> None:
        from django.db import connection

        table = [tuple(row[c] if c in row else self.defaults[c] for c in self.columns) for row in rows]
        with connection.cursor() as cursor:
            cursor.executemany(self.sql, table)


def fill_counters(today) -> None:
    """The MetricCount rows a month of this traffic leaves: shard 0 per day, 8 shards lately."""
    from transactional.metrics import counters
    from transactional.metrics.counters import Key

    rng = random.Random(SEED)
    keys = [
        Key(counters.MESSAGES, provider, stream, label=status)
        for provider, _ in PROVIDERS for stream, _ in STREAMS for status, _ in STATUSES
    ]
    keys += [Key(counters.RECIPIENTS_SENT, provider, stream) for provider, _ in PROVIDERS for stream, _ in STREAMS]
    keys += [Key(counters.EVENTS, esp=esp, label=kind) for esp in ESP_OF.values() for kind in EVENT_TYPES]
    keys += [
        Key(counters.WEBHOOK_LAG, esp=esp, label=bucket)
        for esp in ESP_OF.values() for bucket in [*map(str, counters.LAG_BUCKETS), counters.INFINITY]
    ]
    keys += [Key(name, esp=esp) for esp in ESP_OF.values()
             for name in (counters.WEBHOOK_LAG_MS, counters.HARD_BOUNCES, counters.COMPLAINTS)]
    rows = [(key, counters.BEFORE_WINDOW, 0, rng.randint(1, 10**7)) for key in keys]
    for ago in range(counters.KEEP_DAYS):
        shards = range(counters.SHARDS) if ago < 2 else (0,)
        rows += [(key, today - timedelta(days=ago), shard, rng.randint(1, 10**4))
                 for key in keys for shard in shards]
    counters._upsert(rows)


def measure(repeat: int) -> dict:
    from django.db import connection
    from django.db.models import Count
    from django.test import Client
    from django.utils import timezone

    from transactional import operations
    from transactional.metrics import snapshot
    from transactional.models import Message, MetricCount

    client = Client(SERVER_NAME="localhost")
    token = os.environ["TRANSACTIONAL_METRICS_TOKEN"]  # the parent's

    def scrape() -> None:
        response = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {token}")
        assert response.status_code == 200, response.status_code

    baseline_queryset = Message.objects.values("status", "provider", "stream").annotate(n=Count("pk")).order_by()

    def baseline() -> None:
        list(baseline_queryset.all())  # a fresh query each time, not the cached rows

    now = timezone.now()
    timings = {
        "scrape": timed(scrape, repeat),
        "baseline": timed(baseline, max(3, repeat // 4)),
        "oldest_due_by_due_time": timed(lambda: operations.oldest_due_seconds(now=now), repeat),
        "oldest_due_per_priority": timed(lambda: snapshot.oldest_due_seconds(now), repeat),
    }
    queries: list[tuple[str, tuple]] = []

    def record(execute, sql, params, many, context):
        queries.append((sql, tuple(params or ())))
        return execute(sql, params, many, context)

    with connection.execute_wrapper(record):
        scrape()
    scrape_plans = [(sql, plan(sql, params)) for sql, params in queries]
    baseline_sql, baseline_params = baseline_queryset.query.sql_with_params()
    return {
        "timings": timings,
        "scrape_bytes": len(client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {token}").content),
        "counter_rows": MetricCount.objects.count(),
        "scrape_plans": scrape_plans,
        "baseline_plan": (baseline_sql, plan(baseline_sql, baseline_params)),
    }


def timed(function, repeat: int) -> float:
    function()  # warm-up: caches, connection, the first compaction
    runs = []
    for _ in range(repeat):
        started = time.perf_counter()
        function()
        runs.append(time.perf_counter() - started)
    return statistics.median(runs)


def plan(sql: str, params: tuple) -> list[str]:
    from django.db import connection

    with connection.cursor() as cursor:
        if connection.vendor == "sqlite":
            cursor.execute(f"EXPLAIN QUERY PLAN {sql}", params)
            return [row[-1] for row in cursor.fetchall()]
        cursor.execute(f"EXPLAIN {sql}", params)
        return [row[0] for row in cursor.fetchall()]


# ---------------------------------------------------------------------------
# The orchestrating process
# ---------------------------------------------------------------------------


def scans_messages(lines: list[str]) -> bool:
    """Whether a plan reads the whole messages table (or the whole of one of its indexes)."""
    for line in lines:
        words = line.replace('"', "").split()
        for i, word in enumerate(words[:-1]):
            if word == "SCAN" and words[i + 1] == "transactional_message":
                return True  # SQLite: SCAN t, or SCAN t USING [COVERING] INDEX (every entry)
        if "Seq Scan on transactional_message " in line.replace('"', "") + " ":
            return True
    return False


def report(result: dict) -> bool:
    t = result["timings"]
    print(f"\n== {result['vendor']}: {result['n']:,} messages (filled in {result['fill_seconds']:.0f} s), "
          f"{result['counter_rows']:,} counter rows, exposition {result['scrape_bytes']:,} bytes")
    print(f"baseline  COUNT(*) GROUP BY status, provider, stream over Message: {t['baseline'] * 1000:9.2f} ms")
    print(f"scrape    GET /metrics (every metric, token check, exposition):    {t['scrape'] * 1000:9.2f} ms")
    print(f"ratio     baseline / scrape: {t['baseline'] / t['scrape']:.1f}x (the scrape is that much cheaper)")
    print(f"oldest due: by due time alone (operations.oldest_due_seconds) {t['oldest_due_by_due_time'] * 1000:.3f} ms, "
          f"one seek per priority (metrics) {t['oldest_due_per_priority'] * 1000:.3f} ms")
    ok = True
    print("\nQuery plans of the scrape:")
    for number, (sql, lines) in enumerate(result["scrape_plans"], start=1):
        scan = scans_messages(lines)
        ok &= not scan
        verdict = "FULL SCAN OF MESSAGES" if scan else "ok"
        print(f"  [{number}] {verdict}: {sql[:160]}{'…' if len(sql) > 160 else ''}")
        for line in lines:
            print(f"        {line}")
    sql, lines = result["baseline_plan"]
    print(f"\nQuery plan of the baseline ({'a full scan, as expected' if scans_messages(lines) else 'no full scan?'}):")
    print(f"  {sql[:160]}")
    for line in lines:
        print(f"        {line}")
    return ok


def postgres_database(server: str, name: str, *, create: bool) -> bool:
    import psycopg

    try:
        with psycopg.connect(server, autocommit=True, connect_timeout=3) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
            if create:
                conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.OperationalError as error:
        print(f"PostgreSQL at {server} does not answer ({type(error).__name__}): skipped", file=sys.stderr)
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument("--postgres", default="postgres://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--role", choices=["run"], help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.role == "run":
        Path(args.result).write_text(json.dumps(run(args.n, args.repeat)))
        return 0

    ok = True
    tmp = tempfile.mkdtemp(prefix="bench-metrics-")
    try:
        for backend in args.backends.split(","):
            if backend == "sqlite":
                url = f"sqlite:///{tmp}/bench.sqlite3"
            elif backend == "postgres":
                name = f"bench_metrics_{os.getpid()}"
                if not postgres_database(args.postgres, name, create=True):
                    continue
                url = args.postgres.rsplit("/", 1)[0] + f"/{name}"
            else:
                parser.error(f"unknown backend {backend!r}")
            result_file = Path(tmp) / f"{backend}.json"
            env = {**os.environ, "DJANGO_SETTINGS_MODULE": "settings.test", "DATABASE_URL": url,
                   "TRANSACTIONAL_METRICS_TOKEN": TOKEN, "PYTHONPATH": str(ROOT)}
            print(f"Filling {backend} with {args.n:,} messages…", file=sys.stderr)
            try:
                subprocess.run(
                    [sys.executable, __file__, "--role", "run", "--n", str(args.n), "--repeat", str(args.repeat),
                     "--result", str(result_file)],
                    env=env, cwd=ROOT, check=True,
                )
                ok &= report(json.loads(result_file.read_text()))
            finally:
                if backend == "postgres" and not args.keep:
                    postgres_database(args.postgres, name, create=False)
    finally:
        if args.keep:
            print(f"\nKept {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp)
    print("\nno scrape query reads the whole messages table" if ok else "\nFAIL: a scrape query scans Message")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
