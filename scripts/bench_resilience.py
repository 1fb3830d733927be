#!/usr/bin/env python
"""Resilience benchmark: the shared per-provider rate limit, and failover with the circuit breaker.

Run from the project root::

    .venv/bin/python scripts/bench_resilience.py              # both parts, defaults below
    .venv/bin/python scripts/bench_resilience.py --phases rate --n 5000 --rate 100

Every run gets a fresh SQLite file database (WAL; ``manage.py migrate`` once
into a template, copied per run) and ``--workers`` (default 2) long-running
``manage.py delivery_worker --no-reload --interval 0.1`` processes with
TASKS_BACKEND=db, DJANGO_SETTINGS_MODULE = a generated module layered on
``--settings`` (default settings.dev), DEBUG=false. The providers are test
doubles in THIS process, on 127.0.0.1 only: a fake Mailgun
(transactional.testing.fake_mailgun, served from a thread) that stamps every
request with ``time.time()`` when it has read it, and, for part 2, an
aiosmtpd server (also a thread) that stamps every message it accepts.

1. Rate limit (``--phases rate``). N messages (``--n``, default 2000) are
   enqueued once with ``EmailMultiAlternatives(...).send()`` (the messages of
   scripts/bench_delivery.py: ~2 KB HTML receipt plus text, one recipient,
   tags, metadata) and that queued database is copied for two runs against
   the same kind of fake Mailgun, EMAIL_PROVIDER=mailgun:
     (a) baseline, no limit: how fast the same workers drain the same N;
     (b) TRANSACTIONAL_RATE_LIMITS=mailgun=<--rate>/s (default 50/s).
   Printed for each: drain time (worker start -> last arrival), start-up
   (worker start -> first arrival), throughput = N / (last arrival - first
   arrival), the most requests that arrived within any 1-second sliding
   window [t, t+1) and within any calendar second, and per-second counts
   (seconds since the first arrival; min/median/max over the full seconds,
   and every count for the limited run). Ratios: limited / limit and
   limited / unlimited. For the limited run also: how many 1 s windows (one
   starting at each arrival) hold more than the limit, and the inter-arrival
   gaps, overall and inside the fullest window (a long gap followed by
   near-zero ones is a sender that missed its slot and went out together
   with the next slot's request; ``--trace-gc`` shows whether a worker's
   garbage collection caused it).
   Targets: 0.95 x limit <= limited throughput <= limit; max in any 1 s
   window <= limit.

2. Failover (``--phases failover``). EMAIL_PROVIDERS=mailgun,smtp: the fake
   Mailgun is the primary, the aiosmtpd server the secondary. Breaker
   settings (generated settings module): TRANSACTIONAL_BREAKER_FAILURES
   (``--breaker-failures``, default 5), _WINDOW_SECONDS (default 60),
   _COOLDOWN_SECONDS (``--cooldown``, default 5, short so that the run is).
   A producer process enqueues messages continuously at ``--produce-rate``
   (default 50/s) for the whole run, instead of one big batch: a batch would
   drain through the unlimited secondary in seconds during the outage and
   leave nothing to show the recovery, while a steady stream keeps mail
   flowing through every phase and keeps few calls in flight, so the number
   of calls the primary gets after it breaks mostly counts what the breaker
   lets through. Timeline:
     - warm-up: mail flows through the primary for ``--warmup`` s (default 3);
     - T0: the fake Mailgun starts answering EVERY request with 503;
     - T1 = T0 + ``--outage`` (default 12 s, more than two cooldowns, so that
       failed half-open probes show): the fake answers normally again;
     - the run goes on until mail flows through the primary again, then
       ``--tail`` s (default 3); the producer stops and the backlog drains.
   Printed: time from T0 to the first message accepted by the secondary;
   per-message failover delay (a message's 503 at the primary -> the same
   Message-ID accepted by the secondary: median, max); the moment the
   breaker opened, (i) from the traffic: the last request before the first
   gap of >= 1 s in the primary's requests after T0, and (ii) from the
   ``transactional_providerstate`` table, polled every 25 ms (if it exists);
   the calls the primary got after T0 (wasted: before the breaker opened,
   then the half-open probes, grouped in bursts with their times); the time
   from T1 until the primary accepts mail again, and the secondary's traffic
   after that; end-to-end latency (enqueue -> accepted) per phase; the
   Attempt rows by provider and outcome.
   Targets: first secondary acceptance <= 2 s after T0; every failed-over
   message reaches the secondary <= 2 s after its 503; breaker open <= 2 s
   after T0; wasted calls before it opened < workers x BREAKER_FAILURES (the
   breaker is shared: per-process breakers would let each worker fail that
   many times); one request per half-open probe; primary used again
   <= cooldown + 2 s after T1; no secondary traffic once it is.

Checks (a failure is "BENCHMARK FAILED", exit 1): each message accepted
exactly once across the test doubles (by Message-ID), none missing, every
row ``sent`` in the database, a process that died, no progress for
``--stall-timeout`` s, or the global ``--timeout``. Missed targets print
FAIL but exit 0: it is a measurement. Where the database's ``provider`` of a
message disagrees with the double that got it, a FAIL line says so.

Flags:
  --phases P,...         rate, failover (default both)
  --n N                  messages for part 1 (default 2000)
  --workers W            delivery_worker processes (default 2)
  --rate R               the limit of part 1, messages per second (default 50)
  --latency L            the fake Mailgun's latency per request, seconds (default 0)
  --produce-rate R       part 2 enqueue rate, messages per second (default 50)
  --warmup S, --outage S, --tail S
                         part 2 timeline (defaults 3, 12, 3 seconds)
  --cooldown S           TRANSACTIONAL_BREAKER_COOLDOWN_SECONDS (default 5)
  --breaker-failures F   TRANSACTIONAL_BREAKER_FAILURES (default 5)
  --breaker-window S     TRANSACTIONAL_BREAKER_WINDOW_SECONDS (default 60)
  --failover-limits L    TRANSACTIONAL_RATE_LIMITS during part 2 (default none)
  --timeout S            global bound on the whole benchmark (default 300)
  --stall-timeout S      fail if no message arrives for S seconds (default 40)
  --worker-log-level L   LOG_LEVEL for the workers (default warning)
  --debug                keep DEBUG on (default DEBUG=false)
  --settings MODULE      base settings module (default settings.dev)
  --concurrency C, --batch-size B
                         override TRANSACTIONAL_CONCURRENCY / _BATCH_SIZE
  --keep                 keep the temporary directory (databases, worker logs)
  --dump-times FILE      write the raw arrival times of every run to FILE (JSON)
  --trace-gc             the generated settings module makes each worker log its
                         garbage collections of >= 5 ms; part 1 lists those of
                         >= 20 ms next to the inter-arrival gaps (a collection holds
                         the GIL: no sender thread of that worker runs meanwhile)
"""

from __future__ import annotations

import argparse
import atexit
import bisect
import contextlib
import json
import math
import os
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from email.parser import BytesHeaderParser
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench_delivery, for the messages
sys.path.insert(1, str(ROOT))

from bench_delivery import build_message, code_version, message_parts  # noqa: E402

API_KEY = "key-bench"
SENDER_DOMAIN = "mg.acme-corp.com"
OVERLAY_MODULE = "bench_resilience_settings"


# ---------------------------------------------------------------------------
# Subprocess roles (this script re-run with --role)
# ---------------------------------------------------------------------------

def _setup_django() -> None:
    import django

    django.setup()


