#!/usr/bin/env python
"""Delivery benchmark: the outbox against bare django-anymail, on a loopback fake Mailgun.

Run from the project root::

    .venv/bin/python scripts/bench_delivery.py                 # N=2000, latencies 0 and 0.1 s
    .venv/bin/python scripts/bench_delivery.py --rss-n 20000   # also the peak-RSS growth check

For each simulated provider latency it starts one fake Mailgun subprocess
(``python -m transactional.testing.fake_mailgun --latency L --record-file F``)
and measures, against that same server:

(a) bare anymail: a subprocess with ``settings.dev`` (EMAIL_PROVIDER=mailgun)
    sends the messages through anymail's Mailgun backend in a loop over ONE
    open connection, one message per call. That is also "one-at-a-time
    sending". At a latency > 0 only a sample (``--sample``, default 100) is
    sent, since all N would take N x latency.
(b) the outbox: a fresh SQLite file database (``manage.py migrate``), then a
    subprocess enqueues N messages with ``EmailMultiAlternatives(...).send()``
    through the real outbox backend (TASKS_BACKEND=db), timing the send loop
    only; then the Procfile's ``worker:`` command is started as it stands
    (``manage.py delivery_worker --processes ${WORKER_PROCESSES:-2}``, with
    this benchmark's settings module), and the drain is timed from its start
    until the fake has accepted N messages. Peak RSS (VmHWM) and CPU are read
    over the worker and its forked processes; it is stopped with SIGTERM.
(c) django-post_office, the closest peer, on the same messages and the same
    anymail backend: its EmailBackend queues them (timed the same way), then
    ``manage.py send_queued_mail --processes 2`` (its own multi-process mode;
    its defaults otherwise) sends them, timed from its start until the fake
    has accepted N. ``--no-post-office`` skips it.

Messages: subject with the index, a ~2 KB HTML receipt plus its text
version, one recipient ``customer{i}@example.org``, from ``Acme Shop
<orders@acme-corp.com>``, with tags and metadata.

The drain rate is reported twice: wall clock from the command's start
(used for the ratios and targets: it includes Python and Django start-up,
which bare anymail's figure does not) and excluding start-up (first to last
accepted message). The benchmark checks the fake's record file and the
database after every drain: a lost or duplicated message (by Message-ID for
the outbox, by subject for post_office) makes it exit with status 1. Missed
targets are reported as FAIL but exit 0: it is a measurement.

Targets (issue 11): at 0 ms the drain reaches >= 1.0 x bare anymail; at
100 ms it reaches >= 20 x one-at-a-time; enqueue <= 1.5 ms per message.
post_office's ratios are printed beside ours.

The leak check (--rss-n, --rss-check): the peak RSS of the worker and of
the enqueuing process grows < 20 MB from N to M messages. Both of its runs
put SQLite's own caches back at SQLite's defaults (a 2 MiB page cache, no
memory map): the settings' 32 MiB page cache per connection and 256 MiB
memory map grow every process's RSS as the database grows, up to that
bound, which says nothing about the outbox keeping memory per message.

Flags:
  --n N                  messages per run (default 2000)
  --latencies L,...      simulated provider latencies in seconds (default 0,0.1)
  --workers W            copies of the Procfile's worker command (default 1,
                         the documented single-machine setup)
  --worker-processes P   WORKER_PROCESSES for it (default: the Procfile's, 2)
  --post-office-processes P  send_queued_mail --processes (default 2)
  --no-post-office       skip django-post_office
  --sample S             messages for the one-at-a-time rate when latency > 0
                         (default 100; all N at latency 0)
  --rss-n M              the leak check: also run the outbox at N and at M
                         messages (latency 0 only, SQLite's caches at their
                         defaults) and report the RSS growth (e.g. 20000)
  --rss-check            shorthand for --rss-n 10*N
  --worker-log-level L   LOG_LEVEL for the worker (default warning; info logs
                         one line per sent message, as production would)
  --debug                keep settings.dev's DEBUG on (default: DEBUG=false,
                         as in production; DEBUG on records every SQL query)
  --settings MODULE      settings module for every process (default
                         settings.dev; settings.prod works too). PYTHONPATH
                         is passed on, so a variant module can be tried.
  --concurrency C, --batch-size B
                         override TRANSACTIONAL_CONCURRENCY / _BATCH_SIZE
                         through a generated settings module layered on
                         --settings (default: the settings' defaults)
  --stall-timeout S      fail (exit 1) if no message arrives for S seconds (default 60)
  --keep                 keep the temporary directory (databases, logs)
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shlex
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
API_KEY = "key-bench"
SENDER_DOMAIN = "mg.acme-corp.com"
FROM = "Acme Shop <orders@acme-corp.com>"
MB = 1024 * 1024
#: Settings modules written into the temporary directory by write_overlay().
OUTBOX_SETTINGS = "bench_overlay_settings"
POST_OFFICE_SETTINGS = "bench_post_office_settings"
LEAK_CHECK_SETTINGS = "bench_leak_check_settings"


# ---------------------------------------------------------------------------
# Messages (built the same way in every role)
# ---------------------------------------------------------------------------

ITEMS = [
    ("Organic cotton T-shirt, navy, M", 2, 1990),
    ("Merino wool socks (3 pairs)", 1, 2450),
    ("Canvas tote bag", 1, 1200),
    ("Stainless steel water bottle, 750 ml", 1, 2899),
    ("Gift wrapping", 1, 350),
]


def message_parts(i: int) -> tuple[str, str, str]:
    """Return (subject, text, html) for message ``i``: a ~2 KB HTML receipt."""
    order = 100000 + i
    subject = f"Your Acme Shop receipt for order #{order} (message {i})"
    total = sum(q * cents for _, q, cents in ITEMS)
    rows = "".join(
        f'<tr><td style="padding:4px 8px;border-bottom:1px solid #eee">{name}</td>'
        f'<td style="padding:4px 8px;text-align:right">{q}</td>'
        f'<td style="padding:4px 8px;text-align:right">${q * cents / 100:.2f}</td></tr>'
        for name, q, cents in ITEMS
    )
    html = (
        '<!doctype html><html><body style="font-family:Helvetica,Arial,sans-serif;color:#222">'
        f"<h1 style=\"font-size:20px\">Thanks for your order, customer {i}!</h1>"
        f"<p>Order <strong>#{order}</strong> was paid on 2025-06-01 and will ship within two "
        "business days. You will get another email with the tracking number.</p>"
        '<table style="border-collapse:collapse;width:100%">'
        '<thead><tr><th style="text-align:left">Item</th><th>Qty</th><th>Price</th></tr></thead>'
        f"<tbody>{rows}</tbody>"
        f'<tfoot><tr><td colspan="2" style="text-align:right"><strong>Total</strong></td>'
        f'<td style="text-align:right"><strong>${total / 100:.2f}</strong></td></tr></tfoot>'
        "</table>"
        f'<p>View your order: <a href="https://shop.acme-corp.com/orders/{order}">'
        f"https://shop.acme-corp.com/orders/{order}</a></p>"
        "<p>Questions? Reply to this email or write to support@acme-corp.com.</p>"
        '<p style="font-size:12px;color:#888">Acme Shop, 1 Market Street, Springfield. '
        "You receive this email because you placed an order with us.</p>"
        "</body></html>"
    )
    lines = "\n".join(f"  {name:40} x{q}  ${q * cents / 100:>8.2f}" for name, q, cents in ITEMS)
    text = (
        f"Thanks for your order, customer {i}!\n\n"
        f"Order #{order} was paid on 2025-06-01 and will ship within two business days.\n"
        "You will get another email with the tracking number.\n\n"
        f"{lines}\n  {'Total':44}  ${total / 100:>8.2f}\n\n"
        f"View your order: https://shop.acme-corp.com/orders/{order}\n\n"
        "Questions? Reply to this email or write to support@acme-corp.com.\n"
        "-- \nAcme Shop, 1 Market Street, Springfield.\n"
    )
    return subject, text, html


def build_message(i: int):
    """Return message ``i`` as application code would build it."""
    from django.core.mail import EmailMultiAlternatives

    subject, text, html = message_parts(i)
    message = EmailMultiAlternatives(subject, text, FROM, [f"customer{i}@example.org"])
    message.attach_alternative(html, "text/html")
    message.tags = ["receipt", "shop"]
    message.metadata = {"order_id": str(100000 + i), "customer_id": str(i)}
    return message


# ---------------------------------------------------------------------------
# Subprocess roles (this script re-run with --role)
# ---------------------------------------------------------------------------

def _setup_django() -> None:
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()


def _self_rss_kb() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux


def _self_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def role_bare(count: int) -> None:
    """Send ``count`` messages through anymail's backend over one connection."""
    _setup_django()
    from django.conf import settings
    from django.core.mail import get_connection

    backend = settings.TRANSACTIONAL_DELIVERY_BACKEND
    rss_before = _self_rss_kb()
    connection = get_connection(backend, fail_silently=False)
    cpu = _self_cpu()
    started = time.perf_counter()
    connection.open()
    sent = 0
    for i in range(count):
        sent += connection.send_messages([build_message(i)])
    connection.close()
    seconds = time.perf_counter() - started
    print(json.dumps({"backend": backend, "sent": sent, "seconds": seconds, "cpu": _self_cpu() - cpu,
                      "rss_kb": _self_rss_kb(), "rss_before_kb": rss_before}))


