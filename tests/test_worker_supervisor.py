"""`delivery_worker --processes N`: forked worker processes under one supervising parent."""

import argparse
import json
import os
import signal
import subprocess
import sys
import time

import pytest
from django.core.management import CommandError, call_command

from tests.test_worker import DB_TASKS
from tests.test_worker_processes import (
    ENQUEUE,
    ROOT,
    environment,
    manage,
    migrate,
    postgres_url,
    report,
    sqlite_url,
)
from transactional.management.commands.delivery_worker import processes_count
from transactional.testing.fake_mailgun import running_fake_mailgun

WORKER = [sys.executable, "manage.py", "delivery_worker", "--no-reload", "--interval", "0.05"]


def children(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as listed:
        return [int(child) for child in listed.read().split()]


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def wait_for(condition, timeout: float = 60, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := condition():
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.slow
@pytest.mark.parametrize("database", ["sqlite_url", "postgres_url"])
def test_two_processes_share_the_queue_and_deliver_each_message_once(database, request):
    database_url = request.getfixturevalue(database)
    with running_fake_mailgun(latency=0.005, api_key="key-test") as esp:
        env = environment(database_url, esp.base_url, TRANSACTIONAL_BATCH_SIZE="25")
        migrate(env, queued=300)

        result = subprocess.run([*WORKER, "--batch", "--processes", "2"], cwd=ROOT, env=env,
                                capture_output=True, text=True, timeout=180)

        assert result.returncode == 0, result.stdout + result.stderr
        assert esp.count == 300
        assert esp.duplicates() == {}
    assert report(env) == {"statuses": ["sent"], "sent": 300, "attempts": 300}
    started = [line for line in result.stdout.splitlines() if "Starting worker worker_id=" in line]
    assert len(started) == 2
    assert {line.split("worker_id=")[1].split()[0].rsplit("-", 1)[1] for line in started} == {"0", "1"}


@pytest.mark.slow
def test_a_dead_process_is_replaced_and_sigterm_stops_them_all(sqlite_url):
    with running_fake_mailgun(api_key="key-test") as esp:
        env = environment(sqlite_url, esp.base_url)
        migrate(env)
        parent = subprocess.Popen([*WORKER, "--processes", "2"], cwd=ROOT, env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            first = wait_for(lambda: len(children(parent.pid)) == 2 and children(parent.pid),
                             what="two worker processes")
            os.kill(first[0], signal.SIGKILL)  # as the OOM killer would

            replaced = wait_for(lambda: (now := children(parent.pid)) and len(now) == 2
                                and first[0] not in now and now, what="a replacement process")
            assert first[1] in replaced
            manage("shell", "-c", ENQUEUE.format(n=20), environ=env)
            wait_for(lambda: esp.count == 20, what="the mail sent after the restart")

            parent.send_signal(signal.SIGTERM)
            output = parent.communicate(timeout=60)[0]
        finally:
            if parent.poll() is None:
                parent.kill()
    assert parent.returncode == 0, output
    assert "was killed by SIGKILL; starting it again" in output
    assert not any(alive(pid) for pid in replaced)
    assert report(env) == {"statuses": ["sent"], "sent": 20, "attempts": 20}


@pytest.mark.slow
def test_a_signal_to_the_whole_group_stops_each_process_once_and_gracefully(sqlite_url):
    """systemd, Heroku and a terminal's Ctrl+C signal every process at once."""
    with running_fake_mailgun(latency=0.05, api_key="key-test") as esp:
        env = environment(sqlite_url, esp.base_url, TRANSACTIONAL_BATCH_SIZE="10")
        migrate(env, queued=400)
        parent = subprocess.Popen([*WORKER, "--processes", "2"], cwd=ROOT, env=env, start_new_session=True,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            wait_for(lambda: esp.count >= 20, what="delivery under way")
            os.killpg(parent.pid, signal.SIGTERM)
            output = parent.communicate(timeout=90)[0]
        finally:
            if parent.poll() is None:
                os.killpg(parent.pid, signal.SIGKILL)
        sent = esp.count
    assert parent.returncode == 0, output
    assert "terminating current task" not in output  # nobody was stopped twice
    assert output.count("shutting down gracefully") == 2
    states = json.loads(manage("shell", "-c", "import json; from transactional.models import Message; "
                               "print(json.dumps(sorted(set(Message.objects.values_list('status', flat=True)))))",
                               environ=env).strip().splitlines()[-1])
    assert "sending" not in states  # every run finished and recorded what it sent
    assert report(env)["sent"] == sent


@pytest.mark.slow
def test_processes_stop_when_their_parent_is_killed(sqlite_url):
    env = environment(sqlite_url, "http://127.0.0.1:9/v3")
    migrate(env)
    parent = subprocess.Popen([*WORKER, "--processes", "2"], cwd=ROOT, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    pids = wait_for(lambda: len(children(parent.pid)) == 2 and children(parent.pid), what="workers")

    parent.kill()
    parent.wait(10)

    wait_for(lambda: not any(alive(pid) for pid in pids), timeout=30, what="orphans to stop")


__all__ = ["postgres_url", "sqlite_url"]  # fixtures, shared with test_worker_processes


def test_processes_need_no_reload(settings):
    settings.TASKS = DB_TASKS
    with pytest.raises(CommandError, match="--processes 2 needs --no-reload"):
        call_command("delivery_worker", processes=2, reload=True, verbosity=0)


def test_processes_count_takes_a_number_or_auto():
    assert processes_count("3") == 3
    assert processes_count(" AUTO ") == len(os.sched_getaffinity(0))
    for bad, message in (("0", "at least 1"), ("-2", "at least 1"), ("two", "a number of processes or 'auto'")):
        with pytest.raises(argparse.ArgumentTypeError, match=message):
            processes_count(bad)


def test_an_idle_worker_looks_for_work_ten_times_a_second(settings):
    settings.TASKS = DB_TASKS
    from transactional.management.commands.delivery_worker import Command

    parser = Command().create_parser("manage.py", "delivery_worker")
    assert parser.parse_args([]).interval == 0.1
    assert parser.parse_args([]).processes == 1


def test_the_procfile_worker_runs_two_processes_unless_told():
    worker = next(line for line in (ROOT / "Procfile").read_text().splitlines() if line.startswith("worker:"))
    assert "manage.py delivery_worker --processes ${WORKER_PROCESSES:-2}" in worker
    assert "settings.prod" in worker