def role_enqueue(count: int) -> None:
    """Enqueue ``count`` messages through the outbox backend."""
    _setup_django()
    started = time.perf_counter()
    accepted = sum(build_message(i).send() for i in range(count))
    print(json.dumps({"accepted": accepted, "seconds": time.perf_counter() - started}))


def role_produce(rate: float, stop_file: str, limit: int) -> None:
    """Enqueue messages at ``rate`` per second until ``stop_file`` exists (at most ``limit``)."""
    _setup_django()
    from django.db import connection

    connection.ensure_connection()
    stop = Path(stop_file)
    started = time.monotonic()
    behind = 0.0
    count = 0
    while count < limit and not stop.exists():
        count += build_message(count).send()
        due = started + count / rate
        lag = due - time.monotonic()
        if lag > 0:
            time.sleep(lag)
        else:
            behind = max(behind, -lag)
    print(json.dumps({"enqueued": count, "seconds": time.monotonic() - started,
                      "max_behind_s": behind}))


def _interesting(name: str) -> bool:
    """Settings of the providers, limits and breaker (not the PROVIDERS table of settings.base)."""
    return name.isupper() and (name.startswith(("EMAIL_PROVIDER", "TRANSACTIONAL_PROVIDER"))
                               or any(m in name for m in ("RATE_LIMIT", "BREAKER", "FAILOVER")))


def role_settings() -> None:
    """Print what the workers will run with (never the ANYMAIL dict: it holds the key)."""
    _setup_django()
    from django.conf import settings

    from transactional.conf import delivery_backend, get_setting

    seen = {}
    for name in sorted(dir(settings)):
        if _interesting(name):
            value = getattr(settings, name)
            if isinstance(value, (str, int, float, bool, list, tuple, dict, type(None))):
                seen[name] = repr(value)[:200]
            else:
                seen[name] = f"<{type(value).__name__}>"
    print(json.dumps({
        "settings": os.environ.get("DJANGO_SETTINGS_MODULE"), "debug": settings.DEBUG,
        "email_backend": settings.EMAIL_BACKEND, "delivery_backend": delivery_backend(),
        "email_provider": getattr(settings, "EMAIL_PROVIDER", None),
        "concurrency": get_setting("CONCURRENCY"), "batch_size": get_setting("BATCH_SIZE"),
        "tasks": settings.TASKS["default"]["BACKEND"], "seen": seen,
    }))


# ---------------------------------------------------------------------------
# Test doubles, in this process
# ---------------------------------------------------------------------------

def _normalize_id(value: str | None) -> str | None:
    return value.strip().strip("<>").strip() if value else None


_CURRENT = threading.local()  # the request a fake Mailgun handler thread is answering


def _install_parse_hook() -> None:
    """Let next_response() see the parsed request (to log its Message-ID with the answer).

    The handler calls fake_mailgun.parse_message() by its module-global name right
    before next_response(), in the same thread; only this benchmark process is affected.
    """
    from transactional.testing import fake_mailgun

    if getattr(fake_mailgun.parse_message, "_bench_hook", False):
        return
    original = fake_mailgun.parse_message

    def parse_and_remember(*args, **kwargs):
        _CURRENT.message = None
        message = original(*args, **kwargs)
        _CURRENT.message = message
        return message

    parse_and_remember._bench_hook = True
    fake_mailgun.parse_message = parse_and_remember


@dataclass(frozen=True)
class Request:
    time: float
    message_id: str | None
    status: int


def start_primary(latency: float):
    """A fake Mailgun in a thread of this process that logs every request and can fail."""
    from transactional.testing.fake_mailgun import FakeMailgun, FakeResponse

    _install_parse_hook()

    class Primary(FakeMailgun):
        failing = False  # answer 503 to every request while True
        outage = FakeResponse.error(503, "Service Unavailable (benchmark outage)")

        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.requests: list[Request] = []

        def next_response(self):
            now = time.time()
            planned = self.outage if self.failing else super().next_response()
            message = getattr(_CURRENT, "message", None)
            with self._lock:
                self.requests.append(Request(now, _normalize_id(message and message.message_id),
                                             planned.status))
            return planned

        def snapshot(self) -> list[Request]:
            with self._lock:
                return list(self.requests)

    server = Primary(latency=latency, api_key=API_KEY)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True,
                              name="fake-mailgun")
    thread.start()
    return server


class SMTPRecorder:
    """aiosmtpd handler: accepts everything, stamps each message on arrival."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.arrivals: list[tuple[float, str | None, str | None]] = []  # time, Message-ID, subject

    async def handle_DATA(self, server, session, envelope) -> str:
        now = time.time()
        headers = BytesHeaderParser().parsebytes(envelope.content)
        with self.lock:
            self.arrivals.append((now, _normalize_id(headers.get("Message-ID")), headers.get("Subject")))
        return "250 2.0.0 Ok: queued"

    def snapshot(self) -> list[tuple[float, str | None, str | None]]:
        with self.lock:
            return list(self.arrivals)


def free_port() -> int:
    """A loopback port nobody listens on (aiosmtpd cannot bind port 0 itself)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_smtp():
    from aiosmtpd.controller import Controller

    recorder = SMTPRecorder()
    port = free_port()
    controller = Controller(recorder, hostname="127.0.0.1", port=port, ready_timeout=10)
    controller.start()
    return controller, recorder, port


# ---------------------------------------------------------------------------
# Processes
# ---------------------------------------------------------------------------

class BenchError(RuntimeError):
    """A message was lost or duplicated, a process failed, or time ran out: exit 1."""


_CHILDREN: list[subprocess.Popen] = []


def stop_all(procs: list[subprocess.Popen], grace: float = 15) -> None:
    """Stop several processes: SIGTERM them all, then wait, then SIGKILL what is left."""
    for proc in procs:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
    end = time.monotonic() + grace
    for proc in procs:
        try:
            proc.wait(max(0.1, end - time.monotonic()))
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            proc.wait()


@atexit.register
def _stop_children() -> None:
    stop_all([p for p in _CHILDREN if p.poll() is None], grace=5)


