"""Export the suppression list as CSV, or import one (ours, an ESP's, or plain addresses)."""

import sys
from argparse import ArgumentParser, ArgumentTypeError
from contextlib import ExitStack
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from transactional.models import Suppression
from transactional.suppression_csv import HEADER, UnknownFormat, export_csv, import_csv

REASONS = Suppression.Reason.values


def positive_int(value: str) -> int:
    """Parse a positive integer."""
    if not value.isdigit() or int(value) == 0:
        raise ArgumentTypeError(f"expected a positive integer, got {value!r}")
    return int(value)


class Command(BaseCommand):
    help = "Export the suppression list as CSV, or import addresses into it."

    def add_arguments(self, parser: ArgumentParser) -> None:
        subcommands = parser.add_subparsers(dest="subcommand", required=True, metavar="subcommand")

        about = f"Write the list as CSV with the header {','.join(HEADER)}, oldest entry first."
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
            "line. Bad rows are reported with their line number and skipped; addresses "
            "already listed keep their entry, so re-running an import is safe."
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
            out = self.stdout if output == "-" else stack.enter_context(_open(output, "w"))
            count = export_csv(out, reasons=reasons)
        if output != "-":
            self.stderr.write(f"Wrote {count} suppression(s) to {output}.")

    def load(self, options: dict[str, Any]) -> None:
        dry_run = options["dry_run"]
        with ExitStack() as stack:
            lines = (
                sys.stdin
                if options["file"] == "-"
                else stack.enter_context(_open(options["file"], "r"))
            )
            try:
                report = import_csv(
                    lines,
                    reason=options["reason"],
                    source=options["source"],
                    dry_run=dry_run,
                    progress=lambda rows: self.stderr.write(f"... {rows} rows read"),
                    progress_every=options["progress_every"],
                )
            except (UnknownFormat, UnicodeDecodeError) as error:
                raise CommandError(f"{options['file']}: {error}") from error
        for error in report.errors:
            self.stderr.write(f"{options['file']}: {error}")
        verb = "Would add" if dry_run else "Added"
        self.stdout.write(
            f"{verb} {report.added} address(es) from a {report.format} file: {report.rows} row(s), "
            f"{report.already_listed} already listed, {len(report.errors)} refused."
        )


def _open(path: str, mode: str):
    """Open a CSV file, or fail with a CommandError naming it."""
    try:
        # utf-8-sig: spreadsheet exports often start with a byte-order mark.
        return open(path, mode, newline="", encoding="utf-8-sig" if mode == "r" else "utf-8")
    except OSError as error:
        raise CommandError(f"Cannot open {path}: {error.strerror}") from error
