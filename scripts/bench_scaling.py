#!/usr/bin/env python
"""Scale-out benchmark: 1, 2, 4 workers on PostgreSQL (db worker) and on RQ/Redis.

Run from the project root::

    .venv/bin/python scripts/bench_scaling.py                       # db + rq, 1,2,4 workers, N=6000, 100 ms
    .venv/bin/python scripts/bench_scaling.py --engines db --workers 1,2 --n 500   # a quick try

For every engine and worker count (``--repeat`` times each, engines
interleaved so that a change in the machine's background load hits both):

1. A fresh PostgreSQL database ``bench_scaling_<pid>_<random>`` (on
   ``--postgres``, default postgres://postgres@127.0.0.1:5432/postgres,
   trust auth), ``manage.py migrate``. With ``rq``, Redis database
   ``--redis-url`` (default redis://127.0.0.1:6379/13; never 15, which the
   test suite uses) is flushed. Both are dropped / flushed afterwards.
2. A fake Mailgun in its own process (``python -m
   transactional.testing.fake_mailgun --latency L --record-file F``, via
   scripts/bench_delivery.py's FakeESP), answering every call after
   ``--latency`` seconds (default 0.1).
3. N messages (``--n``, default 6000: a steady window of 15 s or more at
   the best rate seen on 2 cores) enqueued by one process through the real
   outbox backend, ``EmailMultiAlternatives(...).send()`` one by one: the
   ~2 KB HTML + text receipts of scripts/bench_delivery.py (its ``--role
   enqueue``, so both benchmarks send the same mail), metering the sender's
   and PostgreSQL's CPU per message: the web side of the capacity plan.
4. k workers start at once:
     db: k x ``manage.py delivery_worker --no-reload --interval 0.1``
     rq: k x ``manage.py rqworker default --with-scheduler --job-class django_tasks_rq.backend.Job``
     db-procs (only with ``--engines``; needs a delivery_worker that has
       ``--processes``): ONE ``manage.py delivery_worker --processes k ...``
   The drain is timed from their start to the last message the fake
   accepted ("wall"), and from the first to the last accepted message
   ("steady", excluding start-up; the figure the scaling is judged on).
5. Checks (any failure: "FAILED" in the table, exit status 1): the fake
   accepted exactly N posts, N distinct Message-IDs, every subject, and the
   same Message-IDs the database holds; in the database every message is
   ``sent`` with ``attempts`` = 1 and one attempt row (outcome ``sent``),
   every recipient ``sent`` with an ESP id.

Measured besides the rates, between the first and the last accepted message
(the steady window):

- CPU per message (ms) of the workers (each worker's whole process tree:
  RQ's work horses and scheduler included), of the fake ESP, of this
  database's PostgreSQL backends, of the PostgreSQL server's own processes,
  of redis-server, and of the machine (/proc/stat); the window's
  utilisation of each in cores, and "other": busy time no listed process
  explains (other people's work on a shared machine). Where the ceiling is
  comes from these: a machine busy at ~100% of its cores is CPU-bound, and
  the biggest consumer is what to add cores for.
- In-worker latency, claimed -> accepted (Attempt.started_at to the fake's
  arrival stamp) and accepted -> recorded (to Attempt.finished_at), p50/p99.
  Queued -> accepted is not reported: the whole backlog is enqueued before
  the workers start, so it is only the position in the queue / the rate.
- Messages sent per worker (db: django-tasks-db's task rows; rq: RQ's job
  results) and delivery runs; PostgreSQL commits and rows written per
  message (pg_stat_database of the benchmark database), most connections to
  it at once; Redis commands per message (server-wide counter); peak RSS of
  each worker tree's largest process.

Flags:
  --engines db,rq        which engines (default db,rq; db-procs as well on request)
  --workers 1,2,4        worker counts (default 1,2,4)
  --n N                  messages per run (default 6000)
  --latency S            fake ESP latency in seconds (default 0.1)
  --repeat R             run every configuration R times (default 1)
  --settings MODULE      default settings.prod, with a complete fake environment
  --concurrency C, --batch-size B
                         override TRANSACTIONAL_CONCURRENCY / _BATCH_SIZE
                         (a generated settings module layered on --settings)
  --db-interval S        delivery_worker --interval (default 0.1, as bench_delivery.py)
  --worker-log-level L   LOG_LEVEL of the workers (default warning)
  --postgres URL, --redis-url URL
  --idle-below C, --idle-wait S
                         before each drain, wait up to S s (default 120) until
                         the machine uses < C cores (default 0.3): others'
                         benchmarks on a shared machine depress the rates
  --stall-timeout S      fail a run if nothing arrives for S seconds (default 60)
  --keep                 keep the temporary directory (logs, record files)
                         and the databases, for debugging
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

# scripts/ is not a package: bench_delivery.py is imported as a top-level module.
import bench_delivery
from bench_delivery import API_KEY, SENDER_DOMAIN, BenchError, FakeESP, message_parts

CLOCK_TICK = os.sysconf("SC_CLK_TCK")
DB_TASKS_TABLE = "django_tasks_database_dbtaskresult"
SCAN_SECONDS = 0.25  # how often the process table is read during a drain
OVERLAY_SETTINGS = "bench_scaling_settings"
#: engine -> (TASKS_BACKEND, what runs). db-procs: ONE `delivery_worker --processes k`
#: (a newer delivery_worker forks k copies of its loop), instead of k commands.
ENGINES = {
    "db": ("db", "k x `manage.py delivery_worker`"),
    "rq": ("rq", "k x `manage.py rqworker`"),
    "db-procs": ("db", "1 x `manage.py delivery_worker --processes k`"),
}


# ---------------------------------------------------------------------------
# Subprocess role (this script re-run with --role)
# ---------------------------------------------------------------------------

def role_settings() -> None:
    """Print the settings a worker runs with."""
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.conf import settings

    from transactional import ratelimit
    from transactional.conf import DEFAULTS, get_setting

    database = settings.DATABASES["default"]
    # Whatever of these the code under test still has (it changes under this benchmark).
    names = ["CONCURRENCY", "BATCH_SIZE", "RUN_SECONDS", "LEASE_SECONDS", "SWEEP_INTERVAL_SECONDS",
             "MAX_ATTEMPTS", "RATE_LIMIT_STORE"]
    rates = getattr(ratelimit, "configured_rates", lambda: "?")
    print(json.dumps({
        "settings": os.environ.get("DJANGO_SETTINGS_MODULE"), "debug": settings.DEBUG,
        "email_backend": settings.EMAIL_BACKEND,
        "delivery_backend": getattr(settings, "TRANSACTIONAL_DELIVERY_BACKEND", "?"),
        "tasks": settings.TASKS["default"]["BACKEND"], "log_level": getattr(settings, "LOG_LEVEL", "?"),
        "db_engine": database["ENGINE"], "conn_max_age": database.get("CONN_MAX_AGE"),
        "rate_limits": rates() or "none",
        **{f"TRANSACTIONAL_{name}": get_setting(name) for name in names
           if name in DEFAULTS or hasattr(settings, f"TRANSACTIONAL_{name}")},
    }, default=str))


# ---------------------------------------------------------------------------
# CPU accounting from /proc
# ---------------------------------------------------------------------------

@dataclass
class Proc:
    comm: str
    ppid: int
    cpu: float  # utime + stime
    reaped: float  # cutime + cstime: children that exited and were waited for
    rss_peak_kb: int = 0


@dataclass
class Snapshot:
    at: float
    procs: dict[int, Proc]
    cmdlines: dict[int, str]  # postgres processes only
    busy: float  # machine CPU seconds, all cores
    self_cpu: float

    def children(self) -> dict[int, list[int]]:
        kids: dict[int, list[int]] = {}
        for pid, proc in self.procs.items():
            kids.setdefault(proc.ppid, []).append(pid)
        return kids

    def tree(self, pid: int, kids: dict[int, list[int]]) -> list[int]:
        found, todo = [], [pid]
        while todo:
            current = todo.pop()
            if current in self.procs:
                found.append(current)
                todo.extend(kids.get(current, []))
        return found

    def tree_cpu(self, pid: int, kids: dict[int, list[int]]) -> float:
        """CPU of a process and all its descendants, living or reaped."""
        pids = self.tree(pid, kids)
        return sum(self.procs[p].cpu for p in pids) + sum(self.procs[p].reaped for p in pids)


def machine_busy() -> float:
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / CLOCK_TICK  # without guest time (counted in user)


def wait_for_quiet(below: float, patience: float) -> float:
    """Wait (at most ``patience`` s) until the machine uses < ``below`` cores; return the last reading.

    Others may run benchmarks on the same machine: their CPU would depress
    our rates. Each reading is the busy CPU over 2 s.
    """
    deadline = time.monotonic() + patience
    while True:
        before = machine_busy()
        time.sleep(2)
        busy = (machine_busy() - before) / 2
        if busy < below or time.monotonic() >= deadline:
            return busy


def self_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def scan(rss_of: set[int] | None = None) -> Snapshot:
    """Read every process's CPU times (and the cmdline of postgres processes)."""
    procs, cmdlines = {}, {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        try:
            raw = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        comm = raw[raw.index("(") + 1:raw.rindex(")")]
        f = raw[raw.rindex(")") + 2:].split()
        procs[pid] = Proc(comm, int(f[1]), (int(f[11]) + int(f[12])) / CLOCK_TICK,
                          (int(f[13]) + int(f[14])) / CLOCK_TICK)
        if comm == "postgres":
            try:
                cmdlines[pid] = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                pass
        if rss_of and pid in rss_of:
            procs[pid].rss_peak_kb = bench_delivery.vm_hwm_kb(pid) or 0
    return Snapshot(time.time(), procs, cmdlines, machine_busy(), self_cpu())


CLIENT_BACKEND = re.compile(r"\(\d+\)|\[local\]")


class CpuMeter:
    """CPU used between start() and stop(), by group, from /proc snapshots."""

    GROUPS = ("workers", "fake ESP", "postgres (this db)", "postgres (server)", "redis-server",
              "benchmark", "other")

    def __init__(self, workers: list[int], esp: int, dbname: str) -> None:
        self.workers, self.esp, self.dbname = workers, esp, dbname
        self.first: Snapshot | None = None
        self.pg_first: dict[int, float] = {}
        self.pg_last: dict[int, tuple[str, float]] = {}
        self.backends_max = 0
        #: Per worker: the peak RSS of the largest process in its tree (a work horse, for RQ).
        self.rss_peak_kb = [0] * len(workers)

    def _pg_kind(self, cmdline: str) -> str | None:
        if f" {self.dbname} " in cmdline:
            return "postgres (this db)"
        if CLIENT_BACKEND.search(cmdline):
            return None  # a client of another database: someone else's work ("other")
        return "postgres (server)"

    def _see(self, snap: Snapshot) -> None:
        """Remember the latest CPU of postgres processes (a backend may exit before stop())."""
        ours = 0
        for pid, cmdline in snap.cmdlines.items():
            kind = self._pg_kind(cmdline)
            if kind and pid in snap.procs:
                self.pg_last[pid] = (kind, snap.procs[pid].cpu)
                ours += kind == "postgres (this db)"
        self.backends_max = max(self.backends_max, ours)
        kids = snap.children()
        for k, pid in enumerate(self.workers):
            peak = max((snap.procs[p].rss_peak_kb for p in snap.tree(pid, kids)), default=0)
            self.rss_peak_kb[k] = max(self.rss_peak_kb[k], peak)

    def _worker_pids(self, snap: Snapshot) -> set[int]:
        kids = snap.children()
        return {p for pid in self.workers for p in snap.tree(pid, kids)}

    def tick(self) -> None:
        self._see(scan(self._worker_pids(self.first or scan())))

    def start(self) -> None:
        self.first = scan()
        self.first = scan(self._worker_pids(self.first))
        self._see(self.first)
        self.pg_first = {pid: cpu for pid, (_, cpu) in self.pg_last.items()}

    def stop(self) -> dict[str, float]:
        """Return CPU seconds per group over the window, plus "_seconds" and "_busy"."""
        last = scan(self._worker_pids(self.first))
        self._see(last)
        first = self.first
        k0, k1 = first.children(), last.children()
        used = {group: 0.0 for group in self.GROUPS}
        used["workers"] = sum(last.tree_cpu(p, k1) - first.tree_cpu(p, k0) for p in self.workers)
        used["fake ESP"] = last.tree_cpu(self.esp, k1) - first.tree_cpu(self.esp, k0)
        for pid, (kind, cpu) in self.pg_last.items():
            used[kind] += cpu - self.pg_first.get(pid, 0.0)
        for pid, proc in last.procs.items():
            if proc.comm == "redis-server":
                used["redis-server"] += proc.cpu - (first.procs[pid].cpu if pid in first.procs else 0.0)
        used["benchmark"] = last.self_cpu - first.self_cpu
        busy = last.busy - first.busy
        used["other"] = max(0.0, busy - sum(used.values()))
        used["_seconds"] = last.at - first.at
        used["_busy"] = busy
        return used


# ---------------------------------------------------------------------------
# PostgreSQL and Redis
# ---------------------------------------------------------------------------

def pg_url(base: str, dbname: str) -> str:
    parts = urlsplit(base)
    return parts._replace(path=f"/{dbname}").geturl()


def pg_connect(url: str) -> psycopg.Connection:
    return psycopg.connect(url, autocommit=True, connect_timeout=10)


def pg_stats(url: str, dbname: str) -> dict[str, int]:
    """This database's commit and row counters, and the server's WAL position (bytes)."""
    with pg_connect(url) as con:
        row = con.execute(
            "SELECT xact_commit, xact_rollback, tup_inserted + tup_updated + tup_deleted, "
            "pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::bigint "
            "FROM pg_stat_database WHERE datname = %s", (dbname,)).fetchone()
    return {"commits": row[0], "rollbacks": row[1], "rows_written": row[2], "wal": row[3]}


def pg_sizes(con: psycopg.Connection) -> dict[str, int]:
    """Bytes on disk (with indexes and TOAST) of the outbox tables and of the whole database."""
    tables = ["transactional_message", "transactional_recipient", "transactional_attempt", DB_TASKS_TABLE]
    sizes = {table: con.execute("SELECT pg_total_relation_size(%s)", (table,)).fetchone()[0] for table in tables}
    sizes["database"] = con.execute("SELECT pg_database_size(current_database())").fetchone()[0]
    return sizes


def redis_usage(client: redis.Redis) -> tuple[int, int]:
    """Keys in the benchmark's Redis database and the bytes they use (MEMORY USAGE)."""
    keys = list(client.scan_iter(count=1000))
    return len(keys), sum(client.memory_usage(key) or 0 for key in keys)


def redis_commands(client: redis.Redis) -> int:
    return int(client.info("stats")["total_commands_processed"])


# ---------------------------------------------------------------------------
# One run
# ---------------------------------------------------------------------------

@dataclass
class Run:
    engine: str
    workers: int
    n: int
    repeat: int
    error: str = ""
    #: per message: ms (wall), cpu_ms (enqueuer), pg_cpu_ms, commits, rows (written), wal (bytes)
    enqueue: dict[str, float] = field(default_factory=dict)
    startup_s: float = 0.0
    drain_s: float = 0.0
    steady_s: float = 0.0
    recorded_s: float = 0.0
    wall_rate: float = 0.0
    steady_rate: float = 0.0
    cpu: dict[str, float] = field(default_factory=dict)
    claim_to_accept_ms: tuple[float, float] = (0.0, 0.0)
    accept_to_record_ms: tuple[float, float] = (0.0, 0.0)
    per_worker: list[int] = field(default_factory=list)
    runs: int = 0
    commits_per_msg: float = 0.0
    rows_per_msg: float = 0.0
    backends_max: int = 0
    wal_per_msg: float = 0.0
    #: bytes on disk after the drain (before any vacuum), per table and for the database
    sizes: dict[str, int] = field(default_factory=dict)
    #: RQ: keys and bytes in its Redis database after the drain
    redis_keys: tuple[int, int] = (0, 0)
    redis_per_msg: float | None = None
    rss_mb: list[float] = field(default_factory=list)
    idle_before: float = 0.0  # machine cores busy just before the workers started
    loads: tuple[float, float] = (0.0, 0.0)

    @property
    def ok(self) -> bool:
        return not self.error


def write_overlay(workdir: Path, args) -> Path | None:
    """Write a settings module layered on --settings with the overrides (None: no overrides)."""
    if args.concurrency is None and args.batch_size is None:
        return None
    overlay = workdir / "overlay"
    overlay.mkdir()
    (overlay / f"{OVERLAY_SETTINGS}.py").write_text(bench_delivery.outbox_settings(args))
    return overlay


def environment(args, engine: str, database_url: str, esp_url: str, overlay: Path | None,
                **extra: str) -> dict[str, str]:
    """A complete settings.prod environment against the fake ESP (no real secret anywhere)."""
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": os.environ.get("HOME", "/tmp"),
        "LANG": os.environ.get("LANG", "C.UTF-8"),
        "DJANGO_SETTINGS_MODULE": OVERLAY_SETTINGS if overlay else args.settings,
        "SECRET_KEY": "bench-only-not-a-secret-" + "x" * 40,
        "ALLOWED_HOSTS": "localhost",
        "DEBUG": "false",
        "DATABASE_URL": database_url,
        "EMAIL_PROVIDER": "mailgun",
        "MAILGUN_API_KEY": API_KEY,
        "MAILGUN_SENDER_DOMAIN": SENDER_DOMAIN,
        "MAILGUN_API_URL": esp_url,
        "DEFAULT_FROM_EMAIL": bench_delivery.FROM,
        "TASKS_BACKEND": ENGINES[engine][0],
        "REDIS_URL": args.redis_url,
        "LOG_LEVEL": "warning",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), str(overlay or ""),
                                                    os.environ.get("PYTHONPATH", "")])),
    }
    env.update(extra)
    return env