def spawn(command: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    with open(log, "w") as out:
        proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    _CHILDREN.append(proc)
    return proc


class Clock:
    """The global deadline (``--timeout``)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        return self.end - time.monotonic()

    def check(self, doing: str) -> None:
        if self.left() <= 0:
            raise BenchError(f"global --timeout of {self.seconds:.0f} s reached while {doing}")


def run_role(role: str, env: dict[str, str], clock: Clock, *extra: str) -> dict:
    command = [sys.executable, str(Path(__file__).resolve()), "--role", role, *extra]
    try:
        result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True,
                                timeout=max(1.0, clock.left()))
    except subprocess.TimeoutExpired:
        raise BenchError(f"--role {role} did not finish within the global --timeout") from None
    if result.returncode != 0:
        raise BenchError(f"--role {role} failed ({result.returncode}):\n{result.stdout}{result.stderr}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def manage(*args: str, env: dict[str, str], clock: Clock) -> str:
    try:
        result = subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=env,
                                capture_output=True, text=True, timeout=max(1.0, clock.left()))
    except subprocess.TimeoutExpired:
        raise BenchError(f"manage.py {' '.join(args)} did not finish within the --timeout") from None
    if result.returncode != 0:
        raise BenchError(f"manage.py {' '.join(args)} failed:\n{result.stdout}{result.stderr}")
    return result.stdout


@dataclass
class Env:
    """Environment for the generated settings module against one database."""

    args: argparse.Namespace
    overlay_dir: Path
    database: Path
    esp_url: str = "http://127.0.0.1:9/v3"  # the discard port: nothing is sent there

    def environ(self, **extra: str | None) -> dict[str, str]:
        env = {
            "PATH": os.environ.get("PATH", ""),
            "HOME": os.environ.get("HOME", "/tmp"),
            "LANG": os.environ.get("LANG", "C.UTF-8"),
            "DJANGO_SETTINGS_MODULE": OVERLAY_MODULE,
            # Read by settings.prod only (settings.dev has defaults); never a real secret.
            "SECRET_KEY": "bench-only-not-a-secret-" + "x" * 40,
            "ALLOWED_HOSTS": "localhost",
            "DATABASE_URL": f"sqlite:///{self.database}",
            "EMAIL_PROVIDER": "mailgun",
            "MAILGUN_API_KEY": API_KEY,
            "MAILGUN_SENDER_DOMAIN": SENDER_DOMAIN,
            "MAILGUN_API_URL": self.esp_url,
            # Where mail would go if a misconfiguration fell back to the file provider.
            "EMAIL_FILE_PATH": str(self.overlay_dir.parent / "sent_emails"),
            "TASKS_BACKEND": "db",
            "LOG_LEVEL": self.args.worker_log_level,
            "DEBUG": "true" if self.args.debug else "false",
            "PYTHONPATH": os.pathsep.join(filter(None, [
                str(ROOT), str(self.overlay_dir), os.environ.get("PYTHONPATH", "")])),
        }
        env.update(extra)
        return {k: v for k, v in env.items() if v is not None}  # None: unset that variable


#: --trace-gc: every worker logs its garbage collections of >= 5 ms (a pause holds the GIL,
#: so no sender thread runs through it).
GC_TRACE = """
import gc as _gc, sys as _sys, time as _time
_gc_started = [0.0]
def _bench_gc_trace(phase, info):
    if phase == "start":
        _gc_started[0] = _time.time()
    elif _time.time() - _gc_started[0] >= 0.005:
        print(f"BENCH-GC {_gc_started[0]:.4f} {info['generation']} {_time.time() - _gc_started[0]:.4f}",
              file=_sys.stderr, flush=True)
_gc.callbacks.append(_bench_gc_trace)
"""


def gc_pauses(logs: list[Path]) -> list[tuple[float, int, int, float]]:
    """(start, worker, generation, seconds) of the GC pauses --trace-gc logged."""
    found = []
    for k, log in enumerate(logs):
        with contextlib.suppress(OSError):
            for line in log.read_text(errors="replace").splitlines():
                if line.startswith("BENCH-GC "):
                    _, start, generation, seconds = line.split()
                    found.append((float(start), k, int(generation), float(seconds)))
    return sorted(found)


def write_overlay(workdir: Path, args) -> Path:
    overlay = workdir / "overlay"
    overlay.mkdir()
    lines = [
        f"from {args.settings} import *  # noqa: F403",
        f"TRANSACTIONAL_BREAKER_FAILURES = {args.breaker_failures}",
        f"TRANSACTIONAL_BREAKER_WINDOW_SECONDS = {args.breaker_window}",
        f"TRANSACTIONAL_BREAKER_COOLDOWN_SECONDS = {args.cooldown}",
    ]
    if args.trace_gc:
        lines.append(GC_TRACE)
    if args.concurrency is not None:
        lines.append(f"TRANSACTIONAL_CONCURRENCY = {args.concurrency}")
    if args.batch_size is not None:
        lines.append(f"TRANSACTIONAL_BATCH_SIZE = {args.batch_size}")
    (overlay / f"{OVERLAY_MODULE}.py").write_text("\n".join(lines) + "\n")
    return overlay


def copy_database(source: Path, target: Path) -> None:
    """A consistent copy of a SQLite database (WAL included), through the backup API."""
    src = sqlite3.connect(f"file:{source}?mode=ro", uri=True, timeout=30)
    dst = sqlite3.connect(target)
    try:
        src.backup(dst)
        dst.execute("PRAGMA journal_mode=WAL")
    finally:
        dst.close()
        src.close()


def read_db(database: Path, sql: str, params: tuple = ()) -> list[tuple]:
    con = sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=20)
    try:
        return con.execute(sql, params).fetchall()
    finally:
        con.close()


def db_statuses(database: Path) -> dict[str, int]:
    return dict(read_db(database, "SELECT status, COUNT(*) FROM transactional_message GROUP BY status"))


def db_messages(database: Path) -> dict[str, dict]:
    """Message-ID (normalized) -> the row's status, provider, created_at (epoch)."""
    rows = read_db(database, "SELECT message_id, status, provider, created_at, attempts "
                             "FROM transactional_message")
    return {_normalize_id(mid): {"status": status, "provider": provider,
                                 "created": parse_db_time(created), "attempts": attempts}
            for mid, status, provider, created, attempts in rows}


def db_attempts(database: Path) -> dict[tuple[str, str], int]:
    rows = read_db(database, "SELECT provider, outcome, COUNT(*) FROM transactional_attempt "
                             "GROUP BY provider, outcome ORDER BY provider, outcome")
    return {(provider, outcome): n for provider, outcome, n in rows}


def sent_attempts_per_message(database: Path) -> Counter:
    """How many messages have 0, 1, 2... attempts with outcome 'sent'."""
    rows = read_db(database, "SELECT COUNT(a.id) FROM transactional_message m LEFT JOIN "
                             "transactional_attempt a ON a.message_id = m.id AND a.outcome = 'sent' "
                             "GROUP BY m.id")
    return Counter(n for (n,) in rows)


def parse_db_time(value) -> float | None:
    """A datetime as Django stores it in SQLite (UTC text) -> epoch seconds."""
    if value is None or value == "":
        return None
    if isinstance(value, (int, float)):
        return float(value)
    parsed = datetime.fromisoformat(str(value).replace(" ", "T"))
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed.timestamp()


class StatePoller(threading.Thread):
    """Poll transactional_providerstate every 25 ms; keep each change with the time seen."""

    def __init__(self, database: Path) -> None:
        super().__init__(daemon=True, name="providerstate-poller")
        self.database = database
        self.stop_event = threading.Event()
        self.changes: list[tuple[float, dict]] = []
        self.table = None  # None: not looked yet; False: no such table; True: polled
        self.errors = 0

    def run(self) -> None:
        con = None
        last: dict[str, tuple] = {}
        try:
            while not self.stop_event.wait(0.025):
                try:
                    if con is None:
                        con = sqlite3.connect(f"file:{self.database}?mode=ro", uri=True, timeout=1)
                        con.row_factory = sqlite3.Row
                    if not self.table:
                        found = con.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND "
                                            "name = 'transactional_providerstate'").fetchone()
                        self.table = bool(found)
                        if not found:
                            continue
                    seen = time.time()
                    for row in con.execute("SELECT * FROM transactional_providerstate"):
                        row = dict(row)
                        key = str(row.get("provider"))
                        value = tuple(sorted((k, str(v)) for k, v in row.items()
                                             if k in ("state", "opened_at")))
                        if last.get(key) != value:
                            last[key] = value
                            self.changes.append((seen, row))
                except sqlite3.Error:
                    self.errors += 1
        finally:
            if con is not None:
                con.close()

    def stop(self) -> None:
        self.stop_event.set()
        self.join(5)


# ---------------------------------------------------------------------------
# Figures
# ---------------------------------------------------------------------------

def max_in_window(times: list[float], width: float = 1.0) -> tuple[int, float]:
    """The most times within any [t, t + width), and that window's start."""
    best, at, j = 0, times[0] if times else 0.0, 0
    for i, start in enumerate(times):
        while j < len(times) and times[j] < start + width:
            j += 1
        if j - i > best:
            best, at = j - i, start
    return best, at


