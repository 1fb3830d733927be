"""Erase an address and the personal data that came with it (a GDPR request)."""

from argparse import ArgumentParser, ArgumentTypeError
from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand
from django.core.validators import validate_email

from transactional.erasure import forget
from transactional.models import normalize_address

SUPPRESSION = {
    "added": "a new entry under the placeholder, matched by the address's hash",
    "replaced": "its entry now holds the placeholder, matched by the address's hash",
    "kept": "its entry already holds only the placeholder and hash",
}


def email_address(value: str) -> str:
    """Parse an email address."""
    try:
        validate_email(normalize_address(value))
    except ValidationError:
        raise ArgumentTypeError(f"expected an email address, got {value!r}") from None
    return value


class Command(BaseCommand):
    help = (
        "Erase an email address: replace it with 'forgotten:<hash prefix>' on recipients, events "
        "and messages it sent; empty the bodies of messages it received or appears in (and the "
        "subject when it was the only recipient); empty the ESP payloads, metadata, user agents "
        "and click URLs of its events; clear idempotency keys naming it and scrub it from the "
        "admin's history. Both spellings of an internationalized domain (Unicode, punycode) "
        "are found. The address stays suppressed, matched by its SHA-256, so it is never mailed "
        "again."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("address", type=email_address, help="The address to erase.")
        parser.add_argument(
            "--dry-run", action="store_true", help="Report what would change; change nothing."
        )

    def handle(self, *args: Any, address: str, dry_run: bool, **options: Any) -> None:
        erasure = forget(address, dry_run=dry_run)
        prefix = "Would replace" if dry_run else "Replaced"
        self.stdout.write(f"{prefix} the address with {erasure.placeholder}.")
        lines = [
            ("message body(ies) emptied", erasure.messages_purged),
            ("subject(s) blanked", erasure.subjects_blanked),
            ("sender address(es) replaced", erasure.senders_replaced),
            ("recipient row(s) replaced", erasure.recipients_replaced),
            (
                "event(s) erased (address, payload, metadata, user agent, click URL)",
                erasure.events_erased,
            ),
            (
                "other recipients' event payload(s) emptied (they list this address)",
                erasure.other_events_emptied,
            ),
            (
                "idempotency key(s) cleared (they named the address)",
                erasure.idempotency_keys_cleared,
            ),
            ("admin history entry(ies) scrubbed", erasure.admin_entries_scrubbed),
        ]
        for label, count in lines:
            self.stdout.write(f"  {count} {label}")
        self.stdout.write(f"  Suppression: {SUPPRESSION[erasure.suppression]}.")
        if dry_run:
            self.stdout.write("Dry run: nothing was changed.")
