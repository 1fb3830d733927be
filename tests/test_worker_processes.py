"""Real worker processes against a real database and a loopback fake ESP.

These tests start `manage.py` in other processes, which cannot see the test
database of the pytest process, so each builds its own database: a SQLite
file, PostgreSQL (the local server), and RQ on the local Redis.
"""

import contextlib
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import TEST_REDIS_URL
from transactional.testing.fake_mailgun import running_fake_mailgun

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
POSTGRES = os.environ.get("TEST_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/postgres")

ENQUEUE = """
from django.core.mail import send_mail
for i in range({n}):
    send_mail(f"Order {{i}}", "Thanks", "shop@acme-corp.com", [f"user{{i}}@example.org"])
"""
REPORT = """
import json
from transactional.models import Message, Attempt
print(json.dumps({
    "statuses": sorted(set(Message.objects.values_list("status", flat=True))),
    "sent": Message.objects.filter(status="sent").count(),
    "attempts": Attempt.objects.count(),
}))
"""


def manage(*args: str, environ: dict[str, str], timeout: float = 120) -> str:
    result = subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=environ,
        capture_output=True, text=True, timeout=timeout,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def migrate(env: dict[str, str], *, queued: int = 0) -> None:
    """Migrate the database of ``env``, then queue ``queued`` messages through the outbox."""
    manage("migrate", "--no-input", "-v0", environ=env)
    if queued:
        manage("shell", "-c", ENQUEUE.format(n=queued), environ=env)


def report(env: dict[str, str]) -> dict:
    """Return the messages' statuses, how many were sent and how many attempts were made."""
    return json.loads(manage("shell", "-c", REPORT, environ=env).strip().splitlines()[-1])


def environment(database_url: str, esp_url: str, **extra: str) -> dict[str, str]:
    return {
        "PATH": os.environ["PATH"],
        "DJANGO_SETTINGS_MODULE": "settings.dev",
        "DATABASE_URL": database_url,
        "EMAIL_PROVIDER": "mailgun",
        "MAILGUN_API_KEY": "key-test",
        "MAILGUN_SENDER_DOMAIN": "mg.acme-corp.com",
        "MAILGUN_API_URL": esp_url,
        "TASKS_BACKEND": "db",
        "LOG_LEVEL": "warning",
        **extra,
    }


@pytest.fixture
def sqlite_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'outbox.sqlite3'}"


@pytest.fixture
def postgres_url() -> Iterator[str]:
    psycopg = pytest.importorskip("psycopg")
    name = f"transactional_procs_{uuid.uuid4().hex[:8]}"
    try:
        admin = psycopg.connect(POSTGRES, autocommit=True)
    except psycopg.OperationalError as error:
        pytest.skip(f"PostgreSQL is not reachable at {POSTGRES}: {error}")
    admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield POSTGRES.rsplit("/", 1)[0] + "/" + name
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


DB_WORKER = [sys.executable, "manage.py", "delivery_worker", "--batch", "--interval", "0",
             "--no-startup-delay", "--no-reload", "-v0"]
RQ_WORKER = [sys.executable, "manage.py", "rqworker", "default", "--burst", "--with-scheduler",
             "--job-class", "django_tasks_rq.backend.Job"]


def run_workers(command: list[str], count: int, environ: dict[str, str]) -> None:
    """Run ``count`` worker processes side by side until they exit; fail unless all succeed."""
    workers = [subprocess.Popen(command, cwd=ROOT, env=environ, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True) for _ in range(count)]
    outputs = [w.communicate(timeout=180)[0] for w in workers]
    assert [w.returncode for w in workers] == [0] * count, outputs


@pytest.mark.parametrize("database", ["sqlite_url", "postgres_url"])
def test_two_worker_processes_deliver_each_message_exactly_once(database, request):
    database_url = request.getfixturevalue(database)
    with running_fake_mailgun(latency=0.005, api_key="key-test") as esp:
        env = environment(database_url, esp.base_url, TRANSACTIONAL_BATCH_SIZE="25")
        migrate(env, queued=500)

        run_workers(DB_WORKER, 2, env)

        assert esp.count == 500
        assert esp.duplicates() == {}
    assert report(env) == {"statuses": ["sent"], "sent": 500, "attempts": 500}


def test_an_rq_worker_delivers_through_redis(sqlite_url, test_redis):
    with running_fake_mailgun(api_key="key-test") as esp:
        env = environment(sqlite_url, esp.base_url, TASKS_BACKEND="rq", REDIS_URL=TEST_REDIS_URL)
        migrate(env, queued=1)
        assert esp.count == 0  # stored and queued in Redis, not sent yet

        manage(*RQ_WORKER[2:], environ=env)

        assert [m.subject for m in esp.messages] == ["Order 0"]
    assert report(env) == {"statuses": ["sent"], "sent": 1, "attempts": 1}