def worker_commands(engine: str, workers: int, args, tag: str) -> list[list[str]]:
    """The command lines that make ``workers`` workers of ``engine``."""
    db = [sys.executable, "manage.py", "delivery_worker", "--no-reload", "--interval", str(args.db_interval)]
    if engine == "db":
        return [[*db, "--worker-id", f"{tag}-w{k}"] for k in range(workers)]
    if engine == "db-procs":
        return [[*db, "--processes", str(workers), "--worker-id", f"{tag}-w"]]
    return [[sys.executable, "manage.py", "rqworker", "default", "--with-scheduler",
             "--job-class", "django_tasks_rq.backend.Job", "--name", f"{tag}-w{k}"] for k in range(workers)]


def stop_processes(procs: list[subprocess.Popen], grace: float = 30) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def percentiles(values: list[float]) -> tuple[float, float]:
    if len(values) < 2:
        return (values[0], values[0]) if values else (float("nan"), float("nan"))
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    return cuts[49], cuts[98]


def verify(run: Run, records: list[dict], con: psycopg.Connection) -> dict[str, dict]:
    """Raise BenchError unless each message was accepted once and recorded sent once."""
    n = run.n
    ids = [r.get("message_id") for r in records]
    by_id = {r["message_id"]: r for r in records if r.get("message_id")}
    missing = {message_parts(i)[0] for i in range(n)} - {r.get("subject") for r in records}
    problems = []
    if len(records) != n:
        problems.append(f"the ESP accepted {len(records)} posts for {n} messages")
    if len(by_id) != len(ids):
        problems.append(f"{len(ids) - len(by_id)} duplicate or missing Message-ID(s) at the ESP")
    if missing:
        problems.append(f"{len(missing)} subject(s) never reached the ESP")
    statuses = dict(con.execute("SELECT status, COUNT(*) FROM transactional_message GROUP BY status").fetchall())
    if statuses != {"sent": n}:
        problems.append(f"message statuses {statuses} (expected {{'sent': {n}}})")
    checks = {
        "messages with attempts != 1": "SELECT COUNT(*) FROM transactional_message WHERE attempts != 1",
        "attempt rows": "SELECT COUNT(*) FROM transactional_attempt",
        "attempts not sent": "SELECT COUNT(*) FROM transactional_attempt WHERE outcome != 'sent'",
        "recipients not sent or without an ESP id": "SELECT COUNT(*) FROM transactional_recipient "
        "WHERE status != 'sent' OR esp_message_id = ''",
    }
    found = {name: con.execute(sql).fetchone()[0] for name, sql in checks.items()}
    if found.pop("attempt rows") != n:
        problems.append(f"attempt rows != {n}")
    problems += [f"{count} {name}" for name, count in found.items() if count]
    rows = con.execute(
        "SELECT m.message_id, a.started_at, a.finished_at FROM transactional_message m "
        "JOIN transactional_attempt a ON a.message_id = m.id").fetchall()
    db_ids = {row[0] for row in rows}
    if db_ids != set(by_id):
        problems.append(f"{len(db_ids - set(by_id))} Message-ID(s) in the database not accepted by the "
                        f"ESP, {len(set(by_id) - db_ids)} accepted but not in the database")
    if problems:
        raise BenchError("; ".join(problems))
    return {row[0]: {"claimed": row[1].timestamp(), "finished": row[2].timestamp() if row[2] else None,
                     "accepted": by_id[row[0]]["time"]} for row in rows}


