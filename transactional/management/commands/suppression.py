"""Export the suppression list as CSV, import one, or sync it with the ESPs' own lists."""

import re
import sys
from argparse import SUPPRESS, ArgumentParser, ArgumentTypeError
from contextlib import ExitStack
from typing import Any

from django.core.management.base import BaseCommand, CommandError, OutputWrapper

from transactional import suppression_sync
from transactional.models import Suppression
from transactional.suppression_csv import (
    HEADER,
    SOURCE_MAX_LENGTH,
    UnknownFormat,
    export_csv,
    import_csv,
)

REASONS = Suppression.Reason.values


def positive_int(value: str) -> int:
    """Parse a positive integer."""
    if not value.isdigit() or int(value) == 0:
        raise ArgumentTypeError(f"expected a positive integer, got {value!r}")
    return int(value)


def provider_name(value: str) -> str:
    """Accept a provider name as EMAIL_PROVIDERS spells them (ses, mailgun, ...)."""
    name = value.strip().lower()
    if not re.fullmatch(r"[a-z][a-z0-9_]{0,31}", name):
        raise ArgumentTypeError(
            f"expected a provider name like ses, mailgun or sendgrid, got {value!r}"
        )
    return name


def source_name(value: str) -> str:
    """Accept a source that fits ``Suppression.source``, before a row is read."""
    if len(value) > SOURCE_MAX_LENGTH:
        raise ArgumentTypeError(f"at most {SOURCE_MAX_LENGTH} characters, got {len(value)}")
    return value


class Command(BaseCommand):
    help = "Export the suppression list as CSV, or import addresses into it."

    def add_arguments(self, parser: ArgumentParser) -> None:
        subcommands = parser.add_subparsers(dest="subcommand", required=True, metavar="subcommand")

        about = (
            f"Write the list as CSV with the header {','.join(HEADER)}, oldest entry first; "
            "address_hash is filled for erased addresses only."
        )
        export = subcommands.add_parser("export", help=about, description=about)
        export.add_argument(
            "--output",
            "-o",
            default="-",
            metavar="FILE",
            help="File to write; - for standard output (default: %(default)s).",
        )
        export.add_argument(
            "--reason",
            dest="reasons",
            action="append",
            choices=REASONS,
            default=[],
            help="Export only entries with this reason; repeatable (default: all).",
        )

        about = (
            "Add the addresses of a CSV file: one exported by us, a SendGrid, Mailgun or "
            "Amazon SES suppression export (told apart by the header), or one address per "
            "line. UTF-8, or UTF-16 after a byte-order mark. Our stream column names the "
            "stream a row stops (TRANSACTIONAL_STREAMS); empty or absent: every stream. Bad "
            "rows are reported with their line number and skipped; addresses already listed "
            "keep their entry, so re-running an import is safe."
        )
        load = subcommands.add_parser("import", help=about, description=about)
        load.add_argument("file", metavar="FILE", help="CSV file to read; - for standard input.")
        load.add_argument(
            "--reason",
            default=Suppression.Reason.MANUAL,
            choices=REASONS,
            help="Reason for rows whose file has no reason column we understand "
            "(default: %(default)s).",
        )
        load.add_argument(
            "--source",
            default="import",
            type=source_name,
            help="Source for rows whose file has no source column (default: %(default)s).",
        )
        load.add_argument(
            "--dry-run", action="store_true", help="Report what would be added; add nothing."
        )
        load.add_argument(
            "--progress-every",
            type=positive_int,
            default=10_000,
            metavar="N",
            help="Report progress on standard error every N rows (default: %(default)s).",
        )

        about = (
            "Merge the ESPs' own suppression lists into ours: the Amazon SES account-level "
            "list; Mailgun's bounces, complaints and unsubscribes; SendGrid's bounces, blocks, "
            "spam reports and global unsubscribes. Each entry stops every stream, with source "
            "esp-sync. Page by page: a sync that stopped resumes where it was when run "
            "again, and a second run adds nothing. Progress goes to standard error, a "
            "summary to standard output. See docs/suppression-sync.md."
        )
        # -v after the subcommand too (`suppression sync -v0` from cron); SUPPRESS
        # keeps the main parser's value when it is not given there.
        verbosity = ArgumentParser(add_help=False)
        verbosity.add_argument(
            "-v",
            "--verbosity",
            type=int,
            choices=[0, 1, 2, 3],
            default=SUPPRESS,
            help="0: no progress and no summary (errors only); 1: normal output.",
        )
        sync = subcommands.add_parser("sync", help=about, description=about, parents=[verbosity])
        sync.add_argument(
            "--provider",
            dest="providers",
            action="append",
            type=provider_name,
            default=[],
            metavar="NAME",
            help="A provider of EMAIL_PROVIDERS to sync: ses, mailgun or sendgrid; repeatable "
            "(default: every configured one of those).",
        )
        sync.add_argument(
            "--push",
            action="store_true",
            help="Then add our bounces, complaints and unsubscribes (entries for every stream) "
            "to the ESP's lists that take them: Amazon SES takes bounces and complaints, "
            "SendGrid's API unsubscribes only. Erased addresses are never pushed.",
        )
        sync.add_argument(
            "--dry-run",
            action="store_true",
            help="Read the ESPs' lists and report what would be added; write nothing, not "
            "even where the sync got to. With --push, only count what would be pushed.",
        )
        sync.add_argument(
            "--restart",
            action="store_true",
            help="Start every list from its first page, not where an interrupted sync stopped.",
        )
        sync.add_argument(
            "--progress-every",
            type=positive_int,
            default=10,
            metavar="N",
            help="When standard error is not a terminal, report progress every N pages "
            "(default: %(default)s); on a terminal, one line per list is updated in place.",
        )

    def handle(self, *args: Any, subcommand: str, **options: Any) -> None:
        if subcommand == "export":
            self.export(options["output"], options["reasons"])
        elif subcommand == "import":
            self.load(options)
        else:
            self.sync(options)

    def export(self, output: str, reasons: list[str]) -> None:
        with ExitStack() as stack:
            out = (
                self.stdout
                if output == "-"
                else stack.enter_context(_open(output, "w", newline="", encoding="utf-8"))
            )
            count = export_csv(out, reasons=reasons)
        if output != "-":
            self.stderr.write(f"Wrote {count} suppression(s) to {output}.")

    def load(self, options: dict[str, Any]) -> None:
        dry_run = options["dry_run"]
        with ExitStack() as stack:
            # Bytes: import_csv decodes row by row, so a row in another encoding is one bad row.
            file = (
                sys.stdin.buffer
                if options["file"] == "-"
                else stack.enter_context(_open(options["file"], "rb"))
            )
            try:
                report = import_csv(
                    file,
                    reason=options["reason"],
                    source=options["source"],
                    dry_run=dry_run,
                    progress=lambda rows: self.stderr.write(f"... {rows} rows read"),
                    progress_every=options["progress_every"],
                )
            except UnknownFormat as error:
                raise CommandError(f"{options['file']}: {error}") from error
        for error in report.errors:
            self.stderr.write(f"{options['file']}: {error}")
        verb = "Would add" if dry_run else "Added"
        self.stdout.write(
            f"{verb} {report.added} address(es) from {_a(report.format)} file: "
            f"{report.rows} row(s), {report.already_listed} already listed, "
            f"{len(report.errors)} refused."
        )

    def sync(self, options: dict[str, Any]) -> None:
        loud = options["verbosity"] > 0
        progress = ProgressLine(self.stderr, every=options["progress_every"]) if loud else None
        try:
            report = suppression_sync.sync(
                options["providers"],
                push=options["push"],
                dry_run=options["dry_run"],
                restart=options["restart"],
                progress=progress,
            )
        except suppression_sync.SyncError as error:
            if progress:
                progress.end_line()
            if loud and error.report:
                self.print_report(error.report)
            raise CommandError(str(error)) from error
        if loud:
            self.print_report(report)

    def print_report(self, report: suppression_sync.SyncReport) -> None:
        for line in [item.summary() for item in [*report.lists, *report.pushes]] + report.notes:
            self.stdout.write(line)
        if report.dry_run:
            self.stdout.write("Dry run: nothing was written.")


