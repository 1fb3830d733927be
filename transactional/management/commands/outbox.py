"""Operate the outbox: status (and alerting), retry, cancel, sweep, purge."""

import json
import re
import sys
from argparse import ArgumentParser, ArgumentTypeError
from datetime import timedelta
from typing import Any

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from transactional import delivery, operations
from transactional.models import Message

DURATION = re.compile(r"(\d+)([dhms])")
UNITS = {"d": "days", "h": "hours", "m": "minutes", "s": "seconds"}


def duration(value: str) -> timedelta:
    """Parse ``30d``, ``12h``, ``90m`` or ``45s`` into a timedelta."""
    match = DURATION.fullmatch(value.strip())
    if match is None:
        raise ArgumentTypeError(f"expected a duration like 30d, 12h or 90m, got {value!r}")
    amount, unit = match.groups()
    return timedelta(**{UNITS[unit]: int(amount)})


def message_id(value: str) -> int:
    """Parse a message id: a positive integer."""
    if not value.isdigit() or int(value) == 0:
        raise ArgumentTypeError(f"expected a message id (a positive integer), got {value!r}")
    return int(value)


class Command(BaseCommand):
    help = "Operate the outbox: show its status, retry, cancel, sweep, purge old data."

    def add_arguments(self, parser: ArgumentParser) -> None:
        subcommands = parser.add_subparsers(dest="subcommand", required=True, metavar="subcommand")

        status = subcommands.add_parser("status", help="Show the queue; --check alerts on thresholds.")
        status.add_argument("--json", action="store_true", help="Print the figures as JSON.")
        status.add_argument(
            "--check",
            action="store_true",
            help="Exit with status 1 and print each problem when an alert threshold "
            "(TRANSACTIONAL_ALERT_*) is crossed: for cron and monitoring.",
        )

        retry = subcommands.add_parser("retry", help="Queue failed or retrying messages again, now.")
        selector = retry.add_mutually_exclusive_group(required=True)
        self._add_ids(selector, "Message to retry (repeatable).")
        selector.add_argument(
            "--status",
            choices=operations.RETRYABLE,
            help="Retry every message in this status.",
        )
        retry.add_argument(
            "--since",
            type=duration,
            help="With --status: only messages that reached it within this long, e.g. 2h.",
        )

        cancel = subcommands.add_parser("cancel", help="Cancel messages that are still waiting.")
        self._add_ids(cancel, "Message to cancel (repeatable).", required=True)

        subcommands.add_parser("sweep", help="Return stuck messages to the queue and kick due ones.")

        purge = subcommands.add_parser("purge", help="Apply the retention periods (TRANSACTIONAL_*_RETENTION_DAYS).")
        purge.add_argument(
            "--older-than",
            type=duration,
            default=None,
            help="Purge the bodies of finished messages older than this, e.g. 30d "
            "(default: %(default)r, i.e. TRANSACTIONAL_BODY_RETENTION_DAYS).",
        )
        purge.add_argument(
            "--dry-run", action="store_true", help="Count what would be removed; change nothing."
        )

    @staticmethod
    def _add_ids(parser: Any, help: str, *, required: bool = False) -> None:
        parser.add_argument(
            "--id",
            dest="ids",
            type=message_id,
            action="extend",
            nargs="+",
            metavar="ID",
            required=required,
            help=help,
        )

    def handle(self, *args: Any, subcommand: str, verbosity: int, **options: Any) -> None:
        self.verbosity = verbosity
        getattr(self, f"handle_{subcommand}")(**options)

    def handle_status(self, *, json: bool, check: bool, **options: Any) -> None:
        status = operations.queue_status()
        if json:
            self.stdout.write(_json(status))
        elif self.verbosity:
            self._print_status(status)
        if check and status["problems"]:
            for problem in status["problems"]:
                self.stderr.write(self.style.ERROR(problem))
            # Like `migrate --check`: a non-zero exit status is the alert.
            sys.exit(1)

    def handle_retry(self, *, ids: list[int] | None, status: str | None, since: timedelta | None,
                     **options: Any) -> None:
        if since is not None and status is None:
            raise CommandError("--since works with --status only.")
        changed_since = timezone.now() - since if since is not None else None
        retried = operations.retry(
            operations.select_messages(ids=ids, status=status, changed_since=changed_since)
        )
        self._say(f"Re-queued {retried.requeued} message(s).")
        if retried.purged:
            self.stderr.write(
                self.style.WARNING(f"Skipped {retried.purged} message(s) whose body was purged.")
            )

    def handle_cancel(self, *, ids: list[int], **options: Any) -> None:
        cancelled = operations.cancel(operations.select_messages(ids=ids))
        self._say(f"Cancelled {cancelled} message(s).")

    def handle_sweep(self, **options: Any) -> None:
        swept = delivery.sweep()
        self._say(f"Returned {swept['requeued']} stuck message(s) to the queue; {swept['due']} due.")

    def handle_purge(self, *, older_than: timedelta | None, dry_run: bool, **options: Any) -> None:
        counts = operations.purge(older_than=older_than, dry_run=dry_run)
        prefix = "Would remove" if dry_run else "Removed"
        self._say(
            f"{prefix}: {counts['messages_deleted']} message(s), "
            f"{counts['bodies_purged']} message body(ies), "
            f"{counts['task_results_deleted']} task result(s)."
        )

    def _print_status(self, status: dict[str, Any]) -> None:
        for name, count in status["counts"].items():
            self.stdout.write(f"{name:<12}{count:>10}")
        oldest = status["oldest_due_seconds"]
        self.stdout.write(f"{'oldest due':<12}{'-' if oldest is None else f'{oldest:.0f}s':>10}")
        self.stdout.write(f"{'failed 1h':<12}{status['failed_last_hour']:>10}")

    def _say(self, line: str) -> None:
        if self.verbosity:
            self.stdout.write(line)


def _json(status: dict[str, Any]) -> str:
    return json.dumps(status, indent=2)