def per_worker_db(con: psycopg.Connection) -> tuple[list[int], int]:
    """Messages sent per worker id (the deliver tasks' return values), and the number of runs."""
    rows = con.execute(
        f"SELECT worker_ids, return_value FROM {DB_TASKS_TABLE} "
        "WHERE task_path LIKE %s AND status = 'SUCCESSFUL'", ("%.deliver",)).fetchall()
    sent: dict[str, int] = {}
    for worker_ids, value in rows:
        if worker_ids and isinstance(value, int):
            sent[worker_ids[-1]] = sent.get(worker_ids[-1], 0) + value
    return [sent[name] for name in sorted(sent)], len(rows)


def per_worker_rq(client: redis.Redis) -> tuple[list[int], int]:
    """Messages sent per RQ worker (the deliver jobs' results), and the number of runs."""
    from rq import Queue
    from rq.job import Job
    from rq.registry import FinishedJobRegistry

    queue = Queue("default", connection=client)
    ids = FinishedJobRegistry(queue=queue).get_job_ids()
    sent: dict[str, int] = {}
    runs = 0
    for job in Job.fetch_many(ids, connection=client):
        if job is None or not job.func_name.endswith(".deliver"):
            continue
        runs += 1
        for result in job.results():
            if isinstance(result.return_value, int):
                sent[result.worker_name] = sent.get(result.worker_name, 0) + result.return_value
    return [sent[name] for name in sorted(sent)], runs


