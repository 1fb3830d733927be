"""Read the mail the file backend wrote to EMAIL_FILE_PATH: the terminal twin of /dev/outbox/."""

from argparse import ArgumentParser, ArgumentTypeError
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from transactional.dev import mailbox

#: Column widths of `mailbox list` after the id, which is never cut.
WIDTHS = {"TIME": 19, "FROM": 24, "TO": 26, "SUBJECT": 40}
BODY_FLAGS = {"raw": "the source as written", "html": "the HTML part", "text": "the text part"}


def positive_int(value: str) -> int:
    """Parse a positive integer (a count)."""
    if not value.isdigit() or int(value) == 0:
        raise ArgumentTypeError(f"expected a positive integer, got {value!r}")
    return int(value)


def cut(text: str, width: int) -> str:
    """Fit ``text`` on one line of ``width`` characters, ending what was cut with …."""
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


class Command(BaseCommand):
    help = "List, show or clear the mail written to EMAIL_FILE_PATH (EMAIL_PROVIDER=file)."

    def add_arguments(self, parser: ArgumentParser) -> None:
        subcommands = parser.add_subparsers(dest="subcommand", required=True, metavar="subcommand")

        listing = subcommands.add_parser("list", help="List messages, newest first.")
        listing.add_argument(
            "--search", default="", help="Only messages whose recipients or subject contain this."
        )
        listing.add_argument(
            "--limit",
            type=positive_int,
            default=20,
            help="Show at most this many (default: %(default)r).",
        )

        show = subcommands.add_parser("show", help="Show one message.")
        show.add_argument("mail_id", metavar="id", help="A message id from `mailbox list`.")
        body = show.add_mutually_exclusive_group()
        for flag, what in BODY_FLAGS.items():
            body.add_argument(
                f"--{flag}", dest="body", action="store_const", const=flag, help=f"Print {what}."
            )

        clear = subcommands.add_parser("clear", help="Delete every mail file.")
        clear.add_argument("--yes", action="store_true", help="Do not ask for confirmation.")

    def handle(self, *args: Any, subcommand: str, **options: Any) -> None:
        problem = mailbox.provider_problem()
        if problem:
            raise CommandError(problem)
        getattr(self, f"handle_{subcommand}")(**options)

    def handle_list(self, *, search: str, limit: int, **options: Any) -> None:
        mails = mailbox.mails(search=search)
        matching = f" matching {search!r}" if search else ""
        self.stdout.write(
            f"{len(mails)} message(s){matching} in {mailbox.directory()} (EMAIL_FILE_PATH)"
        )
        if not mails:
            return
        id_width = max(len(mail.id) for mail in mails[:limit])
        self.stdout.write(self.style.MIGRATE_HEADING(self.row("ID", id_width, *WIDTHS)))
        for mail in mails[:limit]:
            when = mail.date.strftime("%Y-%m-%d %H:%M:%S")
            cells = (when, mail.from_email, mail.to, mail.subject)
            self.stdout.write(self.row(mail.id, id_width, *cells))
        if len(mails) > limit:
            self.stdout.write(f"… and {len(mails) - limit} older (raise --limit to see them)")

    def handle_show(self, *, mail_id: str, body: str | None, **options: Any) -> None:
        mail = mailbox.get(mail_id)
        if mail is None:
            raise CommandError(
                f"No message {mail_id!r} in {mailbox.directory()}; see `manage.py mailbox list`."
            )
        if body == "raw":
            self.stdout.write(mail.raw.decode("utf-8", errors="replace"), ending="")
        elif body:
            self.write_body(mail, body)
        else:
            self.write_summary(mail)

    def handle_clear(self, *, yes: bool, **options: Any) -> None:
        directory = mailbox.directory()
        if yes or self.confirm(f"Delete every mail file in {directory}? [y/N] "):
            self.stdout.write(f"Deleted {mailbox.clear()} mail file(s) from {directory}.")
        else:
            self.stdout.write("Nothing deleted.")

    def write_summary(self, mail: mailbox.Mail) -> None:
        """Print the main headers, the attachments, then the text part."""
        fields = {
            "From": mail.from_email,
            "To": mail.to,
            "Cc": mail.cc,
            "Date": mail.date.isoformat(),
            "Subject": mail.subject,
            "Size": f"{mail.size} bytes",
        }
        for name, value in fields.items():
            if value:
                self.stdout.write(f"{self.style.MIGRATE_LABEL(name + ':')} {value}")
        for part in mail.attachments:
            inline = f", inline as cid:{part.content_id}" if part.content_id else ""
            self.stdout.write(
                f"Attachment: {part.filename} ({part.content_type}, {part.size} bytes{inline})"
            )
        self.stdout.write("")
        self.stdout.write(mail.text if mail.text is not None else "(no text part; try --html)")

    def write_body(self, mail: mailbox.Mail, body: str) -> None:
        """Print the text or HTML part, or fail if the message has none."""
        content, kind = (mail.html, "HTML") if body == "html" else (mail.text, "text")
        if content is None:
            raise CommandError(f"Message {mail.id} has no {kind} part.")
        self.stdout.write(content)

    def row(self, mail_id: str, id_width: int, *values: str) -> str:
        """Format one line of the list: the whole id, then fixed-width columns."""
        cells = [cut(value, width).ljust(width) for value, width in zip(values, WIDTHS.values())]
        return "  ".join([mail_id.ljust(id_width), *cells]).rstrip()

    def confirm(self, question: str) -> bool:
        """Ask on the terminal; anything but yes, or no terminal at all, means no."""
        try:
            return input(question).strip().lower() in ("y", "yes")
        except EOFError:
            return False
