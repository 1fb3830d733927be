"""The lesson's Beatles check: someone typed a Beatle's name, tell the admins.

The lesson sends this mail with ``fail_silently=True``, which hides a broken
mail set-up forever. We send with ``fail_silently=False`` (the lesson's own
best practice) and catch the error here instead: the visitor still gets the
form error and never a 500, and the failure is logged with its traceback, so
it reaches the logs (and, in production, ADMINS through the error handler).
"""

import logging
import unicodedata

from django.conf import settings

from transactional.templated import send_templated

logger = logging.getLogger(__name__)

#: The lesson's Russian spellings and the English ones.
BEATLES = frozenset(
    {
        "джон леннон",
        "пол маккартни",
        "джордж харрисон",
        "ринго старр",
        "john lennon",
        "paul mccartney",
        "george harrison",
        "ringo starr",
    }
)

#: The templated mail (templates/emails/birthday/beatles_alert/); its subject
#: is the lesson's "Another Beatles member".
ALERT = "birthday/beatles_alert"


def _normalize(name: str) -> str:
    name = unicodedata.normalize("NFKC", name).casefold().replace("ё", "е")
    return " ".join(name.split())


def is_beatle(first_name: str, last_name: str) -> bool:
    """Return True if the full name is one of the four Beatles."""
    return _normalize(f"{first_name} {last_name}") in BEATLES


def sender_address() -> str:
    """``birthday_form@`` on the domain of DEFAULT_FROM_EMAIL."""
    domain = settings.DEFAULT_FROM_EMAIL.rpartition("@")[2].rstrip(">").strip()
    return f"birthday_form@{domain or 'localhost'}"


def alert_context(first_name: str, last_name: str) -> dict[str, str]:
    """Return the template context of the admins' alert."""
    first_name, last_name = first_name.strip(), last_name.strip()
    return {
        "first_name": first_name,
        "last_name": last_name,
        "full_name": f"{first_name} {last_name}".strip(),
    }


def notify_admins(first_name: str, last_name: str) -> bool:
    """Mail the admins that a Beatle tried to sign up; return True if it went out."""
    recipients = [address for _, address in settings.ADMINS]
    if not recipients:
        logger.warning("Beatles name entered but ADMINS is empty; no one to notify")
        return False
    context = alert_context(first_name, last_name)
    try:
        send_templated(
            ALERT,
            to=recipients,
            from_email=sender_address(),
            context=context,
            tags=["birthday", "beatles"],
        )
    except Exception:
        logger.exception(
            "Could not notify ADMINS that %r tried to add a birthday", context["full_name"]
        )
        return False
    return True