@dataclass
class Target:
    """What one run works on: its database, Redis, fake ESP and files."""

    engine: str
    tag: str
    dbname: str
    database_url: str
    workdir: Path
    rclient: redis.Redis | None = None
    esp: FakeESP | None = None
    env: dict[str, str] = field(default_factory=dict)


def enqueue(run: Run, target: Target, args) -> None:
    """Enqueue N messages through the outbox (bench_delivery.py's role), metering PostgreSQL."""
    meter = CpuMeter([], target.esp.proc.pid, target.dbname)
    before = pg_stats(target.database_url, target.dbname)
    meter.start()
    with ThreadPoolExecutor(1) as pool:
        future = pool.submit(bench_delivery.run_role, "enqueue", args.n, target.env)
        while not future.done():
            meter.tick()
            wait([future], SCAN_SECONDS)
    cpu = meter.stop()
    enq = future.result()
    if enq["accepted"] != args.n:
        raise BenchError(f"the outbox accepted {enq['accepted']} of {args.n} messages")
    time.sleep(0.2)  # the enqueuer's backend flushes its statistics as it exits
    after = pg_stats(target.database_url, target.dbname)
    run.enqueue = {
        "ms": enq["seconds"] * 1000 / args.n,
        "cpu_ms": enq["cpu"] * 1000 / args.n,
        "pg_cpu_ms": cpu["postgres (this db)"] * 1000 / args.n,
        "commits": (after["commits"] - before["commits"]) / args.n,
        "rows": (after["rows_written"] - before["rows_written"]) / args.n,
        "wal": (after["wal"] - before["wal"]) / args.n,
    }
    with pg_connect(target.database_url) as con:
        queued = con.execute("SELECT COUNT(*) FROM transactional_message WHERE status = 'queued'").fetchone()[0]
    if queued != args.n:
        raise BenchError(f"expected {args.n} queued messages after enqueue, found {queued}")