def most_in_one_second(times: list[float]) -> int:
    """Return the most arrivals within any one-second window."""
    times = sorted(times)
    most, start = 0, 0
    for end, arrived in enumerate(times):
        while arrived - times[start] >= 1.0:
            start += 1
        most = max(most, end - start + 1)
    return most


def test_most_in_one_second_counts_a_sliding_window():
    assert most_in_one_second([0.0, 0.5, 0.99, 1.0, 1.5]) == 3
    assert most_in_one_second([]) == 0


@contextlib.contextmanager
def fake_mailgun_process(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """Run the fake Mailgun in a process of its own; yield its URL and its record file.

    Its arrival times are the measurement: in this (large, long-lived)
    process, a garbage collection would stamp requests that came spaced out
    as if they came together.
    """
    tmp_path.mkdir(parents=True, exist_ok=True)
    record = tmp_path / "arrivals.jsonl"
    server = subprocess.Popen(
        [sys.executable, "-m", "transactional.testing.fake_mailgun", "--api-key", "key-test",
         "--record-file", str(record)],
        cwd=ROOT, stdout=subprocess.PIPE, text=True,
    )
    try:
        url = server.stdout.readline().split("listening on ", 1)[1].strip()
        yield url, record
    finally:
        server.terminate()
        server.wait(timeout=10)


def arrivals(record: Path) -> list[dict]:
    return [json.loads(line) for line in record.read_text().splitlines()]


def busiest_seconds(run, *, limit: int, runs: int = 3) -> list[int]:
    """Call ``run(n)`` (it returns arrival times) until a run keeps to ``limit`` in every second.

    At most ``runs`` times; returns each run's busiest second. On a 2-core
    machine (CI's), a stall of the whole machine between a sender's slot
    check and its socket write can put a request more than the 3% margin
    late, into the next call's second (measured there: 4 runs in 38 saw 21
    in one second). A broken shared clock exceeds the limit in every run
    (two workers: about twice the rate), a stall only now and then, so a
    run over the limit is repeated.
    """
    busiest = []
    for n in range(runs):
        busiest.append(most_in_one_second(run(n)))
        if busiest[-1] <= limit:
            break
    return busiest


def test_busiest_seconds_repeats_a_run_over_the_limit_only():
    bunched, spaced = [0.0, 0.1, 0.2], [0.0, 0.6, 1.2]
    runs = iter([bunched, spaced, bunched])
    assert busiest_seconds(lambda n: next(runs), limit=2) == [3, 2]
    assert busiest_seconds(lambda n: bunched, limit=2) == [3, 3, 3]


@pytest.mark.parametrize("database", ["sqlite_url", "postgres_url"])
def test_two_worker_processes_never_exceed_the_shared_rate_limit(database, request, tmp_path):
    database_url = request.getfixturevalue(database)

    def run(n: int) -> list[float]:
        with fake_mailgun_process(tmp_path / f"run{n}") as (url, record):
            env = environment(database_url, url, TRANSACTIONAL_RATE_LIMITS="mailgun=20/s")
            migrate(env, queued=90)

            run_workers(DB_WORKER, 2, env)

            received = arrivals(record)
        assert len(received) == 90
        assert len({r["message_id"] for r in received}) == 90  # each once
        return [r["time"] for r in received]

    busiest = busiest_seconds(run, limit=20)
    assert busiest[-1] <= 20, f"most requests in one second, per run: {busiest}"
    sent = 90 * len(busiest)
    assert report(environment(database_url, "http://127.0.0.1:9")) == {
        "statuses": ["sent"], "sent": sent, "attempts": sent,
    }


def test_two_rq_workers_share_the_rate_limit_through_redis(sqlite_url, test_redis, tmp_path):
    # RQ forks a work horse per job: more for a stall to hit (busiest_seconds).
    def run(n: int) -> list[float]:
        test_redis.flushdb()
        with fake_mailgun_process(tmp_path / f"run{n}") as (url, record):
            env = environment(
                f"{sqlite_url}-{n}", url, TASKS_BACKEND="rq", REDIS_URL=TEST_REDIS_URL,
                TRANSACTIONAL_RATE_LIMITS="mailgun=20/s", TRANSACTIONAL_BATCH_SIZE="10",
            )
            migrate(env, queued=60)

            run_workers(RQ_WORKER, 2, env)

            received = arrivals(record)
        assert len(received) == 60
        assert len({r["message_id"] for r in received}) == 60
        assert test_redis.exists("transactional:rate:mailgun")  # the clock lived in Redis
        return [r["time"] for r in received]

    busiest = busiest_seconds(run, limit=20)
    assert busiest[-1] <= 20, f"most requests in one second, per run: {busiest}"
