"""Fake an ESP tracking event for a sent message, to see the whole flow without an ESP."""

from argparse import ArgumentParser, ArgumentTypeError
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from transactional.models import Message
from transactional.simulation import KINDS, SimulationError, esp_for, simulate


def message_id(value: str) -> int:
    """Parse a message id (a positive integer)."""
    if not value.isdigit() or int(value) == 0:
        raise ArgumentTypeError(f"expected a message id (a positive integer), got {value!r}")
    return int(value)


class Command(BaseCommand):
    help = (
        "Development only: build the tracking event the message's ESP would post (Mailgun, "
        "SendGrid or Amazon SES by Message.provider; Mailgun's shape for file, console and the "
        "other Django backends), parse it with anymail and send anymail's tracking signal, so it "
        "is recorded, linked and acted on (status, suppression) like a real webhook. "
        "Refuses to run unless DEBUG is on or --force is given."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument(
            "message", type=message_id, metavar="MESSAGE_ID", help="Id of a sent message."
        )
        parser.add_argument("kind", choices=KINDS, help="What happened.")
        parser.add_argument(
            "--address",
            help="Recipient the event is about (default: the message's first sent recipient).",
        )
        parser.add_argument(
            "--force",
            action="store_true",
            help="Run with DEBUG off: this writes fake events into the database.",
        )

    def handle(
        self, *args: Any, message: int, kind: str, address: str | None, force: bool, **options: Any
    ) -> None:
        if not settings.DEBUG and not force:
            raise CommandError(
                "simulate_event writes fake ESP events; "
                "it runs only with DEBUG on, or with --force."
            )
        row = Message.objects.filter(pk=message).first()
        if row is None:
            raise CommandError(f"There is no message {message}.")
        try:
            events = simulate(row, kind, address=address)
        except SimulationError as error:
            raise CommandError(str(error)) from error
        self.stdout.write(
            f"Sent {len(events)} {esp_for(row)} tracking event(s) for message {message} "
            "through anymail's signal:"
        )
        for event in events:
            self.stdout.write(f"  {event.event_type} for {event.recipient}")
        for recipient in row.recipients.order_by("pk"):
            self.stdout.write(f"Recipient {recipient.address}: {recipient.status}")