def drain(run: Run, target: Target, args, overlay: Path | None, stack: contextlib.ExitStack,
          procs: list[subprocess.Popen]) -> float:
    """Start the workers, wait until the ESP has every message and the database says sent.

    Returns the workers' start time; fills in the CPU figures.
    """
    worker_env = environment(args, target.engine, target.database_url, target.esp.url, overlay,
                             LOG_LEVEL=args.worker_log_level)
    run.idle_before = wait_for_quiet(args.idle_below, args.idle_wait)
    commands = worker_commands(target.engine, run.workers, args, target.tag)
    logs = [stack.enter_context((target.workdir / f"worker-{target.tag}-{k}.log").open("w"))
            for k in range(len(commands))]
    started = time.time()
    procs.extend(subprocess.Popen(command, cwd=ROOT, env=worker_env, stdout=log, stderr=subprocess.STDOUT)
                 for command, log in zip(commands, logs, strict=True))
    meter = CpuMeter([p.pid for p in procs], target.esp.proc.pid, target.dbname)
    last_count, last_progress, next_scan = 0, time.monotonic(), 0.0
    while (count := target.esp.poll()) < args.n:
        now = time.monotonic()
        if count and meter.first is None:
            meter.start()  # the steady window opens at the first accepted message
        elif meter.first is not None and now >= next_scan:
            meter.tick()
            next_scan = now + SCAN_SECONDS
        if count != last_count:
            last_count, last_progress = count, now
        if dead := [p for p in procs if p.poll() is not None]:
            raise BenchError(f"a worker exited with {dead[0].returncode} after {count}/{args.n} "
                             f"messages; see {logs[procs.index(dead[0])].name}")
        if now - last_progress > args.stall_timeout:
            raise BenchError(f"no progress for {args.stall_timeout:.0f} s: {count}/{args.n} accepted")
        time.sleep(0.02)
    if meter.first is None:
        meter.start()
    run.cpu = meter.stop()
    run.backends_max = meter.backends_max
    deadline = time.monotonic() + args.stall_timeout
    with pg_connect(target.database_url) as con:
        while con.execute("SELECT COUNT(*) FROM transactional_message WHERE status = 'sent'").fetchone()[0] < args.n:
            if time.monotonic() > deadline:
                raise BenchError(f"the ESP accepted {args.n} but the database shows fewer sent")
            time.sleep(0.02)
    run.recorded_s = time.time() - started
    time.sleep(0.5)  # a late duplicate would arrive now
    meter.tick()
    run.rss_mb = [kb / 1024 for kb in meter.rss_peak_kb]
    return started


def collect(run: Run, target: Target, args, started: float, stats_before: dict[str, int],
            redis_before: int) -> None:
    """Verify the drain and read the figures the database, Redis and the ESP's records hold."""
    target.esp.poll()
    records = list(target.esp.records)
    with pg_connect(target.database_url) as con:
        times = verify(run, records, con)
        run.sizes = pg_sizes(con)
        if target.rclient is None:
            run.per_worker, run.runs = per_worker_db(con)
    if target.rclient is not None:
        run.per_worker, run.runs = per_worker_rq(target.rclient)
        run.redis_per_msg = (redis_commands(target.rclient) - redis_before) / args.n
        run.redis_keys = redis_usage(target.rclient)
    time.sleep(0.2)  # the workers' backends flush their statistics as they exit
    stats_after = pg_stats(target.database_url, target.dbname)
    run.commits_per_msg = (stats_after["commits"] - stats_before["commits"]) / args.n
    run.rows_per_msg = (stats_after["rows_written"] - stats_before["rows_written"]) / args.n
    run.wal_per_msg = (stats_after["wal"] - stats_before["wal"]) / args.n

    arrivals = sorted(r["time"] for r in records)
    run.startup_s = arrivals[0] - started
    run.drain_s = arrivals[-1] - started
    run.steady_s = arrivals[-1] - arrivals[0]
    run.wall_rate = args.n / run.drain_s
    run.steady_rate = (args.n - 1) / run.steady_s
    run.claim_to_accept_ms = percentiles([(t["accepted"] - t["claimed"]) * 1000 for t in times.values()])
    run.accept_to_record_ms = percentiles([(t["finished"] - t["accepted"]) * 1000
                                           for t in times.values() if t["finished"]])