def role_enqueue(count: int) -> None:
    """Enqueue ``count`` messages through the outbox backend (EMAIL_BACKEND)."""
    _setup_django()
    from django.conf import settings
    from django.db import connection

    connection.ensure_connection()
    rss_before = _self_rss_kb()
    accepted = 0
    cpu = _self_cpu()
    started = time.perf_counter()
    for i in range(count):
        accepted += build_message(i).send()
    seconds = time.perf_counter() - started
    print(json.dumps({"backend": settings.EMAIL_BACKEND, "accepted": accepted, "seconds": seconds,
                      "cpu": _self_cpu() - cpu, "rss_kb": _self_rss_kb(), "rss_before_kb": rss_before}))


def role_settings() -> None:
    """Print the delivery settings the worker will use."""
    _setup_django()
    from django.conf import settings

    from transactional.conf import delivery_backend, get_setting

    print(json.dumps({
        "settings": os.environ.get("DJANGO_SETTINGS_MODULE"), "debug": settings.DEBUG,
        "email_backend": settings.EMAIL_BACKEND, "delivery_backend": delivery_backend(),
        "concurrency": get_setting("CONCURRENCY"), "batch_size": get_setting("BATCH_SIZE"),
        "tasks": settings.TASKS["default"]["BACKEND"], "log_level": settings.LOG_LEVEL,
    }))