def windows_above(times: list[float], limit: float, width: float = 1.0) -> int:
    """How many windows [t_i, t_i + width), one starting at each arrival, hold more than ``limit``."""
    return sum(1 for i, t in enumerate(times) if bisect.bisect_left(times, t + width) - i > limit)


def per_second(times: list[float]) -> list[int]:
    """Counts per second since the first time; the last (partial) second included."""
    if not times:
        return []
    first = times[0]
    counts = [0] * (int(times[-1] - first) + 1)
    for t in times:
        counts[int(t - first)] += 1
    return counts


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def wait_workers_alive(workers: list[subprocess.Popen], logs: list[Path], what: str) -> None:
    for proc, log in zip(workers, logs):
        if proc.poll() is not None:
            tail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
            raise BenchError(f"a worker exited with {proc.returncode} during {what}; {log}:\n{tail}")


def start_workers(env: dict[str, str], workdir: Path, tag: str, count: int):
    command = [sys.executable, "manage.py", "delivery_worker", "--no-reload", "--interval", "0.1"]
    logs = [workdir / f"worker-{tag}-{k}.log" for k in range(count)]
    return [spawn(command, env, log) for log in logs], logs


# ---------------------------------------------------------------------------
# Part 1: the rate limit
# ---------------------------------------------------------------------------

@dataclass
class RateRun:
    label: str
    limits: str
    n: int
    startup_s: float = 0.0
    drain_s: float = 0.0
    recorded_s: float = 0.0
    throughput: float = 0.0
    window_max: int = 0
    window_at: float = 0.0
    calendar_max: int = 0
    counts: list[int] = field(default_factory=list)
    times: list[float] = field(default_factory=list)
    gc: list[tuple[float, int, int, float]] = field(default_factory=list)
    attempts: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def run_rate(label: str, limits: str, queued_db: Path, args, clock: Clock, workdir: Path,
             overlay: Path) -> RateRun:
    n = args.n
    database = workdir / f"rate-{label}.sqlite3"
    copy_database(queued_db, database)
    out = RateRun(label, limits, n)
    esp = start_primary(args.latency)
    extra = {"TRANSACTIONAL_RATE_LIMITS": limits} if limits else {}
    env = Env(args, overlay, database, esp.base_url).environ(**extra)
    workers: list[subprocess.Popen] = []
    try:
        started = time.time()
        workers, logs = start_workers(env, workdir, f"rate-{label}", args.workers)
        last_count, last_progress = 0, time.monotonic()
        while (count := esp.count) < n:
            clock.check(f"draining the {label} run ({count}/{n} accepted)")
            if count != last_count:
                last_count, last_progress = count, time.monotonic()
            wait_workers_alive(workers, logs, f"the {label} run")
            if time.monotonic() - last_progress > args.stall_timeout:
                raise BenchError(f"{label} run: no message for {args.stall_timeout:.0f} s, "
                                 f"{count}/{n} accepted (lost?); see {logs[0]}")
            time.sleep(0.05)
        deadline = time.monotonic() + args.stall_timeout
        while (statuses := db_statuses(database)).get("sent", 0) < n:
            clock.check(f"waiting for the database of the {label} run")
            if time.monotonic() > deadline:
                raise BenchError(f"{label} run: the fake accepted {n} but the database shows {statuses}")
            time.sleep(0.05)
        out.recorded_s = time.time() - started
        time.sleep(0.5)  # let any late duplicate arrive
    finally:
        stop_all(workers)
        esp.stop()
    out.gc = gc_pauses(logs) if workers else []

    requests = esp.snapshot()
    messages = esp.messages
    ids = [_normalize_id(m.message_id) for m in messages]
    duplicates = len(ids) - len(set(ids))
    missing = {message_parts(i)[0] for i in range(n)} - {m.subject for m in messages}
    if len(messages) != n or duplicates or missing or None in ids:
        raise BenchError(f"{label} run: the fake accepted {len(messages)} posts for {n} messages: "
                         f"{duplicates} duplicate Message-ID(s), {len(missing)} missing subject(s)")
    rows = db_messages(database)
    if set(rows) != set(ids) or any(r["status"] != "sent" for r in rows.values()):
        raise BenchError(f"{label} run: database after the drain: {db_statuses(database)}; "
                         f"{len(set(rows) ^ set(ids))} Message-ID(s) differ from the fake's")
    providers = Counter(r["provider"] for r in rows.values())
    if set(providers) != {"mailgun"}:
        out.notes.append(f"FAIL  database provider of the sent messages: {dict(providers)} (all mailgun expected)")
    out.attempts = db_attempts(database)
    per_message = sent_attempts_per_message(database)
    if set(per_message) != {1}:
        out.notes.append(f"FAIL  'sent' attempts per message: {dict(per_message)} (exactly 1 expected)")
    refused = Counter(r.status for r in requests if r.status != 200)
    if refused:
        out.notes.append(f"NOTE  the fake answered {dict(refused)} to some requests")

    times = sorted(r.time for r in requests)
    out.startup_s = times[0] - started
    out.drain_s = times[-1] - started
    out.throughput = n / (times[-1] - times[0]) if times[-1] > times[0] else float("nan")
    out.window_max, at = max_in_window(times)
    out.window_at = at - times[0]
    out.calendar_max = max(Counter(int(t) for t in times).values())
    out.counts = per_second(times)
    out.times = times
    return out


def gap_figures(times: list[float], rate: float, window_at: float) -> list[str]:
    """Inter-arrival gaps overall and inside the fullest 1 s window."""
    gaps = [b - a for a, b in zip(times, times[1:])]
    if not gaps:
        return []
    lines = [f"inter-arrival gaps: median {statistics.median(gaps) * 1000:.1f} ms (1/limit = "
             f"{1000 / rate:.1f} ms), min {min(gaps) * 1000:.1f} ms, p1 {percentile(gaps, 0.01) * 1000:.1f} ms, "
             f"p99 {percentile(gaps, 0.99) * 1000:.1f} ms, max {max(gaps) * 1000:.1f} ms"]
    start = times[0] + window_at
    i = bisect.bisect_left(times, start)
    j = bisect.bisect_left(times, start + 1.0)
    inside = [b - a for a, b in zip(times[i:j], times[i + 1:j])]
    before = times[i] - times[i - 1] if i > 0 else float("nan")
    if inside:
        lines.append(f"fullest window [+{window_at:.3f} s, +1 s): {j - i} requests; the gap before its first "
                     f"request {before * 1000:.1f} ms; gaps inside: min {min(inside) * 1000:.1f} ms, "
                     f"median {statistics.median(inside) * 1000:.1f} ms; shortest 3: "
                     + ", ".join(f"{g * 1000:.1f}" for g in sorted(inside)[:3]) + " ms")
    return lines


def full_seconds(counts: list[int]) -> list[int]:
    """The per-second counts without the last, partial, second (unless it is the only one)."""
    return counts[:-1] if len(counts) > 1 else counts


# ---------------------------------------------------------------------------
# Part 2: failover
# ---------------------------------------------------------------------------

@dataclass
class FailoverRun:
    produced: int = 0
    producer_behind_s: float = 0.0
    t0: float = 0.0
    t1: float = 0.0
    started: float = 0.0
    flow_start: float = 0.0
    end: float = 0.0
    smtp_port: int = 0
    primary: list[Request] = field(default_factory=list)
    primary_accepted: list[tuple[float, str]] = field(default_factory=list)
    smtp: list[tuple[float, str | None, str | None]] = field(default_factory=list)
    rows: dict = field(default_factory=dict)
    attempts: dict = field(default_factory=dict)
    state_changes: list = field(default_factory=list)
    state_table: bool | None = None
    notes: list[str] = field(default_factory=list)
    recovered: bool = False


