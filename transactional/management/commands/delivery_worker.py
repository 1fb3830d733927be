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

from django_tasks_db.management.commands.db_worker import Command as DBWorkerCommand

from transactional import ratelimit, staging, tasks
from transactional.conf import get_setting, providers
from transactional.delivery import require_no_loop
from transactional.models import OutboxState

logger = logging.getLogger("transactional.worker")


class Command(DBWorkerCommand):
    help = "Run the outbox delivery worker (django-tasks-db's db_worker, plus the sweep)."

    def add_arguments(self, parser) -> None:
        super().add_arguments(parser)
        # db_worker sleeps up to a second at start against a thundering herd
        # of workers polling at once; ours are woken by one coalesced kick,
        # so mail waiting at start goes out at once.
        parser.set_defaults(startup_delay=False)

    def handle(self, *args, **options):
        if options["verbosity"] and not logger.hasHandlers():
            logger.addHandler(logging.StreamHandler(self.stdout))
            logger.setLevel(logging.INFO)
        require_no_loop()
        rules = staging.rules()  # invalid staging settings stop the worker here, loudly
        logger.info(
            "Delivery worker starting: DJANGO_SETTINGS_MODULE=%s providers=%s "
            "concurrency=%s batch=%s rate limits=%s%s",
            os.environ.get("DJANGO_SETTINGS_MODULE", "(unset)"),
            ",".join(providers()),
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
        return super().handle(*args, **options)