def run_one(engine: str, workers: int, repeat: int, args, workdir: Path, overlay: Path | None) -> Run:
    """One engine x worker count: fresh database, enqueue, drain, verify, clean up."""
    run = Run(engine, workers, args.n, repeat)
    tag = f"{engine}-{workers}w-r{repeat}"
    dbname = f"bench_scaling_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    target = Target(engine, tag, dbname, pg_url(args.postgres, dbname), workdir,
                    redis.Redis.from_url(args.redis_url) if ENGINES[engine][0] == "rq" else None)
    procs: list[subprocess.Popen] = []
    run.loads = (os.getloadavg()[0], 0.0)
    with pg_connect(args.postgres) as admin:
        admin.execute(f'CREATE DATABASE "{dbname}"')
    try:
        with contextlib.ExitStack() as stack:
            if target.rclient is not None:
                target.rclient.flushdb()
            target.esp = FakeESP(args.latency, workdir / f"esp-{tag}.jsonl", workdir / f"esp-{tag}.log")
            target.env = environment(args, engine, target.database_url, target.esp.url, overlay)
            bench_delivery.manage("migrate", "--no-input", "-v0", env=target.env)
            enqueue(run, target, args)
            stats_before = pg_stats(target.database_url, dbname)
            redis_before = redis_commands(target.rclient) if target.rclient is not None else 0
            try:
                started = drain(run, target, args, overlay, stack, procs)
            finally:
                stop_processes(procs)
            collect(run, target, args, started, stats_before, redis_before)
    except BenchError as error:
        run.error = str(error)
    finally:
        stop_processes(procs)
        if target.esp is not None:
            target.esp.stop()
        if not args.keep:
            with pg_connect(args.postgres) as admin:
                admin.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
            if target.rclient is not None:
                target.rclient.flushdb()
        else:
            print(f"  (kept database {dbname})", flush=True)
        if target.rclient is not None:
            target.rclient.close()
    run.loads = (run.loads[0], os.getloadavg()[0])
    return run


# ---------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------

def machine_description() -> str:
    model = "unknown CPU"
    try:
        model = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                     if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    try:
        kb = int(next(line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines()
                      if line.startswith("MemTotal")))
        memory = f"{kb / 1024 / 1024:.1f} GB RAM"
    except (OSError, StopIteration):
        memory = "RAM unknown"
    return f"{os.cpu_count()} CPU(s) ({model}), {memory}, {platform.system()} {platform.release()}"


def server_versions(args) -> tuple[str, str]:
    with pg_connect(args.postgres) as con:
        version = con.execute("SHOW server_version").fetchone()[0]
        knobs = {name: con.execute(f"SHOW {name}").fetchone()[0]
                 for name in ("max_connections", "shared_buffers", "synchronous_commit", "fsync")}
    pg = f"PostgreSQL {version} ({', '.join(f'{k}={v}' for k, v in knobs.items())})"
    if not any(ENGINES[engine][0] == "rq" for engine in args.engines):
        return pg, "not used"
    client = redis.Redis.from_url(args.redis_url)
    try:
        info = client.info("server")
        persistence = client.info("persistence")
        rd = (f"Redis {info['redis_version']} (aof_enabled={persistence.get('aof_enabled')}), "
              f"database {args.redis_url.rsplit('/', 1)[-1]}, flushed before and after each run")
    finally:
        client.close()
    return pg, rd


def fmt(value: float, digits: int = 1) -> str:
    return "-" if math.isnan(value) else f"{value:.{digits}f}"


