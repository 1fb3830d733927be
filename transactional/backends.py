"""The outbox EmailBackend: ``send_mail()`` stores, a worker delivers."""

import logging

from django.core.mail.backends.base import BaseEmailBackend

from . import outbox
from .delivery import require_no_loop

logger = logging.getLogger(__name__)


class EmailBackend(BaseEmailBackend):
    """Store messages in the outbox; deliver them after the transaction commits.

    ``fail_silently`` governs only storing: delivery errors are recorded on
    the message, retried, and reported, never raised into the caller.
    ``stream`` (a MAILERS option, e.g. ``{"stream": "newsletter"}``) puts
    every message that names no stream of its own on that stream.
    """

    def __init__(self, fail_silently: bool = False, *, stream: str | None = None, **kwargs) -> None:
        # Our own attribute: Django 6.1 deprecates BaseEmailBackend's.
        super().__init__(**kwargs)
        self.fail_silently = fail_silently
        self.stream = stream
        require_no_loop()

    def send_messages(self, email_messages) -> int:
        """Store the messages and return how many were accepted."""
        if not email_messages:
            return 0
        if self.stream is not None:
            for email in email_messages:
                if getattr(email, outbox.STREAM, None) is None:
                    setattr(email, outbox.STREAM, self.stream)
        try:
            return outbox.enqueue(email_messages)
        except Exception:
            if not self.fail_silently:
                raise
            logger.exception("Could not store %d message(s) in the outbox", len(email_messages))
            return 0