# ---------------------------------------------------------------------------
# Orchestration
# ---------------------------------------------------------------------------

class BenchError(RuntimeError):
    """A message was lost or duplicated, or a process failed: exit 1."""


def vm_hwm_kb(pid: int) -> int | None:
    """Return the peak resident set size (VmHWM, KiB) of a live process."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def cpu_seconds(pid: int) -> float | None:
    """Return the CPU time (user + system, all threads) a live process has used."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class FakeESP:
    """The fake Mailgun in its own process, with its record file read incrementally."""

    def __init__(self, latency: float, record_file: Path, log: Path):
        self.record_file = record_file
        self._log = open(log, "w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "transactional.testing.fake_mailgun", "--port", "0",
             "--latency", str(latency), "--api-key", API_KEY, "--record-file", str(record_file)],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=self._log, text=True,
        )
        line = self.proc.stdout.readline().strip()
        if not line.startswith("listening on "):
            self.stop()
            raise BenchError(f"fake Mailgun did not start: {line!r} (see {log})")
        self.url = line.removeprefix("listening on ")
        self.records: list[dict] = []
        self._reader = None
        self._partial = ""

    def poll(self) -> int:
        """Read newly recorded lines; return how many records there are."""
        if self._reader is None:
            if not self.record_file.exists():
                return 0
            self._reader = open(self.record_file, encoding="utf-8")
        chunk = self._reader.read()
        if chunk:
            data = self._partial + chunk
            *lines, self._partial = data.split("\n")
            self.records.extend(json.loads(line) for line in lines if line)
        return len(self.records)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        if self._reader:
            self._reader.close()


@dataclass
class Env:
    """Environment for settings.dev (or an overlay) against one database and fake."""

    database: Path
    esp_url: str
    args: argparse.Namespace
    overlay_dir: Path
    #: The overlay module each process imports (see write_overlay()).
    settings_module: str = OUTBOX_SETTINGS

    def environ(self, **extra: str) -> dict[str, str]:
        env = {
            "PATH": os.environ.get("PATH", ""),
            "HOME": os.environ.get("HOME", "/tmp"),
            "LANG": os.environ.get("LANG", "C.UTF-8"),
            "DJANGO_SETTINGS_MODULE": self.settings_module,
            # Read by settings.prod only (settings.dev has defaults); never a real secret.
            "SECRET_KEY": "bench-only-not-a-secret-" + "x" * 40,
            "ALLOWED_HOSTS": "localhost",
            "DATABASE_URL": f"sqlite:///{self.database}",
            "EMAIL_PROVIDER": "mailgun",
            "MAILGUN_API_KEY": API_KEY,
            "MAILGUN_SENDER_DOMAIN": SENDER_DOMAIN,
            "MAILGUN_API_URL": self.esp_url,
            "TASKS_BACKEND": "db",
            "LOG_LEVEL": "warning",
            "DEBUG": "true" if self.args.debug else "false",
            "PYTHONPATH": os.pathsep.join(filter(None, [
                str(ROOT), str(self.overlay_dir), os.environ.get("PYTHONPATH", "")])),
        }
        if self.args.worker_processes:
            env["WORKER_PROCESSES"] = str(self.args.worker_processes)
        env.update(extra)
        return env


def run_role(role: str, count: int, env: dict[str, str], timeout: float = 3600) -> dict:
    result = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--role", role, "--n", str(count)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout,
    )
    if result.returncode != 0:
        raise BenchError(f"--role {role} failed ({result.returncode}):\n{result.stdout}{result.stderr}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def manage(*args: str, env: dict[str, str], timeout: float = 600) -> str:
    result = subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise BenchError(f"manage.py {' '.join(args)} failed:\n{result.stdout}{result.stderr}")
    return result.stdout


def db_counts(database: Path) -> dict[str, int]:
    """Message counts by status, and the attempt count, read with plain sqlite3."""
    con = sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=20)
    try:
        counts = dict(con.execute("SELECT status, COUNT(*) FROM transactional_message GROUP BY status"))
        counts["_attempts"] = con.execute("SELECT COUNT(*) FROM transactional_attempt").fetchone()[0]
        return counts
    finally:
        con.close()


def db_problems(database: Path) -> list[str]:
    """Rows a complete, correct drain would not leave behind."""
    con = sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=20)
    checks = {
        "recipients not sent or without an ESP id": "SELECT COUNT(*) FROM transactional_recipient "
        "WHERE status != 'sent' OR esp_message_id = ''",
        "attempts not sent": "SELECT COUNT(*) FROM transactional_attempt WHERE outcome != 'sent'",
        "sent messages without sent_at": "SELECT COUNT(*) FROM transactional_message "
        "WHERE status = 'sent' AND sent_at IS NULL",
    }
    try:
        found = {name: con.execute(sql).fetchone()[0] for name, sql in checks.items()}
        return [f"{n} {name}" for name, n in found.items() if n]
    finally:
        con.close()


@dataclass
class Outbox:
    """One enqueue-then-drain run, of the outbox or of post_office."""

    n: int
    enqueue_ms: float = 0.0
    enqueue_cpu_ms: float = 0.0
    worker_cpu_ms: float = 0.0
    esp_cpu_ms: float = 0.0
    enqueue_rss_mb: float = 0.0
    enqueue_base_mb: float = 0.0
    startup_s: float = 0.0
    drain_s: float = 0.0
    recorded_s: float = 0.0
    drain_rate: float = 0.0
    steady_rate: float = 0.0
    worker_rss_mb: list[float] = field(default_factory=list)
    command: str = ""