def run_failover(template: Path, args, clock: Clock, workdir: Path, overlay: Path) -> FailoverRun:
    out = FailoverRun()
    database = workdir / "failover.sqlite3"
    copy_database(template, database)
    stop_file = workdir / "failover.stop"
    esp = start_primary(args.latency)
    controller, smtp, port = start_smtp()
    out.smtp_port = port
    extra = {"EMAIL_PROVIDERS": "mailgun,smtp", "EMAIL_PROVIDER": None,
             "EMAIL_HOST": "127.0.0.1", "EMAIL_PORT": str(port)}
    if args.failover_limits:
        extra["TRANSACTIONAL_RATE_LIMITS"] = args.failover_limits
    env = Env(args, overlay, database, esp.base_url).environ(**extra)
    poller = StatePoller(database)
    poller.start()
    workers: list[subprocess.Popen] = []
    producer = None
    produced_json = workdir / "producer.out"
    try:
        out.started = time.time()
        producer = spawn([sys.executable, str(Path(__file__).resolve()), "--role", "produce",
                          "--produce-rate", str(args.produce_rate), "--stop-file", str(stop_file)],
                         env, produced_json)
        workers, logs = start_workers(env, workdir, "failover", args.workers)

        def alive(what: str) -> None:
            clock.check(what)
            wait_workers_alive(workers, logs, what)
            if producer.poll() is not None:
                raise BenchError(f"the producer exited with {producer.returncode} during {what}; "
                                 f"see {produced_json}:\n{produced_json.read_text(errors='replace')[-3000:]}")

        # Warm-up: mail flows through the primary.
        limit = time.monotonic() + args.stall_timeout
        while not esp.count:
            alive("waiting for the first message at the primary")
            if time.monotonic() > limit:
                raise BenchError(f"no message reached the primary within {args.stall_timeout:.0f} s; "
                                 f"see {logs[0]}")
            time.sleep(0.02)
        out.flow_start = esp.messages[0].received_at
        while time.time() < out.flow_start + args.warmup:
            alive("warming up")
            time.sleep(0.02)

        # The outage.
        out.t0 = time.time()
        esp.failing = True
        while time.time() < out.t0 + args.outage:
            alive("the primary's outage")
            time.sleep(0.02)
        esp.failing = False
        out.t1 = time.time()

        # Recovery: wait for mail through the primary, at most cooldown + stall timeout.
        limit = time.monotonic() + args.cooldown + args.stall_timeout
        while not any(r.time >= out.t1 and r.status == 200 for r in esp.snapshot()[-50:]):
            alive("waiting for the primary to be used again")
            if time.monotonic() > limit:
                out.notes.append(f"the primary got no mail within {args.cooldown + args.stall_timeout:.0f} s "
                                 "after it was healed")
                break
            time.sleep(0.02)
        else:
            out.recovered = True
        tail_end = time.time() + args.tail
        while time.time() < tail_end:
            alive("the tail")
            time.sleep(0.02)

        # Stop producing; drain the backlog (retries included) within the global timeout.
        stop_file.touch()
        try:
            producer.wait(max(1.0, min(30.0, clock.left())))
        except subprocess.TimeoutExpired:
            raise BenchError("the producer did not stop within 30 s") from None
        if producer.returncode != 0:
            raise BenchError(f"the producer failed ({producer.returncode}): "
                             f"{produced_json.read_text(errors='replace')[-3000:]}")
        result = json.loads(produced_json.read_text().strip().splitlines()[-1])
        out.produced, out.producer_behind_s = result["enqueued"], result["max_behind_s"]
        last_total, last_progress = -1, time.monotonic()
        while True:
            statuses = db_statuses(database)
            total = esp.count + len(smtp.snapshot())
            if total >= out.produced and statuses.get("sent", 0) >= out.produced:
                break
            if total != last_total:
                last_total, last_progress = total, time.monotonic()
            try:
                clock.check(f"draining the failover run ({total}/{out.produced} delivered, "
                            f"database {statuses})")
            except BenchError:
                raise BenchError(f"global --timeout reached: {out.produced - total} of {out.produced} "
                                 f"messages undelivered; database {statuses}") from None
            wait_workers_alive(workers, logs, "the failover drain")
            if time.monotonic() - last_progress > max(args.stall_timeout, 70):
                # Retries back off 15-30 s then 30-60 s (TRANSACTIONAL_RETRY_BASE_SECONDS=30).
                raise BenchError(f"failover run: no delivery for {max(args.stall_timeout, 70):.0f} s, "
                                 f"{total}/{out.produced} delivered, database {statuses} (lost?)")
            time.sleep(0.05)
        out.end = time.time()
        time.sleep(0.5)  # let any late duplicate arrive
    finally:
        stop_file.touch()
        stop_all([p for p in [producer, *workers] if p is not None])
        poller.stop()
        esp.stop()
        controller.stop()

    out.primary = esp.snapshot()
    out.primary_accepted = [(m.received_at, _normalize_id(m.message_id)) for m in esp.messages]
    out.smtp = smtp.snapshot()
    out.state_changes = poller.changes
    out.state_table = poller.table

    # Exactly once, none missing.
    delivered = [mid for _, mid in out.primary_accepted] + [mid for _, mid, _ in out.smtp]
    counts = Counter(delivered)
    duplicates = {mid: k for mid, k in counts.items() if k > 1}
    out.rows = db_messages(database)
    missing = set(out.rows) - set(counts)
    unknown = set(counts) - set(out.rows)
    if duplicates or missing or unknown or None in counts or len(out.rows) != out.produced:
        raise BenchError(
            f"failover run: {out.produced} enqueued, {len(out.rows)} rows, {len(out.primary_accepted)} "
            f"accepted by the primary + {len(out.smtp)} by the secondary: {len(duplicates)} Message-ID(s) "
            f"delivered more than once (e.g. {list(duplicates.items())[:3]}), {len(missing)} missing, "
            f"{len(unknown)} unknown, {counts.get(None, 0)} without a Message-ID")
    statuses = Counter(r["status"] for r in out.rows.values())
    if set(statuses) != {"sent"}:
        raise BenchError(f"failover run: database statuses {dict(statuses)}")
    where = {mid: "mailgun" for _, mid in out.primary_accepted} | {mid: "smtp" for _, mid, _ in out.smtp}
    wrong = Counter((where[mid], row["provider"]) for mid, row in out.rows.items()
                    if row["provider"] != where[mid])
    if wrong:
        out.notes.append("FAIL  database provider differs from the double that got the message: "
                         + ", ".join(f"{n} got by {got} recorded as {rec!r}" for (got, rec), n in wrong.items()))
    per_message = sent_attempts_per_message(database)
    if set(per_message) != {1}:
        out.notes.append(f"FAIL  'sent' attempts per message: {dict(per_message)} (exactly 1 expected)")
    out.attempts = db_attempts(database)
    return out


