"""Previews of the birthday app's mails, shown at /dev/mail-previews/ and used by tests."""

from transactional.previews import MailPreview, Preview

from .beatles import ALERT, alert_context

#: Sample names: the lesson's Beatle, in English and as the lesson spells him.
JOHN_LENNON = ("John", "Lennon")
DZHON_LENNON = ("Джон", "Леннон")


class BirthdayPreviews(MailPreview):
    """The alert the admins get when someone types a Beatle's name."""

    def beatles_alert(self) -> Preview:
        """Preview the alert for the lesson's example, John Lennon."""
        return _alert(*JOHN_LENNON)

    def beatles_alert_in_russian(self) -> Preview:
        """Preview the alert for a name typed in Cyrillic, as in the lesson."""
        return _alert(*DZHON_LENNON)


def _alert(first_name: str, last_name: str) -> Preview:
    return Preview(
        ALERT,
        context=alert_context(first_name, last_name),
        to=["admin@acme.test"],
        from_email="birthday_form@acme.test",
        tags=["birthday", "beatles"],
    )
