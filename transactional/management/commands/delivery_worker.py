"""django-tasks-db's ``db_worker``, plus what a mail worker should say and do at start.

It logs the settings module and provider it runs with (a production worker
started without DJANGO_SETTINGS_MODULE would otherwise quietly use dev
settings and write mail to files), starts the periodic outbox sweep, and
kicks a delivery run for mail that arrived while no worker was up. Every
``db_worker`` option works here too.
"""

import logging
import os

from django.conf import settings
from django_tasks_db.management.commands.db_worker import Command as DBWorkerCommand

from transactional import tasks
from transactional.conf import delivery_backend, get_setting
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
        logger.info(
            "Delivery worker starting: DJANGO_SETTINGS_MODULE=%s EMAIL_PROVIDER=%s "
            "delivery backend=%s concurrency=%s batch=%s",
            os.environ.get("DJANGO_SETTINGS_MODULE", "(unset)"),
            getattr(settings, "EMAIL_PROVIDER", "(unset)"),
            delivery_backend(),
            get_setting("CONCURRENCY"),
            get_setting("BATCH_SIZE"),
        )
        OutboxState.objects.update_or_create(pk=1, defaults={"kick_pending": False})
        tasks.ensure_sweep_scheduled(restart=True)
        tasks.kick(force=True)
        return super().handle(*args, **options)