@dataclass
class FailoverFigures:
    first_smtp_s: float | None = None
    smtp_before_t0: int = 0
    delays: list[float] = field(default_factory=list)
    rejected: int = 0
    rejected_unmatched: int = 0
    after_t0: int = 0
    open_at: float | None = None  # seconds after T0
    before_open: int = 0
    bursts: list[tuple[float, int, list[int]]] = field(default_factory=list)  # start - T0, size, statuses
    db_open: list[tuple[float, str, str]] = field(default_factory=list)  # seen - T0, state, opened_at - T0
    recovery_s: float | None = None
    recovery_after_probe_s: float | None = None
    smtp_after_recovery: int = 0
    smtp_during: int = 0
    latency: dict[str, list[float]] = field(default_factory=dict)


def failover_figures(run: FailoverRun) -> FailoverFigures:
    f = FailoverFigures()
    t0, t1 = run.t0, run.t1
    smtp_times = sorted(t for t, _, _ in run.smtp)
    f.smtp_before_t0 = sum(1 for t in smtp_times if t < t0)
    after = [t for t in smtp_times if t >= t0]
    f.first_smtp_s = after[0] - t0 if after else None
    f.smtp_during = sum(1 for t in smtp_times if t0 <= t < t1)

    smtp_by_id = {mid: t for t, mid, _ in run.smtp}
    rejected = [r for r in run.primary if r.status != 200 and t0 <= r.time]
    f.rejected = len(rejected)
    for r in rejected:
        if r.message_id in smtp_by_id and smtp_by_id[r.message_id] >= r.time:
            f.delays.append(smtp_by_id[r.message_id] - r.time)
        else:
            f.rejected_unmatched += 1

    # The breaker, from the traffic: the first gap of >= 1 s in the primary's requests after T0.
    during = sorted(r.time for r in run.primary if t0 <= r.time < t1)
    f.after_t0 = len(during)
    if during:
        edges = during + [t1]
        for i, t in enumerate(during):
            if edges[i + 1] - t >= 1.0:
                f.open_at = t - t0
                f.before_open = i + 1
                break
        if f.open_at is not None:
            probes = [r for r in run.primary if t0 + f.open_at < r.time < t1]
            for r in sorted(probes, key=lambda r: r.time):
                if f.bursts and r.time - (t0 + f.bursts[-1][0]) < 0.5:
                    start, size, statuses = f.bursts[-1]
                    f.bursts[-1] = (start, size + 1, statuses + [r.status])
                else:
                    f.bursts.append((r.time - t0, 1, [r.status]))
    else:
        f.open_at = 0.0  # nothing reached the primary after T0 at all

    for seen, row in run.state_changes:
        if str(row.get("provider")) != "mailgun" or seen < t0 - 1:
            continue
        opened = parse_db_time(row.get("opened_at"))
        f.db_open.append((seen - t0, str(row.get("state")), "-" if opened is None else f"{opened - t0:+.3f}"))

    healed = sorted(t for t, _ in run.primary_accepted if t >= t1)
    if healed:
        f.recovery_s = healed[0] - t1
        f.smtp_after_recovery = sum(1 for t in smtp_times if t > healed[0] + 0.5)
        last_probe = max((t0 + start for start, _, _ in f.bursts), default=None)
        if last_probe is not None:
            f.recovery_after_probe_s = healed[0] - last_probe

    arrivals = {mid: t for t, mid in run.primary_accepted} | {mid: t for t, mid, _ in run.smtp}
    recovered_at = healed[0] if healed else t1
    phases = {"warm-up (before T0)": (0, t0), "outage (T0..T1)": (t0, t1),
              "T1..primary used again": (t1, recovered_at), "after recovery": (recovered_at, math.inf)}
    for name, (lo, hi) in phases.items():
        f.latency[name] = [arrivals[mid] - row["created"] for mid, row in run.rows.items()
                           if row["created"] is not None and lo <= row["created"] < hi and mid in arrivals]
    return f


# ---------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------

def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def fmt_s(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f} s"


def spread(values: list[float]) -> str:
    if not values:
        return "none"
    return (f"median {statistics.median(values) * 1000:.0f} ms, p99 {percentile(values, 0.99) * 1000:.0f} ms, "
            f"max {max(values) * 1000:.0f} ms ({len(values)} msgs)")


def attempts_line(attempts: dict) -> str:
    return ", ".join(f"{p or '?'}/{o}={n}" for (p, o), n in attempts.items()) or "none"


def print_header(args, used: dict, loads: list[float]) -> None:
    cpus = os.cpu_count() or 1
    print()
    print("Resilience benchmark: shared per-provider rate limit; failover with the circuit breaker")
    print(f"  code: {args.code_version}; python {sys.version.split()[0]}, {cpus} CPU(s)")
    print(f"  settings: {args.settings} + generated overlay, DEBUG={used['debug']}, TASKS backend: "
          f"{used['tasks']}, delivery backend (single provider): {used['delivery_backend']}")
    print(f"  workers: {args.workers} x `manage.py delivery_worker --no-reload --interval 0.1`, "
          f"LOG_LEVEL={args.worker_log_level}; TRANSACTIONAL_CONCURRENCY={used['concurrency']}, "
          f"TRANSACTIONAL_BATCH_SIZE={used['batch_size']}")
    print("  database: SQLite file (WAL), fresh per run; test doubles in this process on 127.0.0.1: "
          f"fake Mailgun (latency {args.latency * 1000:.0f} ms), aiosmtpd")
    print(f"  breaker settings (overlay): FAILURES={args.breaker_failures}, "
          f"WINDOW_SECONDS={args.breaker_window}, COOLDOWN_SECONDS={args.cooldown}")
    seen = used.get("seen", {})
    if seen:
        print("  provider/limit/breaker settings the workers see: "
              + "; ".join(f"{k}={v}" for k, v in seen.items()))
    for name, info in used.get("phase_settings", {}).items():
        extra = "; ".join(f"{k}={v}" for k, v in info.get("seen", {}).items()
                          if not k.startswith("TRANSACTIONAL_BREAKER"))
        print(f"  [{name}] EMAIL_PROVIDER={info.get('email_provider')}, delivery backend "
              f"{info.get('delivery_backend')}{'; ' + extra if extra else ''}")
    print(f"  load average (1 min) before: {loads[0]:.2f}, after: {loads[-1]:.2f} on {cpus} CPU(s)")
    if loads[0] > 0.5 * cpus:
        print("  WARNING: other processes were busy before the run started; figures may be noisy.")