def _enqueue(out: Outbox, n: int, env: dict[str, str], *, counts_accepted: bool = True) -> None:
    """Run the enqueue role; ``counts_accepted``: the backend returns how many it took."""
    enq = run_role("enqueue", n, env)
    if counts_accepted and enq["accepted"] != n:
        raise BenchError(f"{enq['backend']} accepted {enq['accepted']} of {n} messages")
    out.enqueue_ms = enq["seconds"] * 1000 / n
    out.enqueue_cpu_ms = enq["cpu"] * 1000 / n
    out.enqueue_rss_mb = enq["rss_kb"] / 1024
    out.enqueue_base_mb = enq["rss_before_kb"] / 1024


def _drain(out: Outbox, esp: FakeESP, commands: list[list[str]], env: dict[str, str], logs: list[Path],
           sent_in_db, args) -> list[dict]:
    """Start ``commands`` and time them until the fake accepted ``out.n`` and ``sent_in_db()`` says so.

    Returns the fake's records of this run. A process that exits with an
    error, or no progress for --stall-timeout seconds, fails the benchmark;
    one that exits 0 (post_office's command, once the queue is empty) is fine.
    """
    n, baseline = out.n, esp.poll()
    esp_cpu = cpu_seconds(esp.proc.pid) or 0.0
    out.command = shlex.join([Path(commands[0][0]).name, *commands[0][1:]])
    files = [open(log, "w") for log in logs]
    started = time.time()
    # CPU of the drain commands and of every process they started and waited
    # for (the worker's forked processes, post_office's pool), once they exit.
    children_cpu = _children_cpu()
    procs = [subprocess.Popen(command, cwd=ROOT, env=env, stdout=file, stderr=subprocess.STDOUT)
             for command, file in zip(commands, files)]
    try:
        last_count, last_progress = baseline, time.monotonic()
        while (count := esp.poll()) - baseline < n:
            if count != last_count:
                last_count, last_progress = count, time.monotonic()
            failed = [p for p in procs if p.poll() not in (None, 0)]
            if failed:
                raise BenchError(f"{out.command} exited with {failed[0].returncode} after "
                                 f"{count - baseline}/{n} messages; see {logs[0]}")
            if time.monotonic() - last_progress > args.stall_timeout:
                raise BenchError(f"no progress for {args.stall_timeout:.0f} s: "
                                 f"{count - baseline}/{n} messages delivered (lost?)")
            time.sleep(0.02)
        # Everything reached the ESP; wait until the database says so too.
        deadline = time.monotonic() + args.stall_timeout
        while not sent_in_db():
            if time.monotonic() > deadline:
                raise BenchError(f"ESP accepted {n} but the database does not show them all sent")
            time.sleep(0.02)
        recorded_at = time.time()
        time.sleep(0.3)  # let the run finish and any late duplicate arrive
        out.worker_rss_mb = [max((vm_hwm_kb(pid) or 0) / 1024 for pid in [p.pid, *_descendants(p.pid)])
                             for p in procs]
        out.esp_cpu_ms = ((cpu_seconds(esp.proc.pid) or 0.0) - esp_cpu) * 1000 / n
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        for file in files:
            file.close()
    out.worker_cpu_ms = (_children_cpu() - children_cpu) * 1000 / n

    esp.poll()
    records = esp.records[baseline:]
    expected = {message_parts(i)[0] for i in range(n)}
    subjects = [r["subject"] for r in records]
    missing = expected - set(subjects)
    if len(records) != n or missing or len(set(subjects)) != n:
        raise BenchError(f"ESP got {len(records)} posts for {n} messages: "
                         f"{len(subjects) - len(set(subjects))} duplicate subject(s), {len(missing)} missing")
    times = sorted(r["time"] for r in records)
    out.startup_s = times[0] - started
    out.drain_s = times[-1] - started
    out.recorded_s = recorded_at - started
    out.drain_rate = n / out.drain_s
    out.steady_rate = (n - 1) / (times[-1] - times[0]) if n > 1 else float("nan")
    return records


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _descendants(pid: int) -> list[int]:
    """Child process ids of ``pid`` (one level: the worker's forked processes)."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as children:
            return [int(child) for child in children.read().split()]
    except OSError:
        return []


def run_outbox(n: int, esp: FakeESP, workdir: Path, template_db: Path, args, overlay: Path,
               tag: str, settings_module: str = OUTBOX_SETTINGS) -> Outbox:
    """Enqueue n messages into a fresh database, then drain them with the Procfile's worker."""
    database = workdir / f"outbox-{tag}.sqlite3"
    shutil.copyfile(template_db, database)
    env = Env(database, esp.url, args, overlay, settings_module)
    out = Outbox(n)
    _enqueue(out, n, env.environ())
    counts = db_counts(database)
    if counts.get("queued") != n:
        raise BenchError(f"expected {n} queued messages after enqueue, found {counts}")

    worker_env = env.environ(LOG_LEVEL=args.worker_log_level)
    command = procfile_worker(worker_env)
    logs = [workdir / f"worker-{tag}-{k}.log" for k in range(args.workers)]
    records = _drain(out, esp, [command] * args.workers, worker_env, logs,
                     lambda: db_counts(database).get("sent", 0) >= n, args)

    ids = [r["message_id"] for r in records]
    if None in ids or len(set(ids)) != n:
        raise BenchError(f"{n - len(set(ids))} duplicate or missing Message-ID(s) at the ESP")
    counts = db_counts(database)
    if counts.get("sent") != n or counts["_attempts"] != n or len(counts) != 2:
        raise BenchError(f"database after drain: {counts} (expected {n} sent, {n} attempts)")
    if problems := db_problems(database):
        raise BenchError(f"database after drain: {', '.join(problems)}")
    return out