def print_report(args, used: dict[str, dict], runs: list[Run], wall: float, loads: list[float]) -> None:
    cores = os.cpu_count() or 1
    first = next(iter(used.values()))
    pg, rd = server_versions(args)
    print()
    print(f"Scaling benchmark, {datetime.now().astimezone():%Y-%m-%d %H:%M %Z}: N={args.n} messages per run "
          f"(~2 KB HTML + text receipt, 1 recipient, tags, metadata), fake Mailgun latency "
          f"{args.latency * 1000:.0f} ms")
    print(f"  code: {args.code_version}")
    print(f"  machine: {machine_description()}; python {platform.python_version()}")
    print(f"  {pg}")
    print(f"  {rd}")
    print(f"  settings: {first['settings']} DEBUG={first['debug']}, delivery backend "
          f"{first['delivery_backend']}, LOG_LEVEL={args.worker_log_level} (workers), "
          f"rate limits: {first['rate_limits']}, CONN_MAX_AGE={first['conn_max_age']}")
    knobs = ", ".join(f"{k}={v}" for k, v in first.items() if k.startswith("TRANSACTIONAL_"))
    print(f"  {knobs}{' (overridden)' if args.concurrency or args.batch_size else ''}")
    for engine in args.engines:
        command = " ".join(worker_commands(engine, 2, args, "T")[0][1:-2]).replace("--processes 2", "--processes k")
        print(f"  {engine}: {used[engine]['tasks']}; {ENGINES[engine][1]}: `{command}`")
    print(f"  load average (1 min): {loads[0]:.2f} before, {loads[-1]:.2f} after, on {cores} CPU(s)")
    concurrency = first["TRANSACTIONAL_CONCURRENCY"]
    print(f"  ceiling from concurrency alone: workers x {concurrency} calls in flight / "
          f"{args.latency * 1000:.0f} ms = {concurrency / args.latency:.0f} msg/s per worker")
    print()
    base = {}
    for r in runs:
        if r.ok and r.workers == min(args.workers):
            base.setdefault(r.engine, []).append(r.steady_rate / r.workers)
    header = (f"{'engine':8} {'wk':>2} {'msg/s':>7} {'/worker':>7} {'effic.':>6} {'wall':>6} "
              f"{'start':>5} | {'workers':>7} {'fake':>5} {'pg':>5} {'redis':>5} {'machine':>7} | "
              f"{'busy':>4} {'other':>5} | {'claim->accepted':>15}")
    print(f"msg/s = steady rate, first to last accepted message; /worker = msg/s / workers; effic. = "
          f"/worker relative to {min(args.workers)} worker(s);")
    print("wall = N / (worker start -> last accepted); start = worker start -> first accepted (s).")
    print("CPU ms per message over the steady window: the workers' process trees, the fake ESP, PostgreSQL "
          "(this db's backends + server processes),")
    print(f"redis-server, the whole machine. busy = machine cores in use (of {cores}); other = cores used "
          "by processes outside this benchmark.")
    print("claim->accepted = p50/p99 ms from a message's claim to the ESP's arrival stamp (in-worker wait + "
          "call start).")
    print()
    print(f"{'':31} | {'--------- CPU ms/message ----------':>35} | {'- cores -':>10} |")
    print(header)
    print("-" * len(header))
    for r in runs:
        if not r.ok:
            print(f"{r.engine:8} {r.workers:>2} FAILED: {r.error}")
            continue
        per = r.steady_rate / r.workers
        ref = statistics.median(base[r.engine]) if base.get(r.engine) else float("nan")
        c = r.cpu
        window_n = max(1, r.n - 1)
        ms = {k: v * 1000 / window_n for k, v in c.items() if not k.startswith("_")}
        pg_ms = ms["postgres (this db)"] + ms["postgres (server)"]
        seconds = c["_seconds"] or float("nan")
        lat = f"{fmt(r.claim_to_accept_ms[0], 0)}/{fmt(r.claim_to_accept_ms[1], 0)}"
        print(f"{r.engine:8} {r.workers:>2} {r.steady_rate:7.1f} {per:7.1f} {per / ref:6.2f} "
              f"{r.wall_rate:6.1f} {r.startup_s:5.2f} | {ms['workers']:7.2f} {ms['fake ESP']:5.2f} "
              f"{pg_ms:5.2f} {ms['redis-server']:5.2f} {c['_busy'] * 1000 / window_n:7.2f} | "
              f"{c['_busy'] / seconds:4.2f} {c['other'] / seconds:5.2f} | {lat:>15}")
    groups: dict[tuple[str, int], list[float]] = {}
    for r in runs:
        if r.ok:
            groups.setdefault((r.engine, r.workers), []).append(r.steady_rate)
    if any(len(rates) > 1 for rates in groups.values()):
        print()
        print("Median steady msg/s over the repeats (min - max):")
        for (engine, workers), rates in groups.items():
            median = statistics.median(rates)
            ref = groups.get((engine, min(args.workers)))
            efficiency = (median / workers) / (statistics.median(ref) / min(args.workers)) if ref else float("nan")
            print(f"  {engine:8} x{workers}: {median:7.1f} ({min(rates):.1f} - {max(rates):.1f}), "
                  f"{median / workers:.1f} per worker, efficiency {efficiency:.2f}")
    print()
    print("Per run (CPU in cores = CPU seconds / window seconds, over the steady window):")
    for r in runs:
        if not r.ok:
            continue
        c = r.cpu
        seconds = c["_seconds"] or float("nan")
        share = ", ".join(f"{k} {c[k] / seconds:.2f}" for k in CpuMeter.GROUPS)
        spread = "+".join(str(x) for x in r.per_worker) or "?"
        e = r.enqueue
        redis_part = f", Redis {r.redis_per_msg:.1f} commands/msg (server-wide)" if r.redis_per_msg is not None else ""
        print(f"  {r.engine} x{r.workers} (run {r.repeat}): drain {r.drain_s:.2f} s wall, {r.steady_s:.2f} s "
              f"steady, all recorded in the DB at {r.recorded_s:.2f} s; "
              f"load average {r.loads[0]:.2f} -> {r.loads[1]:.2f}, {r.idle_before:.2f} cores busy just "
              "before the start")
        print(f"      cores used: {share}; machine busy {c['_busy'] / seconds:.2f} of {os.cpu_count()}")
        print(f"      sent per worker {spread} in {r.runs} delivery run(s); accepted -> recorded p50/p99 "
              f"{fmt(r.accept_to_record_ms[0], 0)}/{fmt(r.accept_to_record_ms[1], 0)} ms")
        print(f"      delivery, PostgreSQL: {r.commits_per_msg:.2f} commits/msg, {r.rows_per_msg:.1f} rows "
              f"written/msg, {r.wal_per_msg / 1024:.1f} KB WAL/msg (server-wide), at most {r.backends_max} "
              f"connection(s) to the db at once{redis_part}")
        print(f"      enqueue (one process, send() one by one): {e['ms']:.2f} ms/msg wall, CPU {e['cpu_ms']:.2f} "
              f"ms/msg sender + {e['pg_cpu_ms']:.2f} PostgreSQL; {e['commits']:.2f} commits/msg, "
              f"{e['rows']:.1f} rows written/msg, {e['wal'] / 1024:.1f} KB WAL/msg")
        z = r.sizes
        rkeys = (f"; Redis db: {r.redis_keys[0]} keys, {r.redis_keys[1] / 1024:.0f} KB"
                 if r.redis_per_msg is not None else "")
        print(f"      on disk after the drain, per message: messages {z['transactional_message'] / r.n:.0f} B, "
              f"recipients {z['transactional_recipient'] / r.n:.0f} B, attempts "
              f"{z['transactional_attempt'] / r.n:.0f} B (with indexes, before vacuum); task table "
              f"{z[DB_TASKS_TABLE] / 1024:.0f} KB, database {z['database'] / 2**20:.0f} MB{rkeys}; peak RSS "
              f"per worker command {' + '.join(f'{m:.0f}' for m in r.rss_mb)} MB")
    ok = [r for r in runs if r.ok]
    print()
    print("Verified for every run not marked FAILED: the ESP accepted each message exactly once (N posts, "
          "N distinct Message-IDs, every subject,")
    print("the same Message-IDs as the database), and every message is 'sent' with attempts=1, one 'sent' "
          "attempt row, recipients sent with ESP ids.")
    print()
    print("Where the ceiling is:")
    for r in ok:
        c = r.cpu
        seconds = c["_seconds"] or float("nan")
        busy = c["_busy"] / seconds
        ceiling = r.workers * concurrency / args.latency
        top = max(("workers", "fake ESP", "postgres (this db)", "postgres (server)", "redis-server", "other"),
                  key=lambda k: c[k])
        state = ("CPU-bound: the machine was saturated" if busy >= 0.9 * cores
                 else "not CPU-bound" if busy < 0.7 * cores else "close to CPU-bound")
        print(f"  {r.engine} x{r.workers}: {r.steady_rate:.0f} msg/s = {r.steady_rate / ceiling:.0%} of the "
              f"concurrency ceiling ({ceiling:.0f}); machine {busy:.2f}/{cores} cores busy ({state}); "
              f"largest consumer: {top} ({c[top] / seconds:.2f} cores)")
    if max(args.workers) > cores:
        print(f"  NOTE: {max(args.workers)} workers on {cores} cores: beyond {cores} workers they compete "
              "for CPU with each other, the fake ESP and PostgreSQL; the figures above show by how much.")
    if loads[0] > 0.5 * cores:
        print("  WARNING: the machine was busy before the benchmark started (load average above): rates are "
              "likely depressed; compare 'other' in the per-run lines.")
    print(f"\n(benchmark wall time {wall:.0f} s)")