def print_rate(args, base: RateRun | None, limited: RateRun) -> list[str]:
    rate = args.rate
    print()
    print(f"--- 1. rate limit: N={args.n}, {args.workers} workers, one provider (mailgun) " + "-" * 20)
    runs = [r for r in (base, limited) if r]
    labels = {"unlimited": "no limit", "limited": f"{limited.limits}"}
    head = "".join(f"{labels[r.label]:>22}" for r in runs)
    print(f"  {'':42}{head}")

    def row(name: str, cells: list[str]) -> None:
        print(f"  {name:42}" + "".join(f"{c:>22}" for c in cells))

    row("drain, worker start -> last arrival", [f"{r.drain_s:.2f} s" for r in runs])
    row("start-up, worker start -> first arrival", [f"{r.startup_s:.2f} s" for r in runs])
    row("all sent in the database at", [f"{r.recorded_s:.2f} s" for r in runs])
    row("throughput N / (last - first arrival)", [f"{r.throughput:.2f} msg/s" for r in runs])
    row("max requests in any 1 s sliding window", [f"{r.window_max} (at +{r.window_at:.2f} s)" for r in runs])
    row("max requests in a calendar second", [str(r.calendar_max) for r in runs])
    row("per-second counts min/median/max", [
        "{}/{:g}/{}".format(min(c), statistics.median(c), max(c)) if (c := full_seconds(r.counts)) else "n/a"
        for r in runs])
    print(f"  ratio limited / limit ({rate:g}/s)              {limited.throughput / rate:9.3f}")
    if base:
        print(f"  ratio limited / unlimited                   {limited.throughput / base.throughput:9.3f}"
              f"   (unlimited: {base.throughput / rate:.2f} x the limit)")
    above = windows_above(limited.times, rate)
    print(f"  1 s windows above the limit (one window starting at each arrival): {above} of "
          f"{len(limited.times)}")
    for line in gap_figures(limited.times, rate, limited.window_at):
        print(f"  {line}")
    if args.trace_gc:
        first, last = limited.times[0], limited.times[-1]
        long = [(t, k, g, d) for t, k, g, d in limited.gc if first <= t <= last and d >= 0.02]
        print("  worker GC pauses >= 20 ms during the limited run (--trace-gc): "
              + (", ".join(f"+{t - first:.3f} s {d * 1000:.0f} ms (worker {k}, gen {g})"
                           for t, k, g, d in long) or "none"))
    print("  per-second counts, limited run (s since the first arrival; last one partial):")
    for k in range(0, len(limited.counts), 20):
        print("    " + " ".join(f"{c:3d}" for c in limited.counts[k:k + 20]))
    for r in runs:
        print(f"  attempts [{labels[r.label]}]: {attempts_line(r.attempts)}")
        for note in r.notes:
            print(f"  {note} [{labels[r.label]}]")
    print(f"  verified: each of the {args.n} messages accepted exactly once by the fake (by Message-ID), "
          "every row 'sent' in the database")
    targets = [
        f"{verdict(0.95 * rate <= limited.throughput <= rate)}  limited throughput within 5% of "
        f"{rate:g}/s and not above (0.95 x .. 1 x): "
        f"{limited.throughput:.2f} msg/s ({limited.throughput / rate:.3f} x)",
        f"{verdict(limited.window_max <= rate)}  never above the limit: max {limited.window_max} requests "
        f"in a 1 s window (<= {rate:g}), {above} window(s) above; calendar-second max "
        f"{limited.calendar_max}",
    ]
    return targets


def print_failover(args, run: FailoverRun, f: FailoverFigures) -> list[str]:
    t0, t1 = run.t0, run.t1
    print()
    print(f"--- 2. failover: EMAIL_PROVIDERS=mailgun,smtp, {args.workers} workers, "
          f"{args.produce_rate:g} msg/s enqueued " + "-" * 12)
    print(f"  timeline: workers started, mail through the primary from +{run.flow_start - run.started:.2f} s; "
          f"T0 (primary -> 503) at +{t0 - run.started:.2f} s; T1 (healed) = T0 + {t1 - t0:.2f} s; "
          f"drained at T0 + {run.end - t0:.2f} s")
    print(f"  enqueued {run.produced} messages (producer at most {run.producer_behind_s * 1000:.0f} ms "
          f"behind its schedule); primary accepted {len(run.primary_accepted)}, secondary "
          f"{len(run.smtp)} (smtp on 127.0.0.1:{run.smtp_port})")
    print(f"  secondary arrivals before T0                 {f.smtp_before_t0:>8}")
    print(f"  T0 -> first message accepted by the secondary {fmt_s(f.first_smtp_s):>10}")
    print(f"  per-message failover delay (503 -> secondary) {spread(f.delays)}")
    if f.rejected_unmatched:
        print(f"    {f.rejected_unmatched} of the {f.rejected} rejected requests were not followed by the same "
              "Message-ID at the secondary (retried later through the primary?)")
    print(f"  primary requests T0..T1 (all answered 503)   {f.after_t0:>8}")
    if f.open_at is None:
        print("  breaker opened (traffic)                      never: no gap of >= 1 s in the primary's "
              "requests during the outage")
    else:
        print(f"  breaker opened (traffic: last request before the first >= 1 s gap) T0 + {f.open_at:.3f} s, "
              f"after {f.before_open} wasted call(s)")
    if f.bursts:
        print("  later calls during the outage (half-open probes; time after T0: requests):")
        print("    " + ", ".join(f"+{start:.2f} s: {size}" for start, size, _ in f.bursts))
        gaps = [b[0] - a[0] for a, b in zip(f.bursts, f.bursts[1:])]
        first_gap = f.bursts[0][0] - (f.open_at or 0)
        print(f"    first probe {first_gap:.2f} s after the breaker opened"
              + (f"; then every {', '.join(f'{g:.2f}' for g in gaps)} s" if gaps else ""))
    else:
        print("  later calls during the outage (half-open probes): none")
    if run.state_table is False:
        print("  transactional_providerstate: no such table")
    elif not f.db_open:
        print("  transactional_providerstate: no change seen for mailgun")
    else:
        print("  transactional_providerstate changes for mailgun (seen at T0+, state, opened_at T0+):")
        print("    " + "; ".join(f"{seen:+.3f} s {state} {opened}" for seen, state, opened in f.db_open[:12])
              + (f"; ... ({len(f.db_open)} changes)" if len(f.db_open) > 12 else ""))
    db_first_open = next((seen for seen, state, _ in f.db_open if state == "open" and seen >= 0), None)
    print(f"  T1 -> primary accepts mail again             {fmt_s(f.recovery_s):>10}"
          + (f"  ({f.recovery_after_probe_s:.2f} s after the last failed probe)"
             if f.recovery_after_probe_s is not None else ""))
    print(f"  secondary arrivals after the primary recovered (+0.5 s) {f.smtp_after_recovery:>5}")
    print("  end-to-end latency (enqueue -> accepted), by when the message was enqueued:")
    for name, values in f.latency.items():
        print(f"    {name:26} {spread(values)}")
    print(f"  attempts: {attempts_line(run.attempts)}")
    for note in run.notes:
        print(f"  {note}")
    print(f"  verified: each of the {run.produced} messages accepted exactly once across both doubles "
          "(by Message-ID), every row 'sent' in the database")

    threshold = args.breaker_failures
    targets = [
        f"{verdict(f.first_smtp_s is not None and f.first_smtp_s <= 2)}  failover: first secondary "
        f"acceptance <= 2 s after T0: {fmt_s(f.first_smtp_s)}",
        f"{verdict(bool(f.delays) and max(f.delays) <= 2 and not f.rejected_unmatched)}  every message "
        f"refused by the primary reached the secondary <= 2 s later: "
        + (f"max {max(f.delays):.3f} s" if f.delays else "none did")
        + (f", {f.rejected_unmatched} did not" if f.rejected_unmatched else ""),
    ]
    opened = f.open_at if f.open_at is not None else db_first_open
    targets.append(f"{verdict(opened is not None and opened <= 2)}  breaker open <= 2 s after T0: "
                   + ("never" if opened is None else f"{opened:.3f} s")
                   + (f" (database: {db_first_open:.3f} s)" if db_first_open is not None else ""))
    wasted = f.before_open if f.open_at is not None else f.after_t0
    targets.append(f"{verdict(wasted < args.workers * threshold)}  wasted calls before the breaker opened "
                   f"< {args.workers} workers x {threshold} (shared breaker): {wasted}")
    sizes = [size for _, size, _ in f.bursts]
    targets.append(f"{verdict(bool(sizes) and max(sizes) == 1)}  one request per half-open probe: "
                   f"{sizes or 'no probe seen'}")
    targets.append(f"{verdict(f.recovery_s is not None and f.recovery_s <= args.cooldown + 2)}  primary "
                   f"used again <= cooldown + 2 = {args.cooldown + 2:g} s after T1: {fmt_s(f.recovery_s)}")
    targets.append(f"{verdict(f.recovery_s is not None and f.smtp_after_recovery == 0)}  no secondary "
                   f"traffic once the primary is back: {f.smtp_after_recovery}")
    return targets