def run_post_office(n: int, esp: FakeESP, workdir: Path, template_db: Path, args, overlay: Path,
                    tag: str) -> Outbox:
    """The same messages through django-post_office: queued by its backend, sent by its command."""
    database = workdir / f"post_office-{tag}.sqlite3"
    shutil.copyfile(template_db, database)
    env = Env(database, esp.url, args, overlay, POST_OFFICE_SETTINGS)
    out = Outbox(n)
    _enqueue(out, n, env.environ(), counts_accepted=False)  # it returns the number sent: 0
    if (counts := post_office_counts(database)) != {"queued": n}:
        raise BenchError(f"expected {n} queued post_office emails after enqueue, found {counts}")
    command = [sys.executable, "manage.py", "send_queued_mail", "--processes", str(args.post_office_processes),
               "--lockfile", str(workdir / f"post_office-{tag}.lock")]
    _drain(out, esp, [command], env.environ(), [workdir / f"post_office-{tag}.log"],
           lambda: post_office_counts(database).get("sent", 0) >= n, args)
    if (counts := post_office_counts(database)) != {"sent": n}:
        raise BenchError(f"post_office database after drain: {counts} (expected {n} sent)")
    return out


def post_office_counts(database: Path) -> dict[str, int]:
    """post_office's emails by status name, read with plain sqlite3."""
    names = {0: "sent", 1: "failed", 2: "queued", 3: "requeued", None: "none"}
    con = sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=20)
    try:
        rows = con.execute("SELECT status, COUNT(*) FROM post_office_email GROUP BY status")
        return {names.get(status, str(status)): count for status, count in rows}
    finally:
        con.close()


@dataclass
class LatencyResult:
    latency: float
    bare_count: int = 0
    bare_rate: float = 0.0
    bare_rss_mb: float = 0.0
    bare_cpu_ms: float = 0.0
    bare_esp_cpu_ms: float = 0.0
    outbox: Outbox | None = None
    post_office: Outbox | None = None


def run_latency(latency: float, args, workdir: Path, templates: dict[str, Path], overlay: Path,
                rss_ns: list[int]) -> tuple[LatencyResult, list[Outbox]]:
    tag = f"{int(latency * 1000)}ms"
    esp = FakeESP(latency, workdir / f"esp-{tag}.jsonl", workdir / f"esp-{tag}.log")
    try:
        result = LatencyResult(latency)
        result.bare_count = args.n if latency == 0 else min(args.n, args.sample)
        env = Env(workdir / "bare-unused.sqlite3", esp.url, args, overlay)
        esp_cpu = cpu_seconds(esp.proc.pid) or 0.0
        bare = run_role("bare", result.bare_count, env.environ())
        result.bare_esp_cpu_ms = ((cpu_seconds(esp.proc.pid) or 0.0) - esp_cpu) * 1000 / result.bare_count
        result.bare_cpu_ms = bare["cpu"] * 1000 / result.bare_count
        got = esp.poll()
        if bare["sent"] != result.bare_count or got != result.bare_count:
            raise BenchError(f"bare anymail: sent {bare['sent']}, ESP recorded {got}, "
                             f"expected {result.bare_count}")
        result.bare_rate = bare["sent"] / bare["seconds"]
        result.bare_rss_mb = bare["rss_kb"] / 1024
        print(f"  [{tag}] bare anymail: {bare['sent']} msgs in {bare['seconds']:.2f} s", flush=True)
        result.outbox = run_outbox(args.n, esp, workdir, templates["outbox"], args, overlay, f"{tag}-n{args.n}")
        print(f"  [{tag}] outbox N={args.n}: enqueue {result.outbox.enqueue_ms:.2f} ms/msg, "
              f"drain {result.outbox.drain_s:.2f} s", flush=True)
        if "post_office" in templates:
            result.post_office = run_post_office(args.n, esp, workdir, templates["post_office"], args,
                                                 overlay, f"{tag}-n{args.n}")
            print(f"  [{tag}] post_office N={args.n}: enqueue {result.post_office.enqueue_ms:.2f} ms/msg, "
                  f"drain {result.post_office.drain_s:.2f} s", flush=True)
        extra = []  # the leak check: N, then each M, with SQLite's caches at their defaults
        for m in [args.n, *rss_ns] if rss_ns else []:
            o = run_outbox(m, esp, workdir, templates["outbox"], args, overlay, f"{tag}-n{m}-leak-check",
                           LEAK_CHECK_SETTINGS)
            print(f"  [{tag}] outbox N={m}, SQLite caches at their defaults: enqueue "
                  f"{o.enqueue_ms:.2f} ms/msg, drain {o.drain_s:.2f} s", flush=True)
            extra.append(o)
        return result, extra
    finally:
        esp.stop()