class ProgressLine:
    """Progress on standard error: one line per list, rewritten in place on a terminal."""

    def __init__(self, stream: OutputWrapper, *, every: int) -> None:
        self.stream = stream
        self.every = every
        self.terminal = stream.isatty()
        self.width = 0  # of the line being rewritten; 0: none

    def __call__(
        self, report: suppression_sync.ListReport | suppression_sync.PushReport, done: bool
    ) -> None:
        text = report.progress()
        if self.terminal:
            # Padded: a shorter line must cover the one it replaces.
            self._write("\r" + text.ljust(self.width), ending="\n" if done else "")
            self.width = 0 if done else len(text)
        elif done or report.steps % self.every == 0:
            self._write(text)

    def end_line(self) -> None:
        """End a line left open, before an error is printed."""
        if self.width:
            self._write("")
            self.width = 0

    def _write(self, text: str, ending: str = "\n") -> None:
        # Plain: standard error is styled as an error on a terminal.
        self.stream.write(text, style_func=lambda line: line, ending=ending)
        self.stream.flush()


def _a(noun: str) -> str:
    """Put "a" or "an" before ``noun``: "an Amazon SES", "an empty"."""
    return f"{'an' if noun[:1].lower() in 'aeiou' else 'a'} {noun}"


def _open(path: str, mode: str, **kwargs: Any):
    """Open a CSV file, or fail with a CommandError naming it."""
    try:
        return open(path, mode, **kwargs)
    except OSError as error:
        raise CommandError(f"Cannot open {path}: {error.strerror}") from error
