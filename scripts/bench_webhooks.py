#!/usr/bin/env python
"""Tracking-webhook benchmark: our recorder against two reference receivers, under gunicorn.

Run from the project root::

    .venv/bin/python scripts/bench_webhooks.py
    .venv/bin/python scripts/bench_webhooks.py --sendgrid-batches 20 --batch-size 1000 \\
        --mailgun-events 2000 --concurrency 4

What runs
---------
The site runs under a real server, ``gunicorn project.wsgi -w 2`` on a free
loopback port, with ``settings.prod`` and a complete fake production
environment (EMAIL_PROVIDER=mailgun, ANYMAIL_WEBHOOK_SECRET,
MAILGUN_WEBHOOK_SIGNING_KEY, a SendGrid ECDSA verification key generated with
transactional.testing.webhooks, SECURE_SSL_REDIRECT=false for loopback HTTP,
DEBUG off, LOG_LEVEL info). Three variants are measured in the same run, one
gunicorn each, each on its own copy of the same migrated and seeded SQLite
file (``DATABASE_URL``; WAL, synchronous=NORMAL and BEGIN IMMEDIATE as
settings/base.py configures them; CONN_MAX_AGE 60, the persistent connections
settings.prod keeps for SQLite as for PostgreSQL). All three get the same
database settings: the script reads DATABASES from each variant's settings
module before the run, prints them and stops if they differ:

ours   The project as it is: our hardened views (transactional/webhooks/:
       basic auth, ESP signature, Mailgun timestamp window, per-event
       validation) and our recorder (transactional/events.py: deduplication,
       linking to Message/Recipient, recipient status, suppression), the whole
       post in one transaction with ``events.batch()``.
no-op  django-anymail's PLAIN tracking views at the same paths (basic auth,
       ESP signature, parsing; no transaction) with our receiver disconnected
       and a receiver that does nothing: the cost of HTTP, Django and anymail
       alone, the ceiling for any receiver.
naive  The same plain views with one ``Event.objects.get_or_create()`` per
       event in autocommit (no linking, status or suppression): the first
       thing anyone would write.

The reference variants run ``settings.prod`` unchanged except ROOT_URLCONF,
through a settings module generated in the temporary directory; the
urlconf, and the receivers it swaps in, are scripts/bench_webhooks_receivers.py
(each worker reports its connected receivers, and the script checks that
ours is gone). Note that "ours / naive" therefore also includes the cost of
our views' extra checks: that is intended, ours does more per event.

The load
--------
Each database starts with 2 x --messages sent messages (one recipient each,
``customer<i>@example.org``), half "sent" via SendGrid and half via Mailgun,
with the ESP message ids the events refer to, so our recorder really links
every event and updates statuses.

- SendGrid: --sendgrid-batches JSON batches of --batch-size events, each with
  a unique ``sg_event_id``, a mix of delivered (45%), open (30%), click (20%)
  and hard bounce (5%) on random seeded messages; every batch is signed with
  the generated ECDSA key (X-Twilio-Email-Event-Webhook-* headers) and
  carries basic auth. The same batches are posted to each variant.
- Mailgun: --mailgun-events single JSON events, the same mix, each with a
  unique signature token (anymail's event id), HMAC-signed just before it is
  posted (our window is 12 h), with basic auth.

Everything is built (and signed) before its clock starts. --concurrency client
threads (default 4; a plain http.client connection each, as gunicorn's sync
workers close after every response) post the requests; wall time from the
first request to the last response gives events/s. The client runs on the
same machine: its CPU time is printed beside the servers'.

Interleaving: a small VM's speed drifts by tens of percent within a minute,
which would skew ratios between variants measured one after the other. So
the three servers run side by side (an idle one costs nothing) and each
phase is split into --rounds rounds (default 4): each round posts the next
slice of the payloads to every variant in turn, rotating which goes first.
A variant's events/s is its events over its summed round times. Before the
rounds a short warm-up (4 small SendGrid batches and 8 Mailgun events, also
counted in the row check) imports everything in both workers of each server.

Checks
------
Every response must be 2xx. Once the servers have stopped, each database is
read directly: ours and naive must hold exactly one Event row per event
posted, no-op none (so a fast but wrong variant cannot win); for ours the
linked events, recipient statuses and suppressions are printed too. A failed
request or a wrong row count makes the script exit with status 1. Missed
targets are reported as FAIL but exit 0 (it is a measurement) unless
--strict is given (then exit 2).

The script samples the CPUs for a second before the rounds (nothing of its
own runs then) and, during every round, compares the machine's busy time
with the servers' and its own; it warns when other processes take more than
20% of the CPUs, since a concurrent job on a small box skews the figures.

Targets: SendGrid batches: ours >= 10 x naive and >= 5,000 events/s;
Mailgun single events: ours >= 1.0 x naive.

Why settings.prod measured slower than settings.dev
---------------------------------------------------
It was never DEBUG, logging, the middleware (SecurityMiddleware, whitenoise:
about 3% of a request together) or the checks (basic auth, signatures: the
reference views run them too). It was the database connection. Until
settings.prod kept connections (CONN_MAX_AGE 60), every request opened a
fresh SQLite connection (connect, PRAGMAs, the schema read again) and closed
it; and when the last connection to a WAL database closes, SQLite
checkpoints the WAL into the database file and deletes it, for the next
request to create again. ``scripts/run`` never showed it: its delivery
worker holds a connection open the whole time, so the WAL survives between
requests, and a single developer's clicks hide the rest. Under load the
connection per request cost single Mailgun events over a quarter of their
rate (2026-12-03, 2 CPUs: 745 events/s with --conn-max-age 0, 769 with
--hold-connection as well, 1,023 with settings.prod's 60 s). The ratio to
the naive receiver moved the other way (1.44x, 0.98x, 1.2x): a connection
held open helps its one commit per event more than our one per post.
Two flags reproduce it, applied to all three variants alike:
``--conn-max-age 0`` (a connection per request, as before) and
``--hold-connection`` (one more connection held open on each database, as
scripts/run's worker does). docs/webhooks.md, "Throughput", has the figures.

Flags:
  --sendgrid-batches N   SendGrid batches per variant (default 20)
  --batch-size N         events per SendGrid batch (default 1000)
  --mailgun-events N     single Mailgun events per variant (default 2000)
  --concurrency C        client threads (default 4)
  --workers W            gunicorn workers per server (default 2, as specified)
  --rounds R             interleaved rounds per phase (default 4; 1 = each
                         variant's phase in one go)
  --messages M           seeded messages per ESP (default 1000)
  --variants LIST        comma-separated subset of ours,noop,naive (ratios
                         and targets need all three)
  --conn-max-age S       CONN_MAX_AGE for every variant (default: settings.prod's
                         60; 0 = a connection per request, as settings.prod had)
  --hold-connection      hold one more SQLite connection open on each database
                         during the run, as scripts/run's delivery worker does
  --strict               exit 2 when a target is missed
  --keep                 keep the temporary directory (databases, server logs)
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import secrets
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = ROOT / "scripts"

WEBHOOK_SECRET = "bench:bench-webhook-password"
MAILGUN_SIGNING_KEY = "bench-mailgun-webhook-signing-key-0123456789"
SENDER_DOMAIN = "mg.acme-corp.com"
FROM = "Acme Shop <orders@acme-corp.com>"
SENDGRID_PATH = "/anymail/sendgrid/tracking/"
MAILGUN_PATH = "/anymail/mailgun/tracking/"
OUR_RECEIVER_UID = "transactional.receivers.record_tracking_event"

#: Event kinds (transactional/testing/payloads/<esp>/<kind>.json) and their weights.
MIX = {"delivered": 45, "open": 30, "click": 20, "hard_bounce": 5}
VARIANTS = ("ours", "noop", "naive")
LABELS = {"ours": "ours", "noop": "no-op", "naive": "naive"}
ESP_LABELS = {"sendgrid": "SendGrid", "mailgun": "Mailgun"}
WARMUP_SENDGRID_BATCHES, WARMUP_SENDGRID_SIZE, WARMUP_MAILGUN = 4, 25, 8
#: Share of the CPUs used by other processes (before or during the rounds) that earns a warning.
BUSY_WARNING = 0.2


class BenchError(RuntimeError):
    """A request failed, a server did not start or the rows are wrong: exit 1."""


def address(i: int) -> str:
    return f"customer{i}@example.org"


def esp_message_id(esp: str, i: int) -> str:
    """The ESP message id stored on seeded recipient ``i`` (anymail's form for each ESP)."""
    if esp == "sendgrid":
        return f"bench-sendgrid-{i:06d}-5f0b3d2e-8c1a-4e6f-9b7d"  # anymail_id custom arg
    return f"<bench-mailgun-{i:06d}@{SENDER_DOMAIN}>"  # Mailgun's Message-Id, in angle brackets


# ---------------------------------------------------------------------------
# Role run in a subprocess: migrate and seed the template database
# ---------------------------------------------------------------------------

def role_seed(messages: int) -> None:
    """Migrate the database of DATABASE_URL and store the sent messages events refer to."""
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection
    from django.utils import timezone

    from transactional.models import Message, Recipient

    call_command("migrate", verbosity=0, interactive=False)
    now = timezone.now()
    rows = []
    for esp in ("sendgrid", "mailgun"):
        for i in range(messages):
            rows.append((esp, i, Message(
                status=Message.Status.SENT, provider=esp, from_email=FROM,
                subject=f"Your Acme Shop receipt #{100000 + i}",
                message_id=f"<bench-{esp}-{i}@acme-corp.com>", attempts=1, sent_at=now,
            )))
    Message.objects.bulk_create([message for _, _, message in rows], batch_size=500)
    Recipient.objects.bulk_create(
        [
            Recipient(message=message, address=address(i), kind=Recipient.Kind.TO,
                      status=Recipient.Status.SENT, esp_message_id=esp_message_id(esp, i))
            for esp, i, message in rows
        ],
        batch_size=500,
    )
    with connection.cursor() as cursor:
        cursor.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    connection.close()
    print(json.dumps({"messages": len(rows)}))


def role_db_settings() -> None:
    """Print the database settings of DJANGO_SETTINGS_MODULE, less the file name, as JSON."""
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.conf import settings

    database = {key: value for key, value in settings.DATABASES["default"].items() if key != "NAME"}
    print(json.dumps(database, default=str, sort_keys=True))


# ---------------------------------------------------------------------------
# Payloads (built and signed before any clock starts)
# ---------------------------------------------------------------------------

@dataclass
class Post:
    body: bytes
    headers: dict[str, str]
    events: int


def _kinds(rng: random.Random, count: int) -> list[str]:
    return rng.choices(list(MIX), weights=list(MIX.values()), k=count)


def sendgrid_posts(
    kit, keys, rng: random.Random, batches: int, size: int, messages: int
) -> list[Post]:
    """Return signed SendGrid batches of unique events on the seeded messages."""
    now = int(time.time())
    posts = []
    for _ in range(batches):
        events = []
        for kind in _kinds(rng, size):
            i = rng.randrange(messages)
            events.append(kit.sendgrid_event(
                kind, message_id=esp_message_id("sendgrid", i), recipient=address(i),
                timestamp=now - rng.randrange(3600),
            ))
        body = json.dumps(events).encode()
        headers = {
            "Content-Type": "application/json",
            "Authorization": kit.basic_auth(WEBHOOK_SECRET),
            **kit.sendgrid_signed(body, keys.private_key),
        }
        posts.append(Post(body, headers, len(events)))
    return posts


def mailgun_events(kit, rng: random.Random, count: int, messages: int) -> list[dict]:
    """Return unsigned Mailgun events on the seeded messages (sign with ``mailgun_posts``)."""
    now = time.time()
    events = []
    for kind in _kinds(rng, count):
        i = rng.randrange(messages)
        events.append(kit.mailgun_event(
            kind, message_id=esp_message_id("mailgun", i), recipient=address(i),
            timestamp=now - rng.randrange(3600),
        ))
    return events


def mailgun_posts(kit, events: list[dict]) -> list[Post]:
    """Sign each event now, with a fresh token (its event id) and timestamp."""
    auth = kit.basic_auth(WEBHOOK_SECRET)
    sign = kit.mailgun_signed
    return [
        Post(
            json.dumps(sign(event, MAILGUN_SIGNING_KEY, token=secrets.token_hex(25))).encode(),
            {"Content-Type": "application/json", "Authorization": auth},
            1,
        )
        for event in events
    ]


# ---------------------------------------------------------------------------
# Load generator
# ---------------------------------------------------------------------------

@dataclass
class PhaseResult:
    events: int = 0
    requests: int = 0
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    server_cpu: float | None = None
    client_cpu: float = 0.0
    #: CPU seconds the rest of the machine used meanwhile (another job, the kernel's softirqs).
    other_cpu: float | None = None

    @property
    def other_share(self) -> float:
        """The share of all CPUs that other processes used during the phase."""
        if self.other_cpu is None or not self.seconds:
            return 0.0
        return self.other_cpu / (self.seconds * (os.cpu_count() or 1))

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0

    def add(self, other: PhaseResult) -> None:
        """Add a round's figures to these."""
        first = self.requests == 0
        self.events += other.events
        self.requests += other.requests
        self.seconds += other.seconds
        self.latencies += other.latencies
        self.failures += other.failures
        self.client_cpu += other.client_cpu
        for name in ("server_cpu", "other_cpu"):
            mine, theirs = getattr(self, name), getattr(other, name)
            if first:
                setattr(self, name, theirs)
            elif mine is not None and theirs is not None:
                setattr(self, name, mine + theirs)
            else:
                setattr(self, name, None)

    def latency_ms(self, q: float) -> float:
        if not self.latencies:
            return 0.0
        ordered = sorted(self.latencies)
        return 1000 * ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def post_all(port: int, path: str, posts: list[Post], concurrency: int,
             server: Server | None = None) -> PhaseResult:
    """POST every item with ``concurrency`` threads; time the whole phase."""
    result = PhaseResult(requests=len(posts))
    lock = threading.Lock()
    items = iter(posts)
    start = threading.Barrier(concurrency + 1)

    def worker() -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
        start.wait()
        while True:
            with lock:
                post = next(items, None)
            if post is None:
                break
            began = time.perf_counter()
            try:
                connection.request("POST", path, body=post.body, headers=post.headers)
                response = connection.getresponse()
                text = response.read()
                status = response.status
            except (OSError, http.client.HTTPException) as err:
                connection.close()
                with lock:
                    result.failures.append(f"{type(err).__name__}: {err}")
                continue
            elapsed = time.perf_counter() - began
            with lock:
                result.latencies.append(elapsed)
                if 200 <= status < 300:
                    result.events += post.events
                else:
                    result.failures.append(f"HTTP {status}: {text[:200].decode(errors='replace')}")
        connection.close()

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    cpu_before = server.cpu() if server else None
    client_before = time.process_time()
    machine_before = machine_busy_seconds()
    start.wait()
    began = time.perf_counter()
    for thread in threads:
        thread.join()
    result.seconds = time.perf_counter() - began
    result.client_cpu = time.process_time() - client_before
    machine_after = machine_busy_seconds()
    if server and cpu_before is not None:
        after = server.cpu()
        result.server_cpu = after - cpu_before if after is not None else None
    if None not in (machine_before, machine_after, result.server_cpu):
        result.other_cpu = max(
            0.0, machine_after - machine_before - result.server_cpu - result.client_cpu
        )
    return result


# ---------------------------------------------------------------------------
# gunicorn
# ---------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _proc_cpu(pid: int) -> float | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            if ppid == pid:
                found.append(int(entry.name))
    return found


class Server:
    """One gunicorn (master + workers) in its own session, stopped on exit whatever happens."""

    def __init__(self, env: dict[str, str], log: Path, workers: int) -> None:
        self.port = free_port()
        self.log = log
        gunicorn = ROOT / ".venv" / "bin" / "gunicorn"
        command = [str(gunicorn)] if gunicorn.exists() else [sys.executable, "-m", "gunicorn"]
        command += [
            "project.wsgi", "-w", str(workers), "-b", f"127.0.0.1:{self.port}",
            # Only so a slow naive batch is never killed mid-request; no effect on speed.
            "--timeout", "300",
            # No shared control socket (gunicorn >= 27 defaults to one in ~/.gunicorn).
            "--no-control-socket",
        ]
        self._log_file = log.open("wb")
        self.process = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=self._log_file, stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def get(self, path: str) -> tuple[int, str]:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            connection.request("GET", path)
            response = connection.getresponse()
            return response.status, response.read().decode(errors="replace")
        finally:
            connection.close()

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise BenchError(f"gunicorn exited with {self.process.returncode}\n{self.tail()}")
            try:
                if self.get("/healthz")[0] == 200 and len(_children(self.process.pid)) >= 1:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise BenchError(f"gunicorn did not answer /healthz within {timeout:.0f} s\n{self.tail()}")

    def cpu(self) -> float | None:
        """CPU seconds used so far by the workers (the master does no request work)."""
        total = 0.0
        for pid in _children(self.process.pid):
            value = _proc_cpu(pid)
            total += value or 0.0
        return total

    def tail(self, lines: int = 30) -> str:
        try:
            self._log_file.flush()
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()  # gunicorn: graceful shutdown of its workers
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(self.process.pid, signal.SIGKILL)  # our own session only
                except ProcessLookupError:
                    pass
                self.process.wait()
        self._log_file.close()


# ---------------------------------------------------------------------------
# Database checks (read directly, after the server has stopped)
# ---------------------------------------------------------------------------

def database_figures(db: Path) -> dict[str, object]:
    connection = sqlite3.connect(db)
    try:
        def one(sql: str) -> int:
            return connection.execute(sql).fetchone()[0]

        return {
            "events": one("SELECT COUNT(*) FROM transactional_event"),
            "linked": one("SELECT COUNT(*) FROM transactional_event WHERE message_id IS NOT NULL"),
            "with_recipient": one(
                "SELECT COUNT(*) FROM transactional_event WHERE recipient_id IS NOT NULL"
            ),
            "suppressions": one("SELECT COUNT(*) FROM transactional_suppression"),
            "recipient_status": dict(connection.execute(
                "SELECT status, COUNT(*) FROM transactional_recipient"
                " GROUP BY status ORDER BY status"
            ).fetchall()),
        }
    finally:
        connection.close()


# ---------------------------------------------------------------------------
# Orchestration
# ---------------------------------------------------------------------------

@dataclass
class Variant:
    """One receiver variant: its server, its database and what it measured."""

    name: str
    db: Path
    server: Server | None = None
    receivers: list[str] = field(default_factory=list)
    sendgrid: PhaseResult = field(default_factory=PhaseResult)
    mailgun: PhaseResult = field(default_factory=PhaseResult)
    warmup_events: int = 0
    figures: dict[str, object] = field(default_factory=dict)
    #: --hold-connection: this script's own connection to the database, held open.
    held: sqlite3.Connection | None = None

    def hold_connection(self) -> None:
        """Open a connection and keep it, as a delivery worker beside the site does.

        While any connection is open, SQLite keeps the WAL file; the last one
        to close checkpoints it into the database and deletes it.
        """
        self.held = sqlite3.connect(self.db)
        self.held.execute("SELECT COUNT(*) FROM sqlite_master").fetchall()

    def release_connection(self) -> None:
        if self.held is not None:
            self.held.close()
            self.held = None

    @property
    def label(self) -> str:
        return LABELS[self.name]

    @property
    def posted(self) -> int:
        """Events answered 2xx, warm-up included."""
        return self.warmup_events + self.sendgrid.events + self.mailgun.events


def _cpu_sample() -> tuple[int, int]:
    """Return (total, idle + iowait) clock ticks of all CPUs since boot."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return sum(fields[:8]), fields[3] + fields[4]


def machine_busy_seconds() -> float | None:
    """Return the CPU seconds the whole machine has been busy since boot."""
    try:
        total, idle = _cpu_sample()
    except (OSError, ValueError, IndexError):
        return None
    return (total - idle) / os.sysconf("SC_CLK_TCK")


def cpu_busy(seconds: float = 1.0) -> float | None:
    """Return the share of all CPUs busy over ``seconds`` (while this script runs nothing)."""
    try:
        total0, idle0 = _cpu_sample()
        time.sleep(seconds)
        total1, idle1 = _cpu_sample()
    except (OSError, ValueError, IndexError):
        return None
    return 1 - (idle1 - idle0) / max(1, total1 - total0)


def versions() -> str:
    import anymail
    import django
    import gunicorn

    return (f"Python {sys.version.split()[0]}, Django {django.get_version()}, "
            f"django-anymail {anymail.__version__}, gunicorn {gunicorn.__version__}, "
            f"SQLite {sqlite3.sqlite_version}")


def base_environment(tmp: Path, verification_key: str) -> dict[str, str]:
    env = {
        key: value for key, value in os.environ.items()
        if not key.startswith(("DJANGO_", "ANYMAIL_", "MAILGUN_", "SENDGRID_", "AWS_", "AMAZON_"))
        and key not in ("DATABASE_URL", "EMAIL_PROVIDER", "SECRET_KEY", "ALLOWED_HOSTS",
                        "DEBUG", "LOG_LEVEL", "TASKS_BACKEND", "BENCH_RECEIVER")
    }
    env.update(
        DJANGO_SETTINGS_MODULE="settings.prod",
        SECRET_KEY="bench-" + secrets.token_urlsafe(40),
        ALLOWED_HOSTS="127.0.0.1",
        EMAIL_PROVIDER="mailgun",
        MAILGUN_API_KEY="key-bench-not-used",
        MAILGUN_SENDER_DOMAIN=SENDER_DOMAIN,
        MAILGUN_WEBHOOK_SIGNING_KEY=MAILGUN_SIGNING_KEY,
        SENDGRID_TRACKING_WEBHOOK_VERIFICATION_KEY=verification_key,
        ANYMAIL_WEBHOOK_SECRET=WEBHOOK_SECRET,
        SECURE_SSL_REDIRECT="false",
        DEFAULT_FROM_EMAIL=FROM,
        LOG_LEVEL="info",
        TASKS_BACKEND="db",
        PYTHONPATH=os.pathsep.join([str(ROOT), str(SCRIPTS), str(tmp)]),
        PYTHONWARNINGS="ignore",  # anymail's SendGrid "not supported" warning, every variant alike
    )
    return env


def start_variant(variant: Variant, args, tmp: Path, template_db: Path,
                  env: dict[str, str]) -> None:
    """Copy the seeded database and start the variant's gunicorn."""
    shutil.copyfile(template_db, variant.db)
    env = {**variant_environment(variant.name, env), "DATABASE_URL": f"sqlite:///{variant.db}"}
    variant.server = Server(env, tmp / f"{variant.name}.log", args.workers)


#: The settings module of our variant when --conn-max-age overrides settings.prod's.
OURS_SETTINGS = "bench_webhooks_ours_settings"


def write_settings_modules(tmp: Path, conn_max_age: int | None) -> None:
    """Write the reference variants' settings module (and ours, for --conn-max-age)."""
    base = "settings.prod"
    if conn_max_age is not None:
        (tmp / f"{OURS_SETTINGS}.py").write_text(
            '"""Generated by scripts/bench_webhooks.py: settings.prod, --conn-max-age."""\n'
            "from settings.prod import *  # noqa: F403\n\n"
            'DATABASES = {"default": {**DATABASES["default"], "CONN_MAX_AGE": '
            f"{conn_max_age}}}}}  # noqa: F405\n"
        )
        base = OURS_SETTINGS
    (tmp / "bench_webhooks_settings.py").write_text(
        f'"""Generated by scripts/bench_webhooks.py: {base}, reference urlconf."""\n'
        f"from {base} import *  # noqa: F403\n\n"
        'ROOT_URLCONF = "bench_webhooks_receivers"\n'
    )


def variant_environment(name: str, env: dict[str, str]) -> dict[str, str]:
    """Return the environment of variant ``name``'s server: its settings module (and receiver)."""
    if name == "ours":
        return env  # settings.prod, or OURS_SETTINGS with --conn-max-age
    return {**env, "DJANGO_SETTINGS_MODULE": "bench_webhooks_settings", "BENCH_RECEIVER": name}


def database_settings(env: dict[str, str], variants: list[str], db: Path) -> dict[str, str]:
    """Return each variant's database settings (less the file name), as its server reads them."""
    found = {}
    for name in variants:
        done = subprocess.run(
            [sys.executable, str(Path(__file__).resolve()), "--role", "db-settings"],
            cwd=ROOT, env={**variant_environment(name, env), "DATABASE_URL": f"sqlite:///{db}"},
            capture_output=True, text=True, check=False,
        )
        if done.returncode != 0:
            raise BenchError(f"{LABELS[name]}: cannot read its settings:\n{done.stderr}")
        found[name] = done.stdout.strip()
    return found


def prepare_variant(variant: Variant, args, kit, sg_warmup: list[Post],
                    mg_warmup: list[dict]) -> None:
    """Wait for the server, check its receivers, and warm both endpoints up in every worker."""
    server = variant.server
    server.wait_ready()
    if variant.name != "ours":
        for _ in range(4 * args.workers):
            status, text = server.get("/bench/receivers")
            if status != 200:
                raise BenchError(f"/bench/receivers answered {status}\n{server.tail()}")
            variant.receivers = text.split()
            if (OUR_RECEIVER_UID in variant.receivers
                    or f"bench_webhooks.{variant.name}" not in variant.receivers):
                raise BenchError(f"{variant.label}: wrong tracking receivers: {variant.receivers}")
    for path, posts in ((SENDGRID_PATH, sg_warmup), (MAILGUN_PATH, mailgun_posts(kit, mg_warmup))):
        phase = post_all(server.port, path, posts, args.concurrency)
        if phase.failures:
            raise BenchError(f"{variant.label}: warm-up failed: {phase.failures[:3]}\n"
                             f"{server.tail()}")
        variant.warmup_events += phase.events


def split(items: list, parts: int) -> list[list]:
    """Return ``items`` in ``parts`` contiguous, nearly equal, non-empty chunks."""
    parts = max(1, min(parts, len(items)))
    size, extra = divmod(len(items), parts)
    chunks, start = [], 0
    for i in range(parts):
        end = start + size + (i < extra)
        chunks.append(items[start:end])
        start = end
    return chunks


def run_phase(esp: str, variants: list[Variant], chunks: list[list], args, kit) -> None:
    """Post every chunk to every variant, rotating which variant goes first each round."""
    path = SENDGRID_PATH if esp == "sendgrid" else MAILGUN_PATH
    for number, chunk in enumerate(chunks):
        order = variants[number % len(variants):] + variants[:number % len(variants)]
        rates = []
        for variant in order:
            # Mailgun: sign right before posting (fresh timestamps, fresh tokens per variant).
            posts = chunk if esp == "sendgrid" else mailgun_posts(kit, chunk)
            result = post_all(variant.server.port, path, posts, args.concurrency, variant.server)
            getattr(variant, esp).add(result)
            rates.append(f"{variant.label} {fmt_rate(result.rate)}/s")
        print(f"  {ESP_LABELS[esp]} round {number + 1}/{len(chunks)}: {', '.join(rates)}",
              flush=True)


def seed_template(tmp: Path, env: dict[str, str], messages: int) -> Path:
    db = tmp / "template.sqlite3"
    done = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--role", "seed",
         "--messages", str(messages)],
        cwd=ROOT, env={**env, "DATABASE_URL": f"sqlite:///{db}"},
        capture_output=True, text=True, check=False,
    )
    if done.returncode != 0:
        raise BenchError(f"migrate/seed failed:\n{done.stdout}\n{done.stderr}")
    for suffix in ("-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)  # checkpointed (TRUNCATE) before exit
    return db


def fmt_rate(value: float | None) -> str:
    return "n/a" if value is None else f"{value:,.0f}"


def fmt_ratio(a: float | None, b: float | None) -> str:
    return "n/a" if a is None or not b else f"{a / b:.2f}x"


def report(
    results: dict[str, Variant], args, errors: list[str], notes: list[str]
) -> list[str]:
    """Print the tables; return the missed targets."""
    print("\n" + "=" * 78)
    print(f"Tracking webhooks under gunicorn ({args.workers} workers, loopback, SQLite WAL), "
          f"{args.concurrency} client threads, {args.rounds} interleaved rounds")
    print(f"SendGrid: {args.sendgrid_batches} batches x {args.batch_size} events; "
          f"Mailgun: {args.mailgun_events} single events; CPUs: {os.cpu_count()}")
    print(versions())
    database = json.loads(getattr(args, "database_settings", "") or "{}")
    print(f"Database settings, the same for every variant: CONN_MAX_AGE "
          f"{database.get('CONN_MAX_AGE')}, OPTIONS {database.get('OPTIONS')}")
    if args.hold_connection:
        print("--hold-connection: one more connection held open on each database")
    print("=" * 78)
    header = (f"{'variant':<8} {'SendGrid ev/s':>14} {'batch p50/max ms':>17} "
              f"{'Mailgun ev/s':>13} {'req p50/p99 ms':>15}")
    print(header)
    print("-" * len(header))
    for name in VARIANTS:
        if name not in results:
            continue
        r = results[name]
        print(f"{LABELS[name]:<8} {fmt_rate(r.sendgrid.rate):>14} "
              f"{r.sendgrid.latency_ms(0.5):>8.0f}/{r.sendgrid.latency_ms(1.0):<8.0f} "
              f"{fmt_rate(r.mailgun.rate):>13} "
              f"{r.mailgun.latency_ms(0.5):>7.1f}/{r.mailgun.latency_ms(0.99):<7.1f}")

    print("\nCPU seconds per 1,000 events (server workers / this client / rest of the machine):")
    for name in VARIANTS:
        if name not in results:
            continue
        r = results[name]
        cells = []
        for label, phase in (("SendGrid", r.sendgrid), ("Mailgun", r.mailgun)):
            per = 1000 / phase.events if phase.events else 0
            server = "n/a" if phase.server_cpu is None else f"{phase.server_cpu * per:.3f}"
            other = "n/a" if phase.other_cpu is None else f"{phase.other_cpu * per:.3f}"
            cells.append(f"{label} {server} / {phase.client_cpu * per:.3f} / {other}")
        print(f"  {LABELS[name]:<8} " + "   ".join(cells))

    print("\nDatabase after each run (rows expected = events posted, warm-up included):")
    for name in VARIANTS:
        if name not in results:
            continue
        r = results[name]
        f = r.figures
        expected = 0 if name == "noop" else r.posted
        verdict = "ok" if f["events"] == expected else "WRONG"
        line = f"  {LABELS[name]:<8} Event rows {f['events']:,} (expected {expected:,}) {verdict}"
        if name == "ours":
            line += (f"; linked {f['linked']:,}, to a recipient {f['with_recipient']:,}; "
                     f"suppressions {f['suppressions']:,}; recipients {f['recipient_status']}")
        print(line)

    ours, naive, noop = (results.get(n) for n in ("ours", "naive", "noop"))

    def rate(r: Variant | None, esp: str) -> float | None:
        return None if r is None else getattr(r, esp).rate

    print("\nRatios (ours / reference):")
    print(f"  {'':10} {'ours/naive':>11} {'ours/no-op':>11}")
    for esp, label in (("sendgrid", "SendGrid"), ("mailgun", "Mailgun")):
        print(f"  {label:10} {fmt_ratio(rate(ours, esp), rate(naive, esp)):>11} "
              f"{fmt_ratio(rate(ours, esp), rate(noop, esp)):>11}")

    targets = [
        ("SendGrid batches: ours >= 10x naive",
         rate(ours, "sendgrid"), rate(naive, "sendgrid"), 10.0),
        ("SendGrid batches: ours >= 5,000 events/s", rate(ours, "sendgrid"), 1.0, 5000.0),
        ("Mailgun single events: ours >= 1.0x naive",
         rate(ours, "mailgun"), rate(naive, "mailgun"), 1.0),
    ]
    if notes:
        print("\nTargets (UNRELIABLE: another workload shared the machine, see the warnings;"
              " a lock-bound variant such as ours loses less to it than a CPU-bound one):")
    else:
        print("\nTargets:")
    missed = []
    for label, value, reference, factor in targets:
        if value is None or reference is None:
            verdict, detail = "n/a ", "(variant not run)"
        else:
            ok = value >= factor * reference
            verdict = "PASS" if ok else "FAIL"
            detail = (f"({value:,.0f} events/s)" if reference == 1.0
                      else f"({value / reference:.2f}x: {value:,.0f} vs {reference:,.0f} events/s)")
            if not ok:
                missed.append(label)
        print(f"  {verdict}  {label} {detail}")
    print(FINDING)
    if notes:
        print("\nWarnings (another workload shared the machine):")
        for note in notes:
            print(f"  {note}")
    if errors:
        print("\nErrors:")
        for error in errors:
            print(f"  {error}")
    return missed


#: Printed with every report: why settings.prod measured slower than settings.dev.
FINDING = """
Why settings.prod was slower than settings.dev (docstring; docs/webhooks.md, "Throughput"):
  the database connection, not DEBUG, logging, middleware or the auth/signature checks.
  With CONN_MAX_AGE 0 every request opened a fresh SQLite connection (PRAGMAs, schema)
  and closed it, and the last close checkpoints and deletes the WAL for the next request
  to create again; scripts/run's delivery worker holds a connection open, which hid part
  of it. settings.prod now keeps connections (CONN_MAX_AGE 60) for SQLite too. The old
  behaviour: --conn-max-age 0; with the dev server's worker beside it: add --hold-connection."""


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n")[0], epilog="See the module docstring for the method.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--sendgrid-batches", type=int, default=20,
                        help="SendGrid batches per variant")
    parser.add_argument("--batch-size", type=int, default=1000, help="events per SendGrid batch")
    parser.add_argument("--mailgun-events", type=int, default=2000,
                        help="single Mailgun events per variant")
    parser.add_argument("--concurrency", type=int, default=4, help="client threads")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers per server")
    parser.add_argument("--messages", type=int, default=1000, help="seeded messages per ESP")
    parser.add_argument("--rounds", type=int, default=4,
                        help="interleaved rounds per phase (1: each variant in one go)")
    parser.add_argument("--variants", default="noop,naive,ours",
                        help="comma-separated subset of ours,noop,naive")
    parser.add_argument("--seed", type=int, default=20260314, help=argparse.SUPPRESS)
    parser.add_argument("--strict", action="store_true", help="exit 2 when a target is missed")
    parser.add_argument("--keep", action="store_true",
                        help="keep the temporary directory (databases, server logs)")
    parser.add_argument("--conn-max-age", type=int, default=None, metavar="S",
                        help="CONN_MAX_AGE for every variant (default: settings.prod's; "
                        "0: a connection per request)")
    parser.add_argument("--hold-connection", action="store_true",
                        help="hold one more connection open on each database, as scripts/run's "
                        "delivery worker does")
    parser.add_argument("--role", choices=["seed", "db-settings"], help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.role == "seed":
        role_seed(args.messages)
        return 0
    if args.role == "db-settings":
        role_db_settings()
        return 0
    if args.conn_max_age is not None and args.conn_max_age < 0:
        parser.error("--conn-max-age must be 0 or more")
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    if unknown := set(variants) - set(VARIANTS):
        parser.error(f"unknown variant(s) {', '.join(sorted(unknown))}; "
                     "choose from ours,noop,naive")
    counts = ("sendgrid_batches", "batch_size", "mailgun_events", "concurrency", "workers",
              "messages", "rounds")
    for name in counts:
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")

    # SIGTERM (e.g. from a CI timeout) unwinds like Ctrl-C, through the finally blocks.
    signal.signal(signal.SIGTERM, _interrupt)

    sys.path.insert(0, str(ROOT))
    from transactional.testing import webhooks as kit

    tmp = Path(tempfile.mkdtemp(prefix="bench_webhooks_"))
    results: dict[str, Variant] = {}
    errors: list[str] = []
    notes: list[str] = []
    try:
        keys = kit.sendgrid_keypair()
        env = base_environment(tmp, keys.verification_key)
        write_settings_modules(tmp, args.conn_max_age)
        if args.conn_max_age is not None:
            env["DJANGO_SETTINGS_MODULE"] = OURS_SETTINGS
        print(f"Preparing: migrate + seed {2 * args.messages} sent messages; "
              f"building {args.sendgrid_batches} x {args.batch_size} SendGrid events "
              f"and {args.mailgun_events} Mailgun events (temp dir {tmp})", flush=True)
        template_db = seed_template(tmp, env, args.messages)
        # A fair comparison: every variant's server reads the same database settings.
        databases = database_settings(env, variants, template_db)
        if len(set(databases.values())) != 1:
            raise BenchError("the variants' database settings differ:\n" + "\n".join(
                f"  {LABELS[name]}: {value}" for name, value in databases.items()))
        args.database_settings = next(iter(databases.values()))
        rng = random.Random(args.seed)
        sg_posts = sendgrid_posts(kit, keys, rng, args.sendgrid_batches, args.batch_size,
                                  args.messages)
        sg_warmup = sendgrid_posts(kit, keys, rng, WARMUP_SENDGRID_BATCHES, WARMUP_SENDGRID_SIZE,
                                   args.messages)
        mg_events = mailgun_events(kit, rng, args.mailgun_events, args.messages)
        mg_warmup = mailgun_events(kit, rng, WARMUP_MAILGUN, args.messages)

        runs = [Variant(name, tmp / f"{name}.sqlite3") for name in variants]
        try:
            print(f"Starting {len(runs)} gunicorn servers ({args.workers} workers each): "
                  f"{', '.join(v.label for v in runs)}", flush=True)
            for variant in runs:
                start_variant(variant, args, tmp, template_db, env)
            for variant in runs:
                prepare_variant(variant, args, kit, sg_warmup, mg_warmup)
            if args.hold_connection:
                for variant in runs:
                    variant.hold_connection()
            busy = cpu_busy()
            if busy is not None and busy > BUSY_WARNING:
                notes.append(f"before the phases {busy:.0%} of the CPUs were busy with other "
                             "processes")
                print(f"warning: {notes[-1]}", flush=True)
            print(f"SendGrid: {len(sg_posts)} batches x {args.batch_size} events per variant, "
                  f"in {min(args.rounds, len(sg_posts))} interleaved rounds", flush=True)
            run_phase("sendgrid", runs, split(sg_posts, args.rounds), args, kit)
            print(f"Mailgun: {len(mg_events)} single events per variant, "
                  f"in {min(args.rounds, len(mg_events))} interleaved rounds", flush=True)
            run_phase("mailgun", runs, split(mg_events, args.rounds), args, kit)
        finally:
            for variant in runs:
                if variant.server is not None:
                    variant.server.stop()
                variant.release_connection()
        for variant in runs:
            results[variant.name] = variant
            variant.figures = database_figures(variant.db)
            for esp in ("sendgrid", "mailgun"):
                phase = getattr(variant, esp)
                if phase.other_share > BUSY_WARNING:
                    notes.append(f"{variant.label} {ESP_LABELS[esp]}: other processes used "
                                 f"{phase.other_share:.0%} of the CPUs meanwhile")
                if phase.failures:
                    errors.append(f"{variant.label} {ESP_LABELS[esp]}: {len(phase.failures)} "
                                  f"failed request(s), first: {phase.failures[0]}")
            expected = 0 if variant.name == "noop" else variant.posted
            if variant.figures["events"] != expected:
                errors.append(f"{variant.label}: {variant.figures['events']} Event rows, "
                              f"expected {expected}")
    except KeyboardInterrupt:
        print("\nInterrupted; servers stopped.", file=sys.stderr)
        return 130
    except BenchError as err:
        print(f"\nBenchmark error: {err}", file=sys.stderr)
        return 1
    finally:
        if args.keep:
            print(f"\nKept {tmp} (databases, server logs)")
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    missed = report(results, args, errors, notes)
    if errors:
        return 1
    if missed and args.strict:
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