def outbox_settings(args) -> str:
    """Return a settings module: --settings with --concurrency and --batch-size applied."""
    lines = [f"from {args.settings} import *  # noqa: F403"]
    if args.concurrency is not None:
        lines.append(f"TRANSACTIONAL_CONCURRENCY = {args.concurrency}")
    if args.batch_size is not None:
        lines.append(f"TRANSACTIONAL_BATCH_SIZE = {args.batch_size}")
    return "\n".join(lines) + "\n"


def write_overlay(workdir: Path, args) -> Path:
    """Write the settings modules: --settings with the overrides, and post_office's.

    post_office's is --settings with post_office installed and its backend
    as EMAIL_BACKEND, sending through the same anymail backend as the
    outbox does (POST_OFFICE["BACKENDS"]); every other post_office setting
    is its default (5 threads per process, batches of 100, a log row per
    message), as a new user would have it.
    """
    overlay = workdir / "overlay"
    overlay.mkdir()
    (overlay / f"{OUTBOX_SETTINGS}.py").write_text(outbox_settings(args))
    (overlay / f"{LEAK_CHECK_SETTINGS}.py").write_text(outbox_settings(args) + "\n".join([
        "# SQLite's defaults: a 2 MiB page cache, no memory map (see the leak check).",
        'OPTIONS = DATABASES["default"].setdefault("OPTIONS", {})  # noqa: F405',
        'OPTIONS["init_command"] = OPTIONS.get("init_command", "") + '
        '" PRAGMA cache_size=-2000; PRAGMA mmap_size=0;"',
    ]) + "\n")
    (overlay / f"{POST_OFFICE_SETTINGS}.py").write_text("\n".join([
        f"from {args.settings} import *  # noqa: F403",
        'INSTALLED_APPS = [*INSTALLED_APPS, "post_office"]  # noqa: F405',
        'EMAIL_BACKEND = "post_office.EmailBackend"',
        'POST_OFFICE = {"BACKENDS": {"default": TRANSACTIONAL_DELIVERY_BACKEND}}  # noqa: F405',
    ]) + "\n")
    return overlay


def procfile_worker(environ: dict[str, str]) -> list[str]:
    """The Procfile's ``worker:`` command, as this benchmark runs it.

    Its variable assignments are dropped (every process here gets the
    benchmark's settings module and environment), ``${VAR:-default}`` is
    expanded from ``environ``, and ``python`` is this interpreter.
    """
    line = next(line for line in (ROOT / "Procfile").read_text().splitlines() if line.startswith("worker:"))
    words = [w for w in shlex.split(line.removeprefix("worker:")) if not re.fullmatch(r"[A-Za-z_]\w*=.*", w)]
    words = [re.sub(r"\$\{(\w+):-([^}]*)\}", lambda m: environ.get(m[1], m[2]), w) for w in words]
    return [sys.executable if w == "python" else w for w in words]


