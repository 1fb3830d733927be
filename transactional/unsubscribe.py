"""One-click unsubscribe (RFC 8058): the links a stream's mail carries, and their tokens.

Mail on any stream but "transactional" carries ``List-Unsubscribe`` (an
https link, and a mailto if TRANSACTIONAL_UNSUBSCRIBE_MAILTO is set) and
``List-Unsubscribe-Post: List-Unsubscribe=One-Click``. The link holds a token
signed with SECRET_KEY naming the address and the stream: it never expires,
and a changed character makes it worthless. Posting to it suppresses the
address on that stream only (views in ``unsubscribe_views.py``).
"""

import copy
from urllib.parse import quote

from django.conf import settings
from django.core import signing
from django.core.exceptions import ImproperlyConfigured, SuspiciousOperation
from django.core.mail import EmailMessage
from django.urls import reverse

from .conf import get_setting, streams
from .models import DEFAULT_STREAM, normalize_address

SALT = "transactional.unsubscribe"
#: RFC 8058 section 3.1: the body a one-click POST carries.
ONE_CLICK = "List-Unsubscribe=One-Click"


class BadToken(SuspiciousOperation):
    """An unsubscribe token that was not made by us (forged, altered, cut short)."""


def make_token(address: str, stream: str) -> str:
    """Return the token naming ``address`` on ``stream``."""
    return signing.Signer(salt=SALT).sign_object([normalize_address(address), stream], compress=True)


def read_token(token: str) -> tuple[str, str]:
    """Return the (address, stream) a token names; raise BadToken if we did not make it."""
    try:
        address, stream = signing.Signer(salt=SALT).unsign_object(token)
    except (signing.BadSignature, ValueError, TypeError, UnicodeError) as error:
        raise BadToken("This unsubscribe link is not valid (altered or cut short).") from error
    if not isinstance(address, str) or not isinstance(stream, str) or stream == DEFAULT_STREAM:
        raise BadToken("This unsubscribe link is not valid.")
    if stream not in streams():
        raise BadToken(f"The stream {stream!r} of this unsubscribe link is no longer sent.")
    return address, stream


def site_url() -> str:
    """Return TRANSACTIONAL_SITE_URL, the base of the links in mail."""
    url = get_setting("SITE_URL")
    if not url:
        raise ImproperlyConfigured(
            "TRANSACTIONAL_SITE_URL is not set: mail on a stream other than 'transactional' "
            "needs it for its unsubscribe link (e.g. https://mail.acme-corp.com)."
        )
    return url.rstrip("/")


def link(address: str, stream: str) -> str:
    """Return the https link that unsubscribes ``address`` from ``stream``."""
    return site_url() + reverse("transactional-unsubscribe", args=[make_token(address, stream)])


def headers(address: str, stream: str) -> dict[str, str]:
    """Return the List-Unsubscribe headers for mail to ``address`` on ``stream``."""
    targets = [f"<{link(address, stream)}>"]
    if mailbox := get_setting("UNSUBSCRIBE_MAILTO"):
        subject = quote(f"unsubscribe {make_token(address, stream)}")
        targets.append(f"<mailto:{mailbox}?subject={subject}>")
    return {"List-Unsubscribe": ", ".join(targets), "List-Unsubscribe-Post": ONE_CLICK}


def with_headers(email: EmailMessage, address: str, stream: str) -> EmailMessage:
    """Return a copy of ``email`` carrying the unsubscribe headers (the caller's own win)."""
    given = {name.lower() for name in email.extra_headers}
    added = {name: value for name, value in headers(address, stream).items() if name.lower() not in given}
    if not added:
        return email
    email = copy.copy(email)
    email.extra_headers = {**email.extra_headers, **added}
    return email


def settings_problem() -> str | None:
    """Say what keeps the unsubscribe links from working, or None."""
    if len(streams()) == 1:
        return None
    url = get_setting("SITE_URL")
    if not url:
        return "TRANSACTIONAL_SITE_URL is not set, and mail on streams other than 'transactional' needs it."
    if not settings.DEBUG and not url.startswith("https://"):
        return f"TRANSACTIONAL_SITE_URL={url!r} is not https: RFC 8058 one-click links must be https."
    return None
