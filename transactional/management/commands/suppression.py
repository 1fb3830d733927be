"""Export the suppression list as CSV, or import one (ours, an ESP's, or plain addresses)."""

import sys
from argparse import ArgumentParser, ArgumentTypeError
from contextlib import ExitStack
from typing import Any

from django.core.management.base import BaseCommand, CommandError

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
            "line. UTF-8, or UTF-16 after a byte-order mark. Bad rows are reported with "
            "their line number and skipped; addresses already listed keep their entry, so "
            "re-running an import is safe."
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

    def handle(self, *args: Any, subcommand: str, **options: Any) -> None:
        if subcommand == "export":
            self.export(options["output"], options["reasons"])
        else:
            self.load(options)

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


def _a(noun: str) -> str:
    """Put "a" or "an" before ``noun``: "an Amazon SES", "an empty"."""
    return f"{'an' if noun[:1].lower() in 'aeiou' else 'a'} {noun}"


def _open(path: str, mode: str, **kwargs: Any):
    """Open a CSV file, or fail with a CommandError naming it."""
    try:
        return open(path, mode, **kwargs)
    except OSError as error:
        raise CommandError(f"Cannot open {path}: {error.strerror}") from error
