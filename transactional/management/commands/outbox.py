"""Operate the outbox: status (and alerting), retry, cancel, sweep, purge."""

import json
import re
import sys
from argparse import SUPPRESS, ArgumentParser, ArgumentTypeError
from datetime import timedelta
from functools import partial
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from transactional import delivery, operations, retention

DURATION = re.compile(r"(\d+)([dhms])")
UNITS = {"d": "days", "h": "hours", "m": "minutes", "s": "seconds"}
#: How `outbox purge` reports each data class.
PURGED = {
    "messages": "messages deleted",
    "bodies": "bodies purged",
    "attempts": "attempts deleted",
    "events": "events deleted",
    "task_results": "task results deleted",
}


def duration(value: str) -> timedelta:
    """Parse ``30d``, ``12h``, ``90m`` or ``45s`` into a timedelta."""
    match = DURATION.fullmatch(value.strip())
    if match is None:
        raise ArgumentTypeError(f"expected a duration like 30d, 12h or 90m, got {value!r}")
    amount, unit = match.groups()
    return timedelta(**{UNITS[unit]: int(amount)})


def positive_int(value: str) -> int:
    """Parse a positive integer (a message id)."""
    if not value.isdigit() or int(value) == 0:
        raise ArgumentTypeError(f"expected a message id (a positive integer), got {value!r}")
    return int(value)


def add_ids_argument(container: Any, help: str, *, required: bool = False) -> None:
    """Add ``--id N [N ...]``, repeatable, collected into ``ids``."""
    container.add_argument(
        "--id",
        dest="ids",
        type=positive_int,
        action="extend",
        nargs="+",
        metavar="ID",
        required=required,
        help=help,
    )


class Command(BaseCommand):
    help = "Operate the outbox: show its status, retry, cancel, sweep, purge old data."

    def add_arguments(self, parser: ArgumentParser) -> None:
        subcommands = parser.add_subparsers(dest="subcommand", required=True, metavar="subcommand")
        # Accept -v after the subcommand too (`outbox status --check -v0` from cron);
        # SUPPRESS keeps the main parser's value when it is not given there.
        common = ArgumentParser(add_help=False)
        common.add_argument(
            "-v",
            "--verbosity",
            type=int,
            choices=[0, 1, 2, 3],
            default=SUPPRESS,
            help="Verbosity level; 0=minimal output, 1=normal output.",
        )
        add_parser = partial(subcommands.add_parser, parents=[common])

        status = add_parser("status", help="Show the queue; with --check, alert.")
        status.add_argument("--json", dest="as_json", action="store_true", help="Print JSON.")
        status.add_argument(
            "--check",
            action="store_true",
            help="Exit with status 1 and print each problem if a TRANSACTIONAL_ALERT_* "
            "threshold is crossed (for cron and monitoring).",
        )

        retry = add_parser("retry", help="Queue failed or retrying messages now.")
        selector = retry.add_mutually_exclusive_group(required=True)
        add_ids_argument(selector, "Message to retry; repeatable.")
        selector.add_argument(
            "--status", choices=operations.RETRYABLE, help="Retry every message in this status."
        )
        retry.add_argument(
            "--since",
            type=duration,
            metavar="DURATION",
            help="With --status: only messages that got there within this long, e.g. 2h.",
        )

        cancel = add_parser("cancel", help="Cancel messages still waiting to be sent.")
        add_ids_argument(cancel, "Message to cancel; repeatable.", required=True)

        add_parser("sweep", help="Return stuck messages to the queue; kick due ones.")

        purge = add_parser(
            "purge", help="Remove data past its retention period (TRANSACTIONAL_RETENTION)."
        )
        purge.add_argument(
            "--older-than",
            type=duration,
            metavar="DURATION",
            help="Empty the bodies of finished messages older than this, e.g. 7d, for this run "
            "(default: the bodies age of TRANSACTIONAL_RETENTION). The other classes keep theirs.",
        )
        purge.add_argument(
            "--dry-run",
            action="store_true",
            help="Count what would be removed, per data class; change nothing.",
        )

    def handle(self, *args: Any, subcommand: str, verbosity: int, **options: Any) -> None:
        self.verbosity = verbosity
        getattr(self, f"handle_{subcommand}")(**options)

    def handle_status(self, *, as_json: bool, check: bool, **options: Any) -> None:
        status = operations.queue_status()
        if as_json:
            self.stdout.write(json.dumps(status, indent=2))
        elif self.verbosity:
            self.write_status(status)
        if check and status["problems"]:
            for problem in status["problems"]:
                self.stderr.write(self.style.ERROR(problem))
            sys.exit(1)  # the exit status is the alert, as with `migrate --check`

    def handle_retry(
        self, *, ids: list[int] | None, status: str | None, since: timedelta | None, **options: Any
    ) -> None:
        if since is not None and status is None:
            raise CommandError("--since works only with --status.")
        changed_since = None if since is None else timezone.now() - since
        selected = operations.select_messages(ids=ids, status=status, changed_since=changed_since)
        retried = operations.retry(selected)
        self.say(f"Re-queued {retried.requeued} message(s).")
        if retried.purged:
            warning = f"Skipped {retried.purged} message(s) whose body was purged."
            self.stderr.write(self.style.WARNING(warning))

    def handle_cancel(self, *, ids: list[int], **options: Any) -> None:
        cancelled = operations.cancel(operations.select_messages(ids=ids))
        self.say(f"Cancelled {cancelled} message(s).")

    def handle_sweep(self, **options: Any) -> None:
        swept = delivery.sweep()
        self.say(f"Returned {swept['requeued']} stuck message(s) to the queue; {swept['due']} due.")

    def handle_purge(self, *, older_than: timedelta | None, dry_run: bool, **options: Any) -> None:
        try:
            purged = operations.purge(older_than=older_than, dry_run=dry_run)
        except ImproperlyConfigured as error:
            raise CommandError(str(error)) from error
        if dry_run:
            self.say("Dry run: nothing was changed; this is what would go.")
        for name, count in purged.counts.items():
            age = purged.ages[name]
            kept = "kept forever" if age is None else f"older than {retention.describe(age)}"
            self.say(f"{PURGED[name]:<22}{count:>8}  {kept}")

    def write_status(self, status: dict[str, Any]) -> None:
        """Print the figures as a two-column table."""
        oldest = status["oldest_due_seconds"]
        rows = [
            *status["counts"].items(),
            ("oldest due", "-" if oldest is None else f"{oldest:.0f}s"),
            ("failed (1h)", status["failed_last_hour"]),
            *((name, state["breaker"]) for name, state in status["providers"].items()),
        ]
        for name, value in rows:
            self.stdout.write(f"{name:<12}{value:>10}")

    def say(self, line: str) -> None:
        """Print ``line`` unless run with --verbosity 0."""
        if self.verbosity:
            self.stdout.write(line)
