"""django-tasks-db's ``db_worker``, plus what a mail worker should say and do at start.

It logs the settings module and provider it runs with (a production worker
started without DJANGO_SETTINGS_MODULE would otherwise quietly use dev
settings and write mail to files), starts the periodic outbox sweep, and
kicks a delivery run for mail that arrived while no worker was up. Every
``db_worker`` option works here too.
"""

import gc
import logging
import os
import signal
import sys
from argparse import ArgumentTypeError

from django.core.checks import Tags
from django.core.checks.registry import registry
from django.core.management.base import CommandError
from django_tasks_db.management.commands.db_worker import Command as DBWorkerCommand
from django_tasks_db.management.commands.db_worker import Worker

from transactional import ratelimit, staging, tasks
from transactional.conf import get_setting, providers
from transactional.delivery import require_no_loop
from transactional.models import OutboxState
from transactional.supervisor import CHILD_STOP, ignore_stop_signals, supervise

logger = logging.getLogger("transactional.worker")

IDLE_INTERVAL_SECONDS = 0.1


class Command(DBWorkerCommand):
    help = "Run the outbox delivery worker (django-tasks-db's db_worker, plus the sweep)."

    def add_arguments(self, parser) -> None:
        super().add_arguments(parser)
        # db_worker sleeps up to a second at start against a thundering herd
        # of workers polling at once; ours are woken by one coalesced kick,
        # so mail waiting at start goes out at once.
        parser.set_defaults(startup_delay=False)
        # An idle worker looks for a delivery run this often: the longest a
        # message sent to an idle worker waits for it (db_worker's 1 s is an
        # eternity for a password reset). One indexed query per look.
        parser.set_defaults(interval=IDLE_INTERVAL_SECONDS)
        parser.add_argument(
            "--processes", type=processes_count, default=1,
            help="Worker processes to fork, each running the worker loop (a number, or 'auto' "
            "for one per CPU; default 1). One process uses one core at most.",
        )

    def check(self, *args, tags=None, **kwargs) -> None:
        # A worker serves no URLs, and checking them imports every view,
        # boto3 with the SES webhook's: a tenth of a second or more of each
        # start-up. The web process and the release step check them.
        if tags is None:
            tags = sorted(registry.tags_available() - {Tags.urls})
        super().check(*args, tags=tags, **kwargs)

    def handle(self, *args, processes: int, **options):
        if processes > 1 and options["reload"]:
            raise CommandError(
                f"--processes {processes} needs --no-reload: the autoreloader restarts one process "
                "(--reload is the default when DEBUG is on)."
            )
        if options["verbosity"] and not logger.hasHandlers():
            logger.addHandler(logging.StreamHandler(self.stdout))
            logger.setLevel(logging.INFO)
        require_no_loop()
        rules = staging.rules()  # invalid staging settings stop the worker here, loudly
        logger.info(
            "Delivery worker starting: DJANGO_SETTINGS_MODULE=%s providers=%s "
            "processes=%s concurrency=%s batch=%s rate limits=%s%s",
            os.environ.get("DJANGO_SETTINGS_MODULE", "(unset)"),
            ",".join(providers()),
            processes,
            get_setting("CONCURRENCY"),
            get_setting("BATCH_SIZE"),
            ratelimit.configured_rates() or "none",
            f"; staging safety: {staging.describe(rules)}" if rules else "",
        )
        # Everything loaded so far lives as long as the process: out of the
        # collector's way, a full collection pauses the senders for less (a
        # pause makes a rate-limited call miss its slot).
        gc.collect()
        gc.freeze()
        OutboxState.objects.update_or_create(pk=1, defaults={"kick_pending": False})
        tasks.ensure_sweep_scheduled(restart=True)
        tasks.kick(force=True)
        if processes == 1:
            return super().handle(*args, **options)
        if options["exclude_queues"] and "*" not in options["queue_name"].split(","):
            raise CommandError("--exclude-queues can only be used with --queue-name=*")
        status = supervise(processes, lambda index: self._run_forked(index, options))
        if status:
            sys.exit(status)

    def _run_forked(self, index: int, options: dict) -> None:
        """One forked process's worker loop: db_worker's, stopped by its parent's signal."""
        self.configure_logging(options["verbosity"])
        worker = ForkedWorker(
            queue_names=options["queue_name"].split(","),
            excluded_queue_names=options["exclude_queues"].split(",") if options["exclude_queues"] else [],
            interval=options["interval"],
            batch=options["batch"],
            backend_name=options["backend_name"],
            startup_delay=options["startup_delay"],
            max_tasks=options["max_tasks"],
            worker_id=f"{options['worker_id'][:60]}-{index}",
        )
        worker.configure_signals()
        worker.run()


class ForkedWorker(Worker):
    """db_worker's loop in a process forked by ``--processes``.

    It takes its stop signal from the parent only. A process manager that
    signals every process at once (systemd, Heroku, a terminal's Ctrl+C)
    would otherwise stop it twice, once directly and once forwarded, and a
    second signal stops db_worker in the middle of a delivery run.
    """

    def configure_signals(self) -> None:
        ignore_stop_signals()
        signal.signal(CHILD_STOP, self.shutdown)

    def reset_signals(self) -> None:
        signal.signal(CHILD_STOP, signal.SIG_DFL)


def processes_count(value: str) -> int:
    """``--processes``: a positive number, or ``auto`` (the CPUs this process may use)."""
    if value.strip().lower() == "auto":
        return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    try:
        count = int(value)
    except ValueError:
        raise ArgumentTypeError(f"expected a number of processes or 'auto', got {value!r}") from None
    if count < 1:
        raise ArgumentTypeError(f"must be at least 1, got {count}")
    return count