# ---------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------

def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Benchmark 1, 2, 4 delivery workers on PostgreSQL (db) and RQ/Redis against a fake Mailgun.",
        epilog="See the module docstring for what is measured and checked.",
    )
    parser.add_argument("--engines", default="db,rq", help="comma-separated: db, rq, db-procs (default %(default)s)")
    parser.add_argument("--workers", default="1,2,4", help="comma-separated worker counts (default %(default)s)")
    parser.add_argument("--n", type=int, default=6000, help="messages per run (default %(default)s)")
    parser.add_argument("--latency", type=float, default=0.1, help="fake ESP latency, s (default %(default)s)")
    parser.add_argument("--repeat", type=int, default=1, help="runs per configuration (default %(default)s)")
    parser.add_argument("--settings", default="settings.prod", help="settings module (default %(default)s)")
    parser.add_argument("--concurrency", type=int, help="override TRANSACTIONAL_CONCURRENCY")
    parser.add_argument("--batch-size", type=int, help="override TRANSACTIONAL_BATCH_SIZE")
    parser.add_argument("--db-interval", type=float, default=0.1,
                        help="delivery_worker --interval (default %(default)s)")
    parser.add_argument("--worker-log-level", default="warning",
                        choices=["debug", "info", "warning", "error", "critical"],
                        help="LOG_LEVEL of the workers (default %(default)s)")
    parser.add_argument("--postgres", default="postgres://postgres@127.0.0.1:5432/postgres",
                        help="PostgreSQL to create the databases on (default %(default)s)")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/13",
                        help="Redis database for RQ, flushed every run (default %(default)s; never 15)")
    parser.add_argument("--stall-timeout", type=float, default=60,
                        help="fail a run if nothing arrives for this many seconds (default %(default)s)")
    parser.add_argument("--idle-below", type=float, default=0.3,
                        help="before each drain, wait until the machine uses fewer cores than this "
                        "(default %(default)s)...")
    parser.add_argument("--idle-wait", type=float, default=120,
                        help="...for at most this many seconds, then go on and report it "
                        "(default %(default)s; 0: do not wait)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory and databases")
    parser.add_argument("--role", choices=["settings"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    args.workers = [int(w) for w in args.workers.split(",") if w.strip()]
    if not args.engines or set(args.engines) - set(ENGINES):
        parser.error(f"--engines takes {', '.join(ENGINES)}")
    if not args.workers or min(args.workers) < 1 or args.n < 2 or args.repeat < 1:
        parser.error("--workers must be positive, --n at least 2, --repeat at least 1")
    if urlsplit(args.redis_url).path.strip("/") in ("", "15"):
        parser.error("--redis-url needs a database number other than 15 (the test suite's), e.g. /13")
    return args


def _terminate(signum, frame) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.role == "settings":
        role_settings()
        return 0
    signal.signal(signal.SIGTERM, _terminate)
    began = time.monotonic()
    args.code_version = bench_delivery.code_version()
    loads = [os.getloadavg()[0]]
    workdir = Path(tempfile.mkdtemp(prefix="bench_scaling-"))
    runs: list[Run] = []
    try:
        overlay = write_overlay(workdir, args)
        used = {}
        for engine in args.engines:
            env = environment(args, engine, pg_url(args.postgres, "unused"), "http://127.0.0.1:9/v3", overlay)
            result = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--role", "settings"],
                                    cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False)
            if result.returncode != 0:
                raise BenchError(f"--role settings failed:\n{result.stdout}{result.stderr}")
            used[engine] = json.loads(result.stdout.strip().splitlines()[-1])
            if used[engine]["email_backend"] != "transactional.backends.EmailBackend":
                raise BenchError(f"EMAIL_BACKEND is {used[engine]['email_backend']}, not the outbox")
        if "db-procs" in args.engines:
            env = environment(args, "db", pg_url(args.postgres, "unused"), "http://127.0.0.1:9/v3", overlay)
            helptext = subprocess.run([sys.executable, "manage.py", "delivery_worker", "--help"], cwd=ROOT,
                                      env=env, capture_output=True, text=True, timeout=120, check=False).stdout
            if "--processes" not in helptext:
                raise BenchError("--engines db-procs needs a delivery_worker with --processes; this one has none")
        print(f"Running in {workdir} ...", flush=True)
        for workers in args.workers:
            for repeat in range(1, args.repeat + 1):
                for engine in args.engines:
                    run = run_one(engine, workers, repeat, args, workdir, overlay)
                    runs.append(run)
                    status = (f"{run.steady_rate:.1f} msg/s steady, {run.wall_rate:.1f} wall"
                              if run.ok else f"FAILED: {run.error}")
                    print(f"  {engine} x{workers} (run {repeat}): {status}", flush=True)
        loads.append(os.getloadavg()[0])
        print_report(args, used, runs, time.monotonic() - began, loads)
        failed = [r for r in runs if not r.ok]
        if failed:
            print(f"\nBENCHMARK FAILED: {len(failed)} run(s) lost, duplicated or stalled "
                  f"(files kept in {workdir})", file=sys.stderr)
            args.keep = True
            return 1
        return 0
    except BenchError as error:
        print(f"\nBENCHMARK FAILED: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 1
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
