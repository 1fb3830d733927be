"""Several delivery worker processes under one command: fork, watch, stop.

A delivery run uses one core at most: its sender threads share one
interpreter lock. ``delivery_worker --processes N`` forks N copies of the
worker loop once start-up is done, so one command (one Procfile line, one
systemd unit) uses N cores. The parent only supervises:

- SIGTERM, SIGINT and SIGQUIT to the parent stop the children: each gets
  CHILD_STOP (SIGUSR1), finishes the task it runs and exits; a second signal
  makes them stop at once, as with a single worker. Children ignore the
  stop signals themselves, so a process manager that signals the whole
  group (systemd, Heroku, Ctrl+C in a terminal) stops each one once;
- a child that dies (a crash, the OOM killer) is started again, unless
  children keep dying: more than MAX_RESTARTS within RESTART_WINDOW_SECONDS
  stops them all, with exit status 1, so the process manager sees it;
- a child whose parent dies gets CHILD_STOP (Linux), so a killed parent
  leaves no orphans delivering mail.
"""

import ctypes
import logging
import os
import signal
import sys
import time
from collections import deque
from collections.abc import Callable

from django.db import connections

logger = logging.getLogger("transactional.worker")

MAX_RESTARTS = 5
RESTART_WINDOW_SECONDS = 60.0
#: Pause before a child is started again, so a crash loop does not spin.
RESTART_DELAY_SECONDS = 1.0
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT)
#: What the parent sends a child to stop it (the child's only stop signal).
CHILD_STOP = signal.SIGUSR1
PR_SET_PDEATHSIG = 1


def supervise(count: int, run: Callable[[int], None]) -> int:
    """Run ``run(index)`` in ``count`` child processes until they end; return the exit status.

    0 when every child ended well (stopped by a signal, or done with
    ``--batch``/``--max-tasks``); otherwise the first failing child's status.
    """
    return _Supervisor(count, run).run()


class _Supervisor:
    def __init__(self, count: int, run: Callable[[int], None]) -> None:
        self.count = count
        self.target = run
        self.children: dict[int, int] = {}  # pid -> index
        self.stopping = False
        self.deaths: deque[float] = deque()
        self.status = 0

    def run(self) -> int:
        connections.close_all()  # a database connection must never cross a fork
        for stop_signal in STOP_SIGNALS:
            signal.signal(stop_signal, self._stop)
        for index in range(self.count):
            self._start(index)
        logger.info("Delivery worker: %d processes (pids %s)", self.count,
                    ", ".join(map(str, self.children)))
        while self.children:
            try:
                pid, wait_status = os.wait()
            except ChildProcessError:
                break
            index = self.children.pop(pid, None)
            if index is not None:
                self._ended(pid, index, os.waitstatus_to_exitcode(wait_status))
        return self.status

    def _ended(self, pid: int, index: int, code: int) -> None:
        if code == 0:
            return  # stopped, or done (--batch, --max-tasks)
        if self.stopping:
            self.status = self.status or (code if code > 0 else 1)
            return
        how = f"was killed by {signal.Signals(-code).name}" if code < 0 else f"exited with status {code}"
        now = time.monotonic()
        self.deaths.append(now)
        while self.deaths and self.deaths[0] < now - RESTART_WINDOW_SECONDS:
            self.deaths.popleft()
        if len(self.deaths) > MAX_RESTARTS:
            logger.critical("Delivery worker process %d (pid %d) %s; %d processes died within %.0f s, "
                            "stopping the others", index, pid, how, len(self.deaths), RESTART_WINDOW_SECONDS)
            self.status = 1
            self._stop(signal.SIGTERM, None)
            return
        logger.error("Delivery worker process %d (pid %d) %s; starting it again", index, pid, how)
        time.sleep(RESTART_DELAY_SECONDS)
        if not self.stopping:
            self._start(index)

    def _stop(self, signum: int, frame) -> None:
        self.stopping = True
        for pid in list(self.children):
            try:
                os.kill(pid, CHILD_STOP)
            except ProcessLookupError:
                pass

    def _start(self, index: int) -> None:
        parent = os.getpid()
        # Blocked across the fork: a signal must not reach the child while it
        # still has the parent's handler (it would signal its siblings).
        signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        try:
            pid = os.fork()
            if pid == 0:
                ignore_stop_signals()  # CHILD_STOP, still at its default, ends it until the loop runs
                signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
                os._exit(_child(index, parent, self.target))
            self.children[pid] = index
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)


def ignore_stop_signals() -> None:
    """In a child: leave SIGTERM, SIGINT and SIGQUIT to the parent."""
    for stop_signal in STOP_SIGNALS:
        signal.signal(stop_signal, signal.SIG_IGN)


def _child(index: int, parent: int, target: Callable[[int], None]) -> int:
    """Run the worker loop in a forked child; return its exit status."""
    _die_with(parent)
    code = 0
    try:
        target(index)
    except SystemExit as exit:
        code = exit.code if isinstance(exit.code, int) else (0 if exit.code is None else 1)
    except BaseException:
        logger.exception("Delivery worker process %d failed", index)
        code = 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
    return code


def _die_with(parent: int) -> None:
    """Ask Linux for CHILD_STOP when the parent dies; exit if it died already."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, CHILD_STOP)
    except (OSError, AttributeError):  # not Linux: the process manager stops children
        pass
    if os.getppid() != parent:
        os._exit(0)