# ---------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------

def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Benchmark the shared rate limit and the failover/circuit breaker on loopback doubles.",
        epilog="See the module docstring for what is measured and the targets.",
    )
    parser.add_argument("--phases", default="rate,failover", help="rate, failover (default both)")
    parser.add_argument("--n", type=int, default=2000, help="messages for the rate-limit part (default 2000)")
    parser.add_argument("--workers", type=int, default=2, help="delivery_worker processes (default 2)")
    parser.add_argument("--rate", type=float, default=50, help="rate limit of part 1, per second (default 50)")
    parser.add_argument("--latency", type=float, default=0.0, help="fake Mailgun latency, seconds (default 0)")
    parser.add_argument("--produce-rate", type=float, default=50,
                        help="part 2: messages enqueued per second (default 50)")
    parser.add_argument("--warmup", type=float, default=3, help="part 2: seconds before T0 (default 3)")
    parser.add_argument("--outage", type=float, default=12, help="part 2: seconds from T0 to T1 (default 12)")
    parser.add_argument("--tail", type=float, default=3,
                        help="part 2: seconds after the primary is used again (default 3)")
    parser.add_argument("--cooldown", type=float, default=5,
                        help="TRANSACTIONAL_BREAKER_COOLDOWN_SECONDS (default 5)")
    parser.add_argument("--breaker-failures", type=int, default=5,
                        help="TRANSACTIONAL_BREAKER_FAILURES (default 5)")
    parser.add_argument("--breaker-window", type=float, default=60,
                        help="TRANSACTIONAL_BREAKER_WINDOW_SECONDS (default 60)")
    parser.add_argument("--failover-limits", default="",
                        help="TRANSACTIONAL_RATE_LIMITS during part 2 (default none)")
    parser.add_argument("--timeout", type=float, default=300, help="global bound, seconds (default 300)")
    parser.add_argument("--stall-timeout", type=float, default=40,
                        help="fail if no message arrives for this many seconds (default 40)")
    parser.add_argument("--worker-log-level", default="warning",
                        choices=["debug", "info", "warning", "error", "critical"])
    parser.add_argument("--debug", action="store_true", help="keep DEBUG on (default DEBUG=false)")
    parser.add_argument("--settings", default="settings.dev", help="base settings module (default settings.dev)")
    parser.add_argument("--concurrency", type=int, help="override TRANSACTIONAL_CONCURRENCY")
    parser.add_argument("--batch-size", type=int, help="override TRANSACTIONAL_BATCH_SIZE")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument("--trace-gc", action="store_true",
                        help="workers log their garbage-collection pauses (via the generated settings)")
    parser.add_argument("--dump-times", metavar="FILE",
                        help="write every request's arrival time (and status) per run to FILE as JSON")
    parser.add_argument("--role", choices=["enqueue", "produce", "settings"], help=argparse.SUPPRESS)
    parser.add_argument("--stop-file", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def _terminate(signum, frame) -> None:
    raise SystemExit(128 + signum)  # runs the finally blocks, which stop every subprocess


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.role == "enqueue":
        role_enqueue(args.n)
        return 0
    if args.role == "produce":
        role_produce(args.produce_rate, args.stop_file, 100_000)
        return 0
    if args.role == "settings":
        role_settings()
        return 0

    phases = {p.strip() for p in args.phases.split(",") if p.strip()}
    if not phases or phases - {"rate", "failover"}:
        print(f"--phases: choose among rate, failover (got {args.phases!r})", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _terminate)
    began = time.monotonic()
    clock = Clock(args.timeout)
    args.code_version = code_version()
    loads = [os.getloadavg()[0]]
    workdir = Path(tempfile.mkdtemp(prefix="bench_resilience-"))
    try:
        overlay = write_overlay(workdir, args)
        template = workdir / "template.sqlite3"
        env = Env(args, overlay, template)
        manage("migrate", "--no-input", "-v0", env=env.environ(), clock=clock)
        used = run_role("settings", env.environ(), clock)
        if used["email_backend"] != "transactional.backends.EmailBackend":
            raise BenchError(f"EMAIL_BACKEND is {used['email_backend']}, not the outbox")
        used["phase_settings"] = {}
        if "rate" in phases:
            used["phase_settings"]["rate, limited"] = run_role(
                "settings", env.environ(TRANSACTIONAL_RATE_LIMITS=f"mailgun={args.rate:g}/s"), clock)
        if "failover" in phases:
            extra = {"EMAIL_PROVIDERS": "mailgun,smtp", "EMAIL_PROVIDER": None,
                     "EMAIL_HOST": "127.0.0.1", "EMAIL_PORT": "2525"}
            if args.failover_limits:
                extra["TRANSACTIONAL_RATE_LIMITS"] = args.failover_limits
            used["phase_settings"]["failover"] = run_role("settings", env.environ(**extra), clock)
        print(f"Running in {workdir} ...", flush=True)
        targets: list[str] = []
        sections = []
        if "rate" in phases:
            queued = workdir / "queued.sqlite3"
            copy_database(template, queued)
            enq = run_role("enqueue", Env(args, overlay, queued).environ(), clock, "--n", str(args.n))
            if enq["accepted"] != args.n or db_statuses(queued) != {"queued": args.n}:
                raise BenchError(f"enqueue: accepted {enq['accepted']} of {args.n}; "
                                 f"database {db_statuses(queued)}")
            print(f"  enqueued {args.n} messages in {enq['seconds']:.1f} s", flush=True)
            base = run_rate("unlimited", "", queued, args, clock, workdir, overlay)
            print(f"  [no limit] drained in {base.drain_s:.1f} s ({base.throughput:.1f} msg/s)", flush=True)
            limited = run_rate("limited", f"mailgun={args.rate:g}/s", queued, args, clock, workdir, overlay)
            print(f"  [mailgun={args.rate:g}/s] drained in {limited.drain_s:.1f} s "
                  f"({limited.throughput:.1f} msg/s)", flush=True)
            sections.append(("rate", base, limited))
        if "failover" in phases:
            run = run_failover(template, args, clock, workdir, overlay)
            print(f"  [failover] {run.produced} messages, drained at T0 + {run.end - run.t0:.1f} s", flush=True)
            sections.append(("failover", run, failover_figures(run)))
        loads.append(os.getloadavg()[0])
        if args.dump_times:
            dump = {}
            for kind, a, b in sections:
                if kind == "rate":
                    dump.update({f"rate-{r.label}": r.times for r in (a, b) if r})
                else:
                    dump["failover"] = {"t0": a.t0, "t1": a.t1,
                                        "primary": [[r.time, r.status] for r in a.primary],
                                        "smtp": [t for t, _, _ in a.smtp]}
            Path(args.dump_times).write_text(json.dumps(dump))
        print_header(args, used, loads)
        for kind, a, b in sections:
            targets += print_rate(args, a, b) if kind == "rate" else print_failover(args, a, b)
        print()
        print("--- targets " + "-" * 66)
        for line in targets:
            print(f"  {line}")
        print(f"\n(benchmark wall time {time.monotonic() - began:.0f} s)")
        return 0
    except BenchError as error:
        print(f"\nBENCHMARK FAILED: {error}", file=sys.stderr)
        print(f"(files kept in {workdir})", file=sys.stderr)
        args.keep = True
        return 1
    finally:
        _stop_children()
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