def code_version() -> str:
    """The commit benchmarked, and whether app code differs from it."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                              text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown (no git)"
    return f"{head or 'unknown'}{' + uncommitted changes' if dirty else ''}"


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


#: Targets (issue 11), on the worker set-up the Procfile documents.
DRAIN_VS_BARE = 1.0        # at 0 ms: drain rate >= this x bare anymail
DRAIN_VS_SERIAL = 20.0     # at 100 ms: drain rate >= this x one-at-a-time
ENQUEUE_MS = 1.5           # enqueue cost per message on SQLite, at most


def report(args, used: dict, results: list[LatencyResult], rss_runs: list[Outbox], wall: float,
           loads: list[float]) -> None:
    w = args.workers
    print()
    print(f"Delivery benchmark: N={args.n} messages (~2 KB HTML + text, 1 recipient, tags, metadata)")
    print(f"  code: {args.code_version}; python {sys.version.split()[0]}, {os.cpu_count()} CPU(s); "
          "fake Mailgun in its own process, shared by every contender")
    print(f"  settings: {used['settings']} DEBUG={used['debug']}  TASKS backend: {used['tasks']}  "
          f"delivery backend: {used['delivery_backend']}")
    print(f"  worker: {w} x the Procfile's `{used['worker_command']}`, "
          f"LOG_LEVEL={args.worker_log_level}; TRANSACTIONAL_CONCURRENCY={used['concurrency']}, "
          f"TRANSACTIONAL_BATCH_SIZE={used['batch_size']}"
          f"{'' if not (args.concurrency or args.batch_size) else ' (overridden)'}")
    if not args.no_post_office:
        print(f"  django-post_office {_version('django-post_office')}: its EmailBackend queues, "
              f"`send_queued_mail --processes {args.post_office_processes}` sends (its defaults: "
              "5 threads per process, batches of 100), through the same anymail backend")
    print("  database: SQLite file (WAL), fresh per run")
    cpus = os.cpu_count() or 1
    print(f"  load average (1 min) before the run: {loads[0]:.2f}, after: {loads[-1]:.2f} "
          f"(includes the benchmark itself), on {cpus} CPU(s)")
    if loads[0] > 0.5 * cpus:
        print("  WARNING: other processes were busy before the run started; rates are likely "
              "depressed and noisy. The CPU-per-message figures are the more stable ones.")
    for r in results:
        print()
        print(f"--- provider latency {r.latency * 1000:.0f} ms " + "-" * 44)
        label = "bare anymail, one connection" if r.latency == 0 else "one-at-a-time (bare anymail)"
        sample = "" if r.bare_count == args.n else f"  (sample of {r.bare_count} msgs)"
        print(f"  (a) {label:38} {r.bare_rate:9.1f} msg/s{sample}")
        print(f"      CPU per message: sender {r.bare_cpu_ms:.2f} ms, fake ESP {r.bare_esp_cpu_ms:.2f} ms")
        print(f"      peak RSS (bare process)                  {r.bare_rss_mb:9.1f} MB")
        _report_drain("(b) outbox", r.outbox, r, verified="each message accepted once by the ESP "
                      "(by Message-ID), and in the DB sent, 1 attempt, recipients sent with ESP ids")
        if r.post_office:
            _report_drain("(c) django-post_office", r.post_office, r, verified="each message "
                          "accepted once by the ESP (by subject), every email 'sent' in its table")
            ours, theirs = r.outbox.drain_rate, r.post_office.drain_rate
            print(f"  outbox / post_office: drain {ours / theirs:.2f} x, enqueue cost "
                  f"{r.outbox.enqueue_ms / r.post_office.enqueue_ms:.2f} x")

    print()
    print("--- targets (ratios use the wall-clock drain rate from worker start) " + "-" * 9)
    if w != 1:
        print(f"  NOTE: {w} copies of the worker command; the targets are defined for one (a single machine).")
    zero = next((r for r in results if r.latency == 0), None)
    slow = next((r for r in results if r.latency >= 0.1), None)
    if zero:
        ratio = zero.outbox.drain_rate / zero.bare_rate
        print(f"  {verdict(ratio >= DRAIN_VS_BARE)}  0 ms: drain >= {DRAIN_VS_BARE} x bare anymail: "
              f"{ratio:.2f} x ({zero.outbox.drain_rate:.0f} vs {zero.bare_rate:.0f} msg/s)"
              f"{_beside(zero.post_office, zero.bare_rate)}")
    else:
        print("  ----  0 ms: not measured (add 0 to --latencies)")
    if slow:
        ratio = slow.outbox.drain_rate / slow.bare_rate
        print(f"  {verdict(ratio >= DRAIN_VS_SERIAL)}  {slow.latency * 1000:.0f} ms: drain >= "
              f"{DRAIN_VS_SERIAL:.0f} x one-at-a-time: {ratio:.2f} x ({slow.outbox.drain_rate:.1f} vs "
              f"{slow.bare_rate:.2f} msg/s){_beside(slow.post_office, slow.bare_rate)}")
    else:
        print("  ----  100 ms: not measured (add 0.1 to --latencies)")
    worst = max(r.outbox.enqueue_ms for r in results)
    print(f"  {verdict(worst <= ENQUEUE_MS)}  enqueue <= {ENQUEUE_MS} ms/msg on SQLite: worst "
          f"{worst:.2f} ms/msg" + "".join(
              f"; post_office {r.post_office.enqueue_ms:.2f} ms/msg at {r.latency * 1000:.0f} ms"
              for r in results if r.post_office))
    if rss_runs and zero:
        base, *bigger = rss_runs
        print("        leak check, with SQLite's caches at SQLite's defaults (the settings' page cache and")
        print("        memory map would grow RSS with the database, up to their bound: docs/operations.md):")
        for big in bigger:
            wgrow = max(big.worker_rss_mb) - max(base.worker_rss_mb)
            egrow = big.enqueue_rss_mb - base.enqueue_rss_mb
            print(f"  {verdict(wgrow < 20)}  worker peak RSS growth N={base.n} -> {big.n}: "
                  f"{wgrow:+.1f} MB ({max(base.worker_rss_mb):.1f} -> {max(big.worker_rss_mb):.1f} MB) < 20 MB")
            print(f"  {verdict(egrow < 20)}  enqueue peak RSS growth N={base.n} -> {big.n}: "
                  f"{egrow:+.1f} MB ({base.enqueue_rss_mb:.1f} -> {big.enqueue_rss_mb:.1f} MB) < 20 MB")
            print(f"        (at N={big.n}: enqueue {big.enqueue_ms:.2f} ms/msg, drain "
                  f"{big.drain_rate:.1f} msg/s wall clock, {big.steady_rate:.1f} excluding start-up)")
    else:
        print("  ----  peak RSS growth N -> 10 x N: not measured (use --rss-n 20000 or --rss-check)")
    print(f"\n(benchmark wall time {wall:.0f} s)")


def _report_drain(label: str, o: Outbox, r: LatencyResult, *, verified: str) -> None:
    print(f"  {label + ' enqueue':42} {o.enqueue_ms:9.2f} ms/msg ({1000 / o.enqueue_ms:.0f} msg/s)")
    print(f"      CPU per message: enqueuer {o.enqueue_cpu_ms:.2f} ms")
    print(f"      drain command: {o.command}")
    print(f"      start-up (start -> 1st accepted)         {o.startup_s:9.2f} s")
    print(f"      drain, wall clock from start             {o.drain_rate:9.1f} msg/s  "
          f"({o.drain_s:.2f} s; all recorded in DB at {o.recorded_s:.2f} s)")
    print(f"      drain, excluding start-up                {o.steady_rate:9.1f} msg/s")
    print(f"      CPU per message: drain {o.worker_cpu_ms:.2f} ms (start-up to exit, all processes), "
          f"fake ESP {o.esp_cpu_ms:.2f} ms")
    name = "drain / bare" if r.latency == 0 else "drain / one-at-a-time"
    print(f"      ratio {name:34} {o.drain_rate / r.bare_rate:9.2f} x  "
          f"(wall clock; {o.steady_rate / r.bare_rate:.2f} x excluding start-up)")
    print(f"      peak RSS enqueue process                 {o.enqueue_rss_mb:9.1f} MB "
          f"(after django.setup: {o.enqueue_base_mb:.1f} MB)")
    rss = " + ".join(f"{m:.1f} MB" for m in o.worker_rss_mb if m) or "n/a (its processes had exited)"
    print(f"      peak RSS drain                           {rss} (largest process)")
    print(f"      verified: {verified}")


def _beside(post_office: Outbox | None, baseline: float) -> str:
    return "" if post_office is None else f"; post_office {post_office.drain_rate / baseline:.2f} x"


def _version(distribution: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(distribution)
    except PackageNotFoundError:
        return "(not installed)"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Benchmark the outbox against bare django-anymail on a loopback fake Mailgun.",
        epilog="See the module docstring for what is measured and the targets.",
    )
    parser.add_argument("--n", type=int, default=2000, help="messages per run (default 2000)")
    parser.add_argument("--latencies", default="0,0.1",
                        help="comma-separated provider latencies in seconds (default 0,0.1)")
    parser.add_argument("--workers", type=int, default=1,
                        help="copies of the Procfile's worker command (default 1: one machine)")
    parser.add_argument("--worker-processes", type=int,
                        help="WORKER_PROCESSES for the Procfile's worker command (default: the Procfile's)")
    parser.add_argument("--post-office-processes", type=int, default=2,
                        help="send_queued_mail --processes for django-post_office (default 2)")
    parser.add_argument("--no-post-office", action="store_true",
                        help="skip django-post_office (measured by default, beside the outbox)")
    parser.add_argument("--sample", type=int, default=100,
                        help="messages for the one-at-a-time rate at latency > 0 (default 100)")
    parser.add_argument("--rss-n", type=int, action="append", default=[],
                        help="the leak check: also run the outbox at N and at this N (latency 0, "
                        "SQLite's caches at their defaults) and compare peak RSS")
    parser.add_argument("--rss-check", action="store_true", help="same as --rss-n 10*N")
    parser.add_argument("--worker-log-level", default="warning",
                        choices=["debug", "info", "warning", "error", "critical"],
                        help="LOG_LEVEL for the worker (default warning)")
    parser.add_argument("--debug", action="store_true",
                        help="keep settings.dev's DEBUG on (default: DEBUG=false)")
    parser.add_argument("--settings", default="settings.dev",
                        help="settings module for every process (default settings.dev; "
                        "PYTHONPATH is passed on, to try a variant)")
    parser.add_argument("--concurrency", type=int, help="override TRANSACTIONAL_CONCURRENCY")
    parser.add_argument("--batch-size", type=int, help="override TRANSACTIONAL_BATCH_SIZE")
    parser.add_argument("--stall-timeout", type=float, default=60,
                        help="fail if no message arrives for this many seconds (default 60)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument("--role", choices=["bare", "enqueue", "settings"], help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.role == "bare":
        role_bare(args.n)
        return 0
    if args.role == "enqueue":
        role_enqueue(args.n)
        return 0
    if args.role == "settings":
        role_settings()
        return 0

    latencies = [float(x) for x in args.latencies.split(",") if x.strip()]
    rss_ns = list(args.rss_n) + ([10 * args.n] if args.rss_check else [])
    if rss_ns and 0 not in latencies:
        latencies.insert(0, 0.0)
    began = time.monotonic()
    args.code_version = code_version()
    loads = [os.getloadavg()[0]]
    workdir = Path(tempfile.mkdtemp(prefix="bench_delivery-"))
    try:
        overlay = write_overlay(workdir, args)
        templates = {"outbox": workdir / "template.sqlite3"}
        if not args.no_post_office:
            templates["post_office"] = workdir / "template-post_office.sqlite3"
        for name, template in templates.items():
            settings = POST_OFFICE_SETTINGS if name == "post_office" else OUTBOX_SETTINGS
            manage("migrate", "--no-input", "-v0", env=Env(template, "http://127.0.0.1:9/v3", args, overlay,
                                                           settings).environ())
        env = Env(templates["outbox"], "http://127.0.0.1:9/v3", args, overlay)
        used = run_role("settings", 0, env.environ(LOG_LEVEL=args.worker_log_level))
        used["worker_command"] = shlex.join(["python", *procfile_worker(env.environ())[1:]])
        if used["email_backend"] != "transactional.backends.EmailBackend":
            raise BenchError(f"EMAIL_BACKEND is {used['email_backend']}, not the outbox")
        print(f"Running in {workdir} ...", flush=True)
        results, rss_runs = [], []
        for latency in latencies:
            result, extra = run_latency(latency, args, workdir, templates, overlay,
                                        rss_ns if latency == 0 else [])
            results.append(result)
            rss_runs.extend(extra)
        loads.append(os.getloadavg()[0])
        report(args, used, results, rss_runs, time.monotonic() - began, loads)
        return 0
    except BenchError as error:
        print(f"\nBENCHMARK FAILED: {error}", file=sys.stderr)
        print(f"(files kept in {workdir})", file=sys.stderr)
        args.keep = True
        return 1
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
