"""pytest fixtures for projects that send mail through the outbox.

Enable in your conftest.py::

    pytest_plugins = ["transactional.testing.pytest_plugin"]

Then ``transactional_outbox`` routes ``send_mail()`` through the real outbox
(suppression, idempotency, size limit) and delivers into Django's in-memory
outbox when you call ``.deliver()`` or any ``assert_*`` helper.
"""

from __future__ import annotations

import pytest
from django.core import mail

from transactional import delivery
from transactional.models import Message, Recipient, normalize_address
from transactional.suppression import suppress

LOCMEM = "django.core.mail.backends.locmem.EmailBackend"


class OutboxHelper:
    """Run the delivery worker's code in-process and make readable assertions."""

    def deliver(self) -> list[mail.EmailMessage]:
        """Deliver every due message now; return Django's in-memory outbox."""
        delivery.deliver_due()
        return mail.outbox

    @property
    def messages(self):
        return Message.objects.order_by("pk")

    def suppress(self, address: str, reason: str = "manual", *, stream: str = "") -> None:
        """Put ``address`` on the suppression list (of every stream, or of ``stream``)."""
        suppress(address, reason=reason, source="test", stream=stream)

    def sent_to(self, address: str) -> list[mail.EmailMessage]:
        """Return the delivered mails with ``address`` among their recipients."""
        self.deliver()
        address = normalize_address(address)
        return [m for m in mail.outbox if address in {normalize_address(a) for a in _addresses(m)}]

    def assert_sent(self, *, to: str | None = None, subject: str | None = None, count: int = 1):
        """Assert ``count`` delivered mails match; return them."""
        self.deliver()
        found = [
            m
            for m in mail.outbox
            if (to is None or to.lower() in {a.lower() for a in _addresses(m)})
            and (subject is None or m.subject == subject)
        ]
        assert len(found) == count, (
            f"Expected {count} mail(s) to={to!r} subject={subject!r}, found {len(found)}; "
            f"delivered: {[(m.subject, m.recipients()) for m in mail.outbox]}"
        )
        return found

    def assert_nothing_sent(self) -> None:
        self.deliver()
        assert mail.outbox == [], f"Expected no mail, delivered: {[m.subject for m in mail.outbox]}"

    def assert_suppressed(self, address: str) -> None:
        """Assert the last message to ``address`` skipped it as suppressed.

        Mail delivered to it before (say, the one that bounced) does not count.
        """
        self.deliver()
        recipient = (
            Recipient.objects.filter(address=normalize_address(address))
            .select_related("message")
            .order_by("-pk")
            .first()
        )
        assert recipient is not None, f"No message was addressed to {address!r}"
        assert recipient.status == Recipient.Status.SUPPRESSED, (
            f"{address!r} has status {recipient.status!r}, not 'suppressed'"
        )
        that_mail = [
            m
            for m in self.sent_to(address)
            if m.message()["Message-ID"] == recipient.message.message_id
        ]
        assert not that_mail, f"{address!r} was suppressed but still received that mail"


def _addresses(message: mail.EmailMessage) -> list[str]:
    from email.utils import getaddresses

    return [address for _, address in getaddresses(message.recipients())]


@pytest.fixture
def transactional_outbox(settings, mailoutbox, db) -> OutboxHelper:
    """Send through the outbox; deliver into ``mail.outbox`` on demand."""
    settings.EMAIL_BACKEND = "transactional.backends.EmailBackend"
    settings.TRANSACTIONAL_DELIVERY_BACKEND = LOCMEM
    from transactional.tasks import ImmediateBackend  # django.tasks or the django_tasks backport

    immediate = f"{ImmediateBackend.__module__}.{ImmediateBackend.__qualname__}"
    settings.TASKS = {"default": {"BACKEND": immediate}}
    return OutboxHelper()
